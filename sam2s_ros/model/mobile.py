"""The ``sam2s_mobile`` model family: MobileSAM's image encoder inside SAM 2's tracking design.

A ``sam2.modeling.sam2_base.SAM2Base`` (the official class, so every stage in
:mod:`sam2s_ros.model.stages`, the ONNX export and all backends run it unchanged) built from:

- image encoder: MobileSAM's TinyViT-5M (:mod:`sam2s_ros.model.tinyvit`) giving the stride-16
  embedding [256, S/16, S/16] plus its stride-4 (64 ch) and stride-8 (128 ch) activations as
  SAM 2's high-resolution decoder skips;
- prompt encoder and mask decoder: SAM's, as MobileSAM trained them (no object-score token,
  IoU head without sigmoid, no SAM 2.1 stability fallback), with SAM 2's high-resolution
  skips (``conv_s0`` 64->32, ``conv_s1`` 128->64) zero-initialised so the decoder computes
  exactly MobileSAM's; multimask tokens give the object pointers;
- memory encoder and memory attention: the affinity readout of :mod:`sam2s_ros.model.readout`
  (release 2; release 1 trained SAM 2.1's memory attention and memory encoder, which learned
  the DAVIS object prior, see models/sam2s_mobile.md): 64-channel memories (63 key channels,
  1 value channel), a top-k cosine readout that prompts the decoder on tracked frames;
- object pointers and temporal encodings: SAM 2.1's (computed and stored, not read by the
  readout); ``no_mem_embed`` zero, so conditioning frames see MobileSAM's features.

SAM 2.1's tracking switches (``sam2.1_hiera_t.yaml`` + the video predictor overrides in
:mod:`sam2s_ros.model.build`) are kept where they apply, so the tracker treats both families
alike; the readout's prompt is the one difference (``AttendedMemory.prompt``).

Checkpoint key layout: SAM2Base names; the encoder lives under ``image_encoder.trunk.*``
(MobileSAM's ``image_encoder.*``). :func:`mobilesam_to_sam2s_mobile` maps a MobileSAM file
onto this layout (the starting point of ``sam2s train``).
"""

from __future__ import annotations

import torch
from torch import nn

from sam2s_ros.errors import CheckpointError
from sam2s_ros.tracking.config import MOBILE_MODEL  # noqa: F401  (the family name, re-exported)

#: channels of TinyViT's stride-4 and stride-8 activations (MobileSAM: embed dims 64, 128)
TRUNK_S4_CHANNELS, TRUNK_S8_CHANNELS = 64, 128


class _NeckInfo(nn.Module):
    """SAM2Base reads ``image_encoder.neck.d_model``; TinyViT's own neck sits inside the trunk."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model


class MobileImageEncoder(nn.Module):
    """TinyViT with SAM 2's image-encoder output contract.

    forward(x [B, 3, S, S] float32, ImageNet-normalised RGB) -> dict with
        ``vision_features`` [B, 256, S/16, S/16],
        ``backbone_fpn`` [s4 [B, 64, S/4, S/4], s8 [B, 128, S/8, S/8], s16 [B, 256, S/16, S/16]],
        ``vision_pos_enc`` three sine encodings [B, 256, ...] (SAM 2 uses the last one).
    """

    def __init__(self, image_size: int):
        super().__init__()
        from sam2.modeling.position_encoding import PositionEmbeddingSine

        from sam2s_ros.model.tinyvit import TinyViT

        self.trunk = TinyViT(img_size=image_size)
        self.neck = _NeckInfo(256)
        self.position_encoding = PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000)

    def forward(self, x: torch.Tensor) -> dict:
        s4, s8, s16 = self.trunk(x)
        fpn = [s4, s8, s16]
        pos = [self.position_encoding(f).to(f.dtype) for f in fpn]
        return {"vision_features": s16, "vision_pos_enc": pos, "backbone_fpn": fpn}


def build_mobile_base(image_size: int) -> nn.Module:
    """Instantiate an untrained ``sam2s_mobile`` SAM2Base in eval mode (module docstring).

    Args:
        image_size: square model input side in pixels (multiple of 32).

    Returns:
        ``SAM2Base``; decoder high-res skips and ``no_mem_embed`` zero, the readout's key
        projection the first 63 embedding channels (:class:`ReadoutMemoryEncoder`), everything
        else at its PyTorch default initialisation.
    """
    from sam2.modeling.sam2_base import SAM2Base

    from sam2s_ros.model.readout import MemoryReadout, ReadoutMemoryEncoder

    sam = SAM2Base(
        image_encoder=MobileImageEncoder(image_size),
        memory_attention=MemoryReadout(),
        memory_encoder=ReadoutMemoryEncoder(),
        num_maskmem=7,
        image_size=image_size,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        binarize_mask_from_pts_for_mem_enc=True,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        # MobileSAM's IoU head was trained without a sigmoid; no object-score token (presence
        # comes from the readout), no SAM 2.1 stability fallback: SAM's decoder as trained
        iou_prediction_use_sigmoid=False,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
    )
    dec = sam.sam_mask_decoder
    dec.conv_s0 = nn.Conv2d(TRUNK_S4_CHANNELS, dec.transformer_dim // 8, kernel_size=1)
    dec.conv_s1 = nn.Conv2d(TRUNK_S8_CHANNELS, dec.transformer_dim // 4, kernel_size=1)
    for conv in (dec.conv_s0, dec.conv_s1):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    nn.init.zeros_(sam.no_mem_embed)  # the decoder sees MobileSAM's features as they are
    return sam.eval()


#: MobileSAM key prefix -> sam2s_mobile key prefix
MOBILESAM_PREFIXES = {
    "image_encoder.": "image_encoder.trunk.",
    "prompt_encoder.": "sam_prompt_encoder.",
    "mask_decoder.": "sam_mask_decoder.",
}


def mobilesam_to_sam2s_mobile(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a MobileSAM state dict (``mobile_sam.pt``) to the sam2s_mobile layout.

    Prefixes per MOBILESAM_PREFIXES; inside the two-way transformer SAM's ``mlp.lin1/lin2``
    become sam2's ``mlp.layers.0/1``. Returns only the renamed tensors (encoder, prompt
    encoder, mask decoder); the SAM 2 parts
    (memory, pointers, object score) are not in MobileSAM and keep their initialisation.

    Raises:
        CheckpointError: a key outside the three MobileSAM prefixes.
    """
    out = {}
    for key, value in state.items():
        prefix = next((p for p in MOBILESAM_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"not a MobileSAM state dict: unexpected key {key!r}")
        name = MOBILESAM_PREFIXES[prefix] + key[len(prefix) :]
        # SAM's MLPBlock (lin1, lin2) became sam2's MLP (layers.0, layers.1); same tensors
        name = name.replace(".mlp.lin1.", ".mlp.layers.0.").replace(".mlp.lin2.", ".mlp.layers.1.")
        out[name] = value
    return out


def init_from_mobilesam(sam: nn.Module, path: str) -> list[str]:
    """Load MobileSAM's encoder, prompt encoder and mask decoder into a sam2s_mobile model.

    Args:
        sam: from :func:`build_mobile_base`.
        path: ``mobile_sam.pt`` (plain state dict, read with ``weights_only=True``).

    Returns:
        names of the model's tensors that MobileSAM does not provide (left at their init).

    Raises:
        CheckpointError: unreadable file, or a MobileSAM tensor whose shape does not fit.
    """
    from sam2s_ros.model.checkpoint import read_state_dict

    mapped = mobilesam_to_sam2s_mobile(read_state_dict(path))
    own = sam.state_dict()
    unknown = sorted(set(mapped) - set(own))
    bad = [k for k in mapped if k in own and own[k].shape != mapped[k].shape]
    if unknown or bad:
        raise CheckpointError(f"{path!r} does not fit sam2s_mobile: unexpected {unknown[:5]}, shape mismatch {bad[:5]}")
    sam.load_state_dict(mapped, strict=False)
    return sorted(set(own) - set(mapped))


def build_mobilesam_heads(state: dict[str, torch.Tensor], image_size: int = 1024) -> tuple[nn.Module, nn.Module]:
    """SAM-1 prompt encoder + mask decoder (``sam2`` classes) strictly loaded from MobileSAM's tensors.

    The plain SAM design (no object-score token, no high-res skips, IoU head without sigmoid),
    i.e. what MobileSAM was trained as; used by the training-free baseline
    (:mod:`sam2s_ros.evaluation.readout_baseline`) and the encoder accuracy test.

    Args:
        state: MobileSAM state dict (``prompt_encoder.*`` and ``mask_decoder.*`` are used).
        image_size: square input side in pixels the prompts are given in (multiple of 16);
            the embedding grid is ``image_size // 16``.

    Returns:
        ``(prompt_encoder, mask_decoder)`` in eval mode on the CPU.

    Raises:
        RuntimeError: (from ``load_state_dict``) missing or unexpected tensors.
    """
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    grid = image_size // 16
    pe = PromptEncoder(
        embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=16
    )
    md = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=False,
        iou_prediction_use_sigmoid=False,
        pred_obj_scores=False,
        pred_obj_scores_mlp=False,
        use_multimask_token_for_obj_ptr=False,
    )
    mapped = mobilesam_to_sam2s_mobile({k: v for k, v in state.items() if not k.startswith("image_encoder.")})
    pe.load_state_dict(
        {k[len("sam_prompt_encoder.") :]: v for k, v in mapped.items() if k.startswith("sam_prompt_encoder.")}
    )
    md.load_state_dict(
        {k[len("sam_mask_decoder.") :]: v for k, v in mapped.items() if k.startswith("sam_mask_decoder.")}
    )
    return pe.eval(), md.eval()

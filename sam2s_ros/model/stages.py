"""The four per-frame stages of SAM 2.1 as export-friendly torch modules.

Each stage takes and returns plain tensors (no dicts, no complex numbers, no Python
state), so the same modules run in the torch backend and export to ONNX for onnxruntime
and TensorRT. They reuse the official ``SAM2Base`` sub-modules and weights.

Notation: S = image_size, h = w = S / 16 (stride-16 feature grid), B = instruments in
the batch, F = memory frames, P = object pointers. Point coordinates are in model-input
pixels (0..S), labels 1 positive, 0 negative, 2/3 box corners, -1 padding.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sam2s_ros.model.rope import apply_rope, axial_rope_angles


class ImageEncoderStage(nn.Module):
    """Hiera trunk + FPN neck + the decoder's high-res projections (SAM2Base.forward_image).

    forward(image [1, 3, S, S] float32, ImageNet-normalised RGB) ->
        feat_s0 [1, 32, S/4, S/4], feat_s1 [1, 64, S/8, S/8],
        feat_s2 [1, 256, h, w], pos_s2 [1, 256, h, w] (sine positional encoding).
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, image: torch.Tensor):
        out = self.sam.forward_image(image)
        fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
        return fpn[0], fpn[1], fpn[2], pos[2]


class MaskDecoderStage(nn.Module):
    """Prompt encoder + mask decoder + object pointer (SAM2Base._forward_sam_heads).

    forward(pix_feat [B, 256, h, w], feat_s0 [B, 32, S/4, S/4], feat_s1 [B, 64, S/8, S/8],
            point_coords [B, P, 2] float32 model pixels, point_labels [B, P] int32,
            mask_input [B, 1, S/4, S/4] float32 logits or None) ->
        low_res_masks [B, 1, S/4, S/4] float32 logits of the chosen mask (NO_OBJ_SCORE
            where the object score says absent), ious [B] float32 predicted IoU of it,
        obj_ptr [B, 256] float32, object_score_logits [B] float32.

    ``multimask_output`` (constructor) selects SAM 2's 3-mask output with the best
    predicted IoU; otherwise the single mask with SAM 2.1's stability fallback.
    """

    def __init__(self, sam: nn.Module, multimask_output: bool):
        super().__init__()
        self.sam = sam
        self.multimask_output = multimask_output

    def forward(self, pix_feat, feat_s0, feat_s1, point_coords, point_labels, mask_input=None):
        outs = self.sam._forward_sam_heads(
            backbone_features=pix_feat,
            point_inputs={"point_coords": point_coords, "point_labels": point_labels},
            mask_inputs=mask_input,
            high_res_features=[feat_s0, feat_s1],
            multimask_output=self.multimask_output,
        )
        _, _, ious, low_res_masks, _, obj_ptr, object_score_logits = outs
        return low_res_masks, ious.max(dim=1).values, obj_ptr, object_score_logits[:, 0]


class MaskPromptStage(nn.Module):
    """A mask prompt used as the output (SAM2Base._use_mask_as_output, SAM 2.1 behaviour).

    forward(feat_s2 [B, 256, h, w] raw image features, feat_s0, feat_s1,
            mask [B, 1, S, S] float32 in {0, 1}) -> same outputs as MaskDecoderStage
    (ious are 1, object score +10 when the mask is non-empty else -10).
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, feat_s2, feat_s0, feat_s1, mask):
        outs = self.sam._use_mask_as_output(feat_s2, [feat_s0, feat_s1], mask)
        _, _, ious, low_res_masks, _, obj_ptr, object_score_logits = outs
        return low_res_masks, ious[:, 0], obj_ptr, object_score_logits[:, 0]


def memory_positional_encoding(sam: nn.Module, image_size: int, device="cpu") -> torch.Tensor:
    """[1, 64, h, w] float32 positional encoding of the memory features (h = w = image_size // 16).

    Constant for a fixed image size: the torch backend computes it once, the ONNX export
    stores it in ``constants.npz``.
    """
    hw = image_size // 16
    dummy = torch.zeros(1, sam.mem_dim, hw, hw, device=device)
    with torch.inference_mode():
        return sam.memory_encoder.position_encoding(dummy).float().clone()


class MemoryEncoderStage(nn.Module):
    """Memory encoder (SAM2Base._encode_new_memory after the mask-to-input mapping).

    forward(feat_s2 [B, 256, h, w] raw image features,
            mask_for_mem [B, 1, S, S] float32 (already binarised or sigmoid, then x20 - 10),
            object_score_logits [B]) ->
        maskmem_features [B, 64, h, w] float32, maskmem_pos [1, 64, h, w] float32.
    Absent objects (score <= 0) get SAM 2.1's ``no_obj_embed_spatial``; in readout models
    (sam2s_ros.model.readout) an empty value channel instead.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        from sam2s_ros.model.readout import is_readout_model

        self.memory_encoder = sam.memory_encoder
        self.no_obj_embed_spatial = sam.no_obj_embed_spatial  # [1, 64] or None
        self.readout = is_readout_model(sam)

    def forward(self, feat_s2, mask_for_mem, object_score_logits):
        out = self.memory_encoder(feat_s2, mask_for_mem, skip_mask_sigmoid=True)
        feats, pos = out["vision_features"], out["vision_pos_enc"][0]
        if self.readout:  # readout memory: an absent object writes an empty value channel
            present = (object_score_logits > 0).to(feats.dtype)[:, None, None, None]
            feats = torch.cat([feats[:, :-1], feats[:, -1:] * present], dim=1)
        elif self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).to(feats.dtype)[:, None, None, None]
            feats = feats + absent * self.no_obj_embed_spatial[..., None, None]
        return feats, pos[:1]


class MemoryAttentionStage(nn.Module):
    """Memory attention over explicit memory inputs, batched over instruments.

    Same weights and arithmetic as ``sam2.modeling.memory_attention.MemoryAttention`` plus
    the memory assembly of ``SAM2Base._prepare_memory_conditioned_features``, with
    real-valued RoPE and a key mask so instruments with fewer memories can share a batch
    (masked keys get zero attention weight, so padding does not change the result).

    forward(feat_s2 [1, 256, h, w], pos_s2 [1, 256, h, w],
            mem_feats [B, F, 64, h, w] float32 spatial memories,
            maskmem_pos [1, 64, h, w] float32 memory positional encoding,
            mem_tpos_index [B, F] int64 index into maskmem_tpos_enc
                (= num_maskmem - t_pos - 1; t_pos 0 for conditioning frames),
            mem_valid [B, F] bool,
            obj_ptrs [B, P, 256] float32,
            obj_ptr_pos [B, P] float32 signed frame distance / (max_obj_ptrs - 1),
            ptr_valid [B, P] bool,
            padded: optional host flag, True when any mem_valid / ptr_valid is False; None
                = find out on the device (one host sync per call; what tracing does))
        -> pix_feat_with_mem [B, 256, h, w] float32.
    """

    def __init__(self, sam: nn.Module, feat_hw: int):
        super().__init__()
        attn = sam.memory_attention
        self.layers = attn.layers
        self.norm = attn.norm
        self.pos_enc_at_input = attn.pos_enc_at_input
        self.maskmem_tpos_enc = sam.maskmem_tpos_enc  # [num_maskmem, 1, 1, 64]
        self.obj_ptr_tpos_proj = sam.obj_ptr_tpos_proj
        self.hidden_dim = sam.hidden_dim
        self.mem_dim = sam.mem_dim
        head_dim = self.layers[0].self_attn.internal_dim // self.layers[0].self_attn.num_heads
        angles = axial_rope_angles(head_dim, feat_hw, feat_hw)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def _attend(self, attn, q, k, v, num_k_rope: int, repeat_k: int, key_mask):
        q = attn._separate_heads(attn.q_proj(q), attn.num_heads)
        k = attn._separate_heads(attn.k_proj(k), attn.num_heads)
        v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
        q = apply_rope(q, self.rope_cos, self.rope_sin)
        cos_k = self.rope_cos.repeat(repeat_k, 1)
        sin_k = self.rope_sin.repeat(repeat_k, 1)
        k = torch.cat([apply_rope(k[:, :, :num_k_rope], cos_k, sin_k), k[:, :, num_k_rope:]], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return attn.out_proj(attn._recombine_heads(out))

    def _sine_pe(self, pos: torch.Tensor, dim: int) -> torch.Tensor:
        # sam2.modeling.sam2_utils.get_1d_sine_pe, temperature 10000
        pe_dim = dim // 2
        dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos.device)
        dim_t = 10000.0 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / pe_dim)
        pe = pos.unsqueeze(-1) / dim_t
        return torch.cat([pe.sin(), pe.cos()], dim=-1)

    def forward(
        self,
        feat_s2,
        pos_s2,
        mem_feats,
        maskmem_pos,
        mem_tpos_index,
        mem_valid,
        obj_ptrs,
        obj_ptr_pos,
        ptr_valid,
        padded: Optional[bool] = None,
    ):
        b, n_frames = mem_feats.shape[0], mem_feats.shape[1]
        c, hw = self.hidden_dim, feat_s2.shape[-2] * feat_s2.shape[-1]
        h, w = feat_s2.shape[-2], feat_s2.shape[-1]
        curr = feat_s2.flatten(2).transpose(1, 2).expand(b, hw, c)  # [B, hw, 256]
        curr_pos = pos_s2.flatten(2).transpose(1, 2).expand(b, hw, c)
        # spatial memories: [B, F, 64, h, w] -> [B, F*hw, 64]
        mem = mem_feats.flatten(3).transpose(2, 3).reshape(b, n_frames * hw, self.mem_dim)
        tpos = self.maskmem_tpos_enc[:, 0, 0, :][mem_tpos_index]  # [B, F, 64]
        mpos = maskmem_pos.flatten(2).transpose(1, 2)  # [1, hw, 64]
        mem_pos = (mpos.unsqueeze(1) + tpos.unsqueeze(2)).reshape(b, n_frames * hw, self.mem_dim)
        # object pointers: each 256-d pointer is split into 4 tokens of 64 (mem_dim)
        split = c // self.mem_dim
        n_ptr = obj_ptrs.shape[1]
        ptr_tokens = obj_ptrs.reshape(b, n_ptr * split, self.mem_dim)
        ptr_pos = self.obj_ptr_tpos_proj(self._sine_pe(obj_ptr_pos, c))  # [B, P, 64]
        ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
        memory = torch.cat([mem, ptr_tokens], dim=1)
        memory_pos = torch.cat([mem_pos, ptr_pos], dim=1)
        valid = torch.cat([mem_valid.repeat_interleave(hw, dim=1), ptr_valid.repeat_interleave(split, dim=1)], dim=1)
        key_mask = valid[:, None, None, :]  # [B, 1, 1, K] True = attend
        traced = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if not traced and (padded is False or (padded is None and bool(valid.all()))):
            key_mask = None  # nothing padded: SDPA's fused kernels are faster without a mask

        out = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        num_k_rope = n_frames * hw
        for layer in self.layers:
            t2 = layer.norm1(out)
            qk = t2 + curr_pos if layer.pos_enc_at_attn else t2
            out = out + self._attend(layer.self_attn, qk, qk, t2, hw, 1, None)
            t2 = layer.norm2(out)
            q = t2 + curr_pos if layer.pos_enc_at_cross_attn_queries else t2
            k = memory + memory_pos if layer.pos_enc_at_cross_attn_keys else memory
            out = out + self._attend(layer.cross_attn_image, q, k, memory, num_k_rope, n_frames, key_mask)
            t2 = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(t2)))
        out = self.norm(out)
        return out.transpose(1, 2).reshape(b, c, h, w)


class NoMemoryStage(nn.Module):
    """Features of an initial conditioning frame: no memory, SAM 2.1 adds ``no_mem_embed``.

    forward(feat_s2 [B, 256, h, w]) -> [B, 256, h, w].
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.no_mem_embed = sam.no_mem_embed  # [1, 1, 256]

    def forward(self, feat_s2):
        return feat_s2 + self.no_mem_embed[0, 0][None, :, None, None]


class MemoryReadoutStage(nn.Module):
    """Memory attention of readout models (``sam2s_mobile``, :mod:`sam2s_ros.model.readout`).

    Same inputs as :class:`MemoryAttentionStage` (pos_s2, maskmem_pos, mem_tpos_index and
    the object pointers are accepted and unused: the readout does not depend on them);
    feat_s2 may have 1 row (one frame for all instruments) or B (training: one clip per row).

    forward(...) -> pix_feat_with_mem [B, 256, h, w] (the image features, unchanged),
        point_coords [B, 3, 2] float32 model pixels, point_labels [B, 3] int32,
        mask_input [B, 1, S/4, S/4] float32 logits, present [B] bool
        (see :meth:`sam2s_ros.model.readout.MemoryReadout.prompt`).
    """

    def __init__(self, sam: nn.Module, feat_hw: int):
        super().__init__()
        from sam2s_ros.model.readout import READOUT_KEY_DIM

        self.readout = sam.memory_attention
        self.key_dim = READOUT_KEY_DIM
        self.memory_encoder = sam.memory_encoder
        self.feat_hw = feat_hw

    def query_keys(self, feat_s2: torch.Tensor) -> torch.Tensor:
        """[N, 256, h, w] -> [N, hw, 63] L2-normalised keys of the current frame (the memory
        encoder's projection without the mask channel); N = 1 (one frame, inference) or B
        (one clip per row, training)."""
        proj = self.memory_encoder.out_proj
        x = F.normalize(feat_s2.flatten(2).transpose(1, 2), dim=2)  # [N, hw, 256]
        w = proj.weight[: self.key_dim, :-1, 0, 0]  # [63, 256]
        return F.normalize(x @ w.T + proj.bias[: self.key_dim], dim=2)

    def forward(self, feat_s2, _pos_s2, mem_feats, _maskmem_pos, _mem_tpos_index, mem_valid, *_pointers, padded=None):
        b, n_frames, c = mem_feats.shape[0], mem_feats.shape[1], mem_feats.shape[2]
        hw = feat_s2.shape[-2] * feat_s2.shape[-1]
        mem = mem_feats.flatten(3).transpose(2, 3).reshape(b, n_frames * hw, c)
        valid = mem_valid.repeat_interleave(hw, dim=1)
        readout = self.readout.readout(self.query_keys(feat_s2).expand(b, -1, -1), mem, valid)
        coords, labels, mask, present = self.readout.prompt(readout, self.feat_hw)
        return (feat_s2.expand(b, -1, -1, -1), coords, labels, mask, present)


def memory_stage(sam: nn.Module, feat_hw: int) -> nn.Module:
    """The memory-attention stage of ``sam``: :class:`MemoryReadoutStage` for readout models,
    :class:`MemoryAttentionStage` otherwise."""
    from sam2s_ros.model.readout import is_readout_model

    return MemoryReadoutStage(sam, feat_hw) if is_readout_model(sam) else MemoryAttentionStage(sam, feat_hw)

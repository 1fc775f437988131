"""The torch backend: the SAM 2.1 stages (sam2s_ros.model.stages) run by PyTorch.

CPU or CUDA; an optional autocast dtype wraps every stage: bfloat16 on CPU (oneDNN's
AVX-512 BF16 GEMMs; issue #17) or CUDA, float16 on CUDA. Outputs are always returned as
float32.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from sam2s_ros.backends.base import AttendedMemory, DecoderOutput, ImageFeatures, MemoryInputs, MemoryPrompt
from sam2s_ros.errors import BackendError
from sam2s_ros.model import stages


class TorchBackend:
    """Runs SAM 2.1 stages of a ``SAM2Base`` with PyTorch.

    Args:
        sam: a ``sam2.modeling.sam2_base.SAM2Base`` (weights loaded, eval mode).
        device: "cpu" or "cuda[:N]".
        autocast_dtype: "none", "bfloat16" (CPU or CUDA) or "float16" (CUDA only).

    Raises:
        BackendError: CUDA requested but not available, float16 on CPU, or int8 (the int8
            path is the onnxruntime backend's int8 graphs).
    """

    name = "torch"

    def __init__(self, sam: torch.nn.Module, device: str = "cpu", autocast_dtype: str = "none"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} requested but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); use device:=cpu or install a CUDA build of torch"
            )
        if autocast_dtype == "int8":
            raise BackendError(
                "autocast_dtype 'int8' runs the int8 graphs of 'sam2s export --int8' on backend 'onnxruntime'; "
                "the torch backend takes 'none', 'bfloat16' or (CUDA) 'float16'"
            )
        if autocast_dtype == "float16" and not device.startswith("cuda"):
            raise BackendError("autocast_dtype 'float16' needs a CUDA device; use 'none' or 'bfloat16' on CPU")
        self.device = torch.device(device)
        self.sam = sam.to(self.device).eval()
        self.image_size = int(sam.image_size)
        self.feat_hw = self.image_size // 16
        self._autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(autocast_dtype)
        self.image_encoder = stages.ImageEncoderStage(sam)
        self.decoder_multi = stages.MaskDecoderStage(sam, multimask_output=True)
        self.decoder_single = stages.MaskDecoderStage(sam, multimask_output=False)
        self.mask_prompt = stages.MaskPromptStage(sam)
        self.memory_encoder = stages.MemoryEncoderStage(sam)
        self.memory_attention = stages.memory_stage(sam, self.feat_hw).to(self.device)
        self.no_memory = stages.NoMemoryStage(sam)

    def _ctx(self):
        if self._autocast_dtype is None:
            return torch.inference_mode()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(self.device.type, dtype=self._autocast_dtype))
        return stack

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        with self._ctx():
            return ImageFeatures(*(t.float() for t in self.image_encoder(image.to(self.device))))

    def no_memory_features(self, feat_s2: torch.Tensor) -> torch.Tensor:
        with self._ctx():
            return self.no_memory(feat_s2).float()

    def attend_memory(self, feats: ImageFeatures, memory: MemoryInputs) -> AttendedMemory:
        with self._ctx():
            maskmem_pos = self.maskmem_pos()
            out = self.memory_attention(
                feats.feat_s2,
                feats.pos_s2,
                memory.mem_feats,
                maskmem_pos,
                memory.mem_tpos_index,
                memory.mem_valid,
                memory.obj_ptrs,
                memory.obj_ptr_pos,
                memory.ptr_valid,
                padded=memory.padded,
            )
        if isinstance(out, tuple):  # readout models: features + decoder prompt
            pix, coords, labels, mask, present = out
            return AttendedMemory(pix.float(), MemoryPrompt(coords.float(), labels, mask.float(), present))
        return AttendedMemory(out.float())

    def decode_masks(
        self, pix_feat, feats, point_coords, point_labels, mask_input: Optional[torch.Tensor], multimask: bool
    ) -> DecoderOutput:
        b = pix_feat.shape[0]
        dec = self.decoder_multi if multimask else self.decoder_single
        with self._ctx():
            out = dec(
                pix_feat,
                feats.feat_s0.expand(b, -1, -1, -1),
                feats.feat_s1.expand(b, -1, -1, -1),
                point_coords,
                point_labels,
                mask_input,
            )
        return DecoderOutput(*(t.float() for t in out))

    def decode_mask_prompt(self, feats: ImageFeatures, masks: torch.Tensor) -> DecoderOutput:
        b = masks.shape[0]
        with self._ctx():
            out = self.mask_prompt(
                feats.feat_s2.expand(b, -1, -1, -1),
                feats.feat_s0.expand(b, -1, -1, -1),
                feats.feat_s1.expand(b, -1, -1, -1),
                masks,
            )
        return DecoderOutput(*(t.float() for t in out))

    def encode_memory(self, feats, mask_for_mem, object_score_logits):
        b = mask_for_mem.shape[0]
        with self._ctx():
            f, pos = self.memory_encoder(feats.feat_s2.expand(b, -1, -1, -1), mask_for_mem, object_score_logits)
        return f.float(), pos.float()

    def maskmem_pos(self) -> torch.Tensor:
        """[1, 64, h, w] memory positional encoding (constant for a fixed image size)."""
        if not hasattr(self, "_maskmem_pos"):
            self._maskmem_pos = stages.memory_positional_encoding(self.sam, self.image_size, self.device)
        return self._maskmem_pos

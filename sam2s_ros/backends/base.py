"""The one interface every inference runtime implements: SAM 2.1's per-frame stages.

The tracker only talks to this interface and never knows which runtime runs it. Tensors
are torch tensors on ``backend.device`` (onnxruntime/TensorRT backends convert at their
boundary). Shapes: S = image_size, h = w = S / 16, B = instruments, F = memory frames,
P = object pointers or points.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Protocol

import torch


class ImageFeatures(NamedTuple):
    """Image encoder output for one frame (batch 1)."""

    feat_s0: torch.Tensor  # [1, 32, S/4, S/4] high-res features (decoder conv_s0 applied)
    feat_s1: torch.Tensor  # [1, 64, S/8, S/8]
    feat_s2: torch.Tensor  # [1, 256, h, w] stride-16 features
    pos_s2: torch.Tensor  # [1, 256, h, w] sine positional encoding


class DecoderOutput(NamedTuple):
    """Mask decoder output, one row per instrument."""

    low_res_masks: torch.Tensor  # [B, 1, S/4, S/4] float32 logits
    ious: torch.Tensor  # [B] float32 predicted IoU of the chosen mask
    obj_ptrs: torch.Tensor  # [B, 256] float32 object pointers
    object_score_logits: torch.Tensor  # [B] float32, > 0 = visible


class MemoryInputs(NamedTuple):
    """Explicit memory bank of B instruments, padded to common F and P (see *_valid)."""

    mem_feats: torch.Tensor  # [B, F, 64, h, w] float32
    mem_tpos_index: torch.Tensor  # [B, F] int64 (num_maskmem - t_pos - 1)
    mem_valid: torch.Tensor  # [B, F] bool
    obj_ptrs: torch.Tensor  # [B, P, 256] float32
    obj_ptr_pos: torch.Tensor  # [B, P] float32 signed distance / (max_obj_ptrs - 1)
    ptr_valid: torch.Tensor  # [B, P] bool
    #: host-side: any *_valid False (None = unknown; the torch backend then checks on the device)
    padded: Optional[bool] = None


def memory_rows(memory: MemoryInputs, start: int, stop: int) -> MemoryInputs:
    """Instruments ``start``..``stop - 1`` of a batch (views; padding kept, still masked by *_valid)."""
    return MemoryInputs(*(t[start:stop] for t in memory[:6]), padded=memory.padded)


class MemoryPrompt(NamedTuple):
    """Decoder prompt a readout memory gives a tracked frame (sam2s_ros.model.readout)."""

    point_coords: torch.Tensor  # [B, 3, 2] float32 model pixels: click, box top-left, box bottom-right
    point_labels: torch.Tensor  # [B, 3] int32 (1, 2, 3; -1 where absent)
    mask_input: torch.Tensor  # [B, 1, S/4, S/4] float32 mask-prompt logits
    present: torch.Tensor  # [B] bool, False = the readout found nothing (object absent)


class AttendedMemory(NamedTuple):
    """Memory attention output for B instruments."""

    pix_feat: torch.Tensor  # [B, 256, h, w] float32 memory-conditioned features
    #: readout models only (sam2s_mobile); None for SAM 2.1 models, whose tracked frames are
    #: decoded without a prompt
    prompt: Optional[MemoryPrompt] = None


def concat_attended(parts: list[AttendedMemory]) -> AttendedMemory:
    """Stack per-instrument AttendedMemory rows (all with or all without a prompt) into one batch."""
    pix = torch.cat([p.pix_feat for p in parts])
    if parts[0].prompt is None:
        return AttendedMemory(pix)
    return AttendedMemory(pix, MemoryPrompt(*(torch.cat(list(t)) for t in zip(*(p.prompt for p in parts)))))


class Backend(Protocol):
    """SAM 2.1 stages on one runtime. Attributes: name, image_size, device."""

    name: str
    image_size: int
    device: torch.device

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        """image [1, 3, S, S] float32 ImageNet-normalised RGB -> ImageFeatures."""

    def no_memory_features(self, feat_s2: torch.Tensor) -> torch.Tensor:
        """[B, 256, h, w] -> features of an initial conditioning frame (+ no_mem_embed)."""

    def attend_memory(self, feats: ImageFeatures, memory: MemoryInputs) -> AttendedMemory:
        """Memory attention -> memory-conditioned features [B, 256, h, w] (+ the readout
        prompt of readout models)."""

    def decode_masks(
        self,
        pix_feat: torch.Tensor,
        feats: ImageFeatures,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: Optional[torch.Tensor],
        multimask: bool,
    ) -> DecoderOutput:
        """Prompt encoder + mask decoder for B instruments sharing one point count P."""

    def decode_mask_prompt(self, feats: ImageFeatures, masks: torch.Tensor) -> DecoderOutput:
        """Mask prompts [B, 1, S, S] {0,1} used as output (SAM 2.1 mask-as-output)."""

    def encode_memory(
        self, feats: ImageFeatures, mask_for_mem: torch.Tensor, object_score_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (maskmem_features [B, 64, h, w] float32, maskmem_pos [1, 64, h, w])."""

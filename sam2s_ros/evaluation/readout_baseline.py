"""Training-free tracking baseline: MobileSAM features + a cosine memory readout + SAM's decoder.

What MobileSAM's pretrained weights do with no training at all, for the embedded-checkpoint
issue's comparison ("a trained memory has to beat that"). The recipe is the one measured in
``../shared/models/README.md`` (its table "readout + SAM decoder"):

1. Encoder: MobileSAM's TinyViT (:func:`sam2s_ros.model.tinyvit.load_mobilesam_image_encoder`)
   on the frame resized to S x S (squashed, as SAM 2 and our tracker do), ImageNet
   normalisation; features [256, S/16, S/16], L2-normalised per cell.
2. Memory: the prompted frame (its mask from SAM's decoder on the box prompt) and the last
   ``recent_frames`` frames with their own predicted masks. Masks are max-pooled to the
   feature grid (thin instruments cover one or two cells; area averaging erases them).
3. Readout per cell of the current frame: cosine affinity to every memory cell, the top
   ``topk`` affinities softmax-weighted at ``temperature``, mask values averaged; the readout
   map is divided by its maximum and thresholded at ``threshold``.
4. Decoder: SAM's prompt encoder + mask decoder (:func:`sam2s_ros.model.mobile.build_mobilesam_heads`)
   prompted with the box of the readout mask, a positive click at the readout peak, and the
   readout as mask prompt (logits ``MASK_PROMPT_GAIN * (readout - threshold)`` at the
   decoder's 4x grid); single-mask output thresholded at 0.

Numbers: ``topk`` 30, ``temperature`` 0.05, 2 recent frames, threshold 0.5 are the README's.
``MASK_PROMPT_GAIN`` is ours (the README does not give the mask-prompt scaling). The shipped
``sam2s_mobile`` (release 2) runs this readout as its memory, inside the tracker
(:mod:`sam2s_ros.model.readout`): 63-d fitted keys instead of 256-d features, the tracker's
memory bank instead of 2 recent frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from sam2s_ros.model.readout import (  # one definition, shared with the sam2s_mobile memory
    EMBED_STRIDE,
    MASK_PROMPT_GAIN,
    READOUT_TEMPERATURE,
    READOUT_THRESHOLD,
    READOUT_TOPK,
)


@dataclass
class _MemoryFrame:
    keys: torch.Tensor  # [cells, 256] L2-normalised features
    values: torch.Tensor  # [cells] float mask on the feature grid (max-pooled)


@dataclass
class ReadoutBaseline:
    """One object tracked by the training-free readout (module doc). Not thread-safe.

    Args:
        mobilesam_path: ``mobile_sam.pt`` (plain state dict).
        image_size: model input side S in pixels (multiple of 64).
        topk, temperature, recent_frames, threshold: readout settings (module doc).
        key_basis: see the attribute.
    """

    mobilesam_path: str
    image_size: int = 1024
    topk: int = READOUT_TOPK
    temperature: float = READOUT_TEMPERATURE
    recent_frames: int = 2
    threshold: float = READOUT_THRESHOLD
    #: optional [256, k] key basis (keys = normalise(basisᵀ · normalised embedding), as the
    #: sam2s_mobile memory does); None = the full 256-d embedding
    key_basis: Optional[torch.Tensor] = None
    _cond: Optional[_MemoryFrame] = field(default=None, init=False)
    _recent: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        from sam2s_ros.model.checkpoint import read_state_dict
        from sam2s_ros.model.mobile import build_mobilesam_heads
        from sam2s_ros.model.tinyvit import PIXEL_MEAN, PIXEL_STD, load_mobilesam_image_encoder

        self._encoder = load_mobilesam_image_encoder(self.mobilesam_path, self.image_size)
        self._pe, self._md = build_mobilesam_heads(read_state_dict(self.mobilesam_path), self.image_size)
        self._mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        self._grid = self.image_size // EMBED_STRIDE

    @torch.inference_mode()
    def track(self, rgb: np.ndarray, box: Optional[np.ndarray] = None) -> np.ndarray:
        """Segment the object in one frame.

        Args:
            rgb: [H, W, 3] uint8 RGB frame.
            box: xyxy box in source pixels (float32 [4]) on the prompted frame (starts the
                track and replaces the memory); None on the following frames.

        Returns:
            bool [H, W] mask (all False when the readout finds nothing).

        Raises:
            RuntimeError: ``box`` is None before any box was given.
        """
        h, w = rgb.shape[:2]
        s = self.image_size
        x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
        embed = self._encoder((x - self._mean) / self._std)[2]  # [1, 256, g, g]
        keys = F.normalize(embed[0].flatten(1).T, dim=1)  # [g*g, 256]
        if self.key_basis is not None:
            keys = F.normalize(keys @ self.key_basis.to(keys.dtype), dim=1)  # [g*g, k]
        if box is not None:
            scale = np.array([s / w, s / h, s / w, s / h], np.float32)
            sparse, dense = self._pe(points=None, boxes=torch.from_numpy(box * scale)[None], masks=None)
            self._recent = []
        else:
            if self._cond is None:
                raise RuntimeError("ReadoutBaseline.track: the first frame needs a box")
            prompts = self._prompts_from_readout(keys)
            if prompts is None:
                self._remember(keys, torch.zeros(self._grid * self._grid), cond=False)
                return np.zeros((h, w), bool)
            sparse, dense = self._pe(points=prompts[0], boxes=prompts[1], masks=prompts[2])
        low = self._md(embed, self._pe.get_dense_pe(), sparse, dense, multimask_output=False, repeat_image=False)[0]
        low = low[:, :1]  # [1, 1, 4g, 4g]
        grid_mask = F.adaptive_max_pool2d((low > 0).float(), (self._grid, self._grid)).flatten()
        self._remember(keys, grid_mask, cond=box is not None)
        up = F.interpolate(low, (h, w), mode="bilinear", align_corners=False)
        return (up[0, 0] > 0).numpy()

    def _remember(self, keys: torch.Tensor, values: torch.Tensor, cond: bool) -> None:
        frame = _MemoryFrame(keys, values)
        if cond:
            self._cond = frame
            return
        self._recent = (self._recent + [frame])[-self.recent_frames :]

    def _prompts_from_readout(self, keys: torch.Tensor):
        """(points, box, mask prompt) for SAM's prompt encoder from the memory readout, or None."""
        memory = [self._cond, *self._recent]
        mem_keys = torch.cat([m.keys for m in memory])
        mem_values = torch.cat([m.values for m in memory])
        affinity = keys @ mem_keys.T / self.temperature  # [cells, memory cells]
        top, idx = affinity.topk(min(self.topk, mem_keys.shape[0]), dim=1)
        readout = (top.softmax(dim=1) * mem_values[idx]).sum(dim=1)
        peak = float(readout.max())
        if peak <= 0:
            return None
        readout = readout / peak
        g, stride = self._grid, EMBED_STRIDE
        on = (readout > self.threshold).view(g, g)
        ys, xs = torch.nonzero(on, as_tuple=True)
        if len(xs) == 0:
            return None
        box = torch.tensor([[xs.min() * stride, ys.min() * stride, (xs.max() + 1) * stride, (ys.max() + 1) * stride]])
        cell = int(readout.argmax())
        click = torch.tensor([[[(cell % g + 0.5) * stride, (cell // g + 0.5) * stride]]], dtype=torch.float32)
        grid = readout.view(1, 1, g, g)
        mask = F.interpolate(grid, (4 * g, 4 * g), mode="bilinear", align_corners=False)
        mask = MASK_PROMPT_GAIN * (mask - self.threshold)
        return (click, torch.ones(1, 1, dtype=torch.int32)), box.float(), mask

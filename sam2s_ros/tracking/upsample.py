"""Decoder logits -> source resolution: SAM 2's bilinear upsampling, for the whole frame or a window.

SAM 2 brings the mask decoder's [h, w] low-resolution logits (h = w = image_size / 4) to the
video resolution with ``F.interpolate(..., mode="bilinear", align_corners=False)``
(``sam2/sam2_video_predictor.py``, ``_get_orig_video_res_output``). Every output pixel is a
weighted sum of at most 2x2 low-resolution cells, so a binary mask (logits > threshold) can
only be set where one of those cells is near the threshold: a tool-tip mask that covers 1 %
of a 1280x1024 frame needs 1 % of the full-frame work. :class:`UpsampledLogits` computes the
logits only inside that window (on the host, on demand) and the full frame only when asked.

One formula serves both: the same taps and weights as torch's kernel (source coordinate
``scale * (dst + 0.5) - 0.5`` clamped at 0, ``scale = in / out``, rounded once as torch's
fused multiply-add does), applied separably (columns, then rows) with plain float32 products
and sums. The result differs from ``F.interpolate``'s by float32 rounding only (at most
4e-6 for logits of magnitude 5-20, measured 2026-12-03 on 480x854, 1024x1280 and 1080x1920);
the full-frame (:func:`upsample_logits`, torch, any device) and window
(:meth:`UpsampledLogits.window`, numpy) results are equal to the bit, so a mask and its
logits always agree.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from sam2s_ros.tracking.types import mask_bbox

#: float32 machine epsilon
_EPS32 = float(np.finfo(np.float32).eps)
#: bound on the rounding of one output value, in units of eps x the largest |input| (two levels
#: of two products and a sum, and weights that sum to 1 within 1 ulp; 8 leaves a margin)
ROUNDING_BOUND_EPS = 8.0


@functools.lru_cache(maxsize=64)
def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Taps of 1-D linear upsampling with ``align_corners=False`` (torch's and SAM 2's).

    Args:
        n_in: input length in cells (>= 1). n_out: output length in pixels (>= 1).

    Returns:
        (i0, i1, w0, w1): [n_out] int64 input indices and [n_out] float32 weights; output
        ``o = x[i0] * w0 + x[i1] * w1``. ``i0`` and ``i1`` are non-decreasing, ``i1 - i0`` is
        0 or 1. Read-only arrays (cached per size pair).
    """
    scale = np.float32(n_in / n_out)  # torch: area_pixel_compute_scale, in float32
    dst = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    # scale * (dst + 0.5) - 0.5 rounded once (torch's compiled kernel fuses it into an FMA;
    # rounding twice moves the weights by up to 1e-5 at 1280 px)
    src = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    i1 = i0 + (i0 < n_in - 1)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    for a in (i0, i1, w0, w1):
        a.flags.writeable = False
    return i0, i1, w0, w1


def upsample_logits(low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Full-frame upsampling of logits (the formula of the module docstring), on their device.

    Args:
        low_res: [..., h, w] float32 logits (any leading dims, any device).
        hw: (H, W) output size in pixels.

    Returns:
        [..., H, W] float32, equal to the bit to :meth:`UpsampledLogits.window` of the same
        logits; within float32 rounding of ``F.interpolate(mode="bilinear", align_corners=False)``.
    """
    h, w = low_res.shape[-2:]
    yi0, yi1, wy0, wy1 = _device_taps(h, hw[0], low_res.device, torch.is_inference_mode_enabled())
    xi0, xi1, wx0, wx1 = _device_taps(w, hw[1], low_res.device, torch.is_inference_mode_enabled())
    rows = low_res.index_select(-1, xi0) * wx0 + low_res.index_select(-1, xi1) * wx1  # [..., h, W]
    out = rows.index_select(-2, yi0).mul_(wy0[:, None])  # in place: the [..., H, W] temporaries dominate
    return out.add_(rows.index_select(-2, yi1).mul_(wy1[:, None]))


@functools.lru_cache(maxsize=64)
def _device_taps(n_in: int, n_out: int, device: torch.device, inference: bool) -> tuple[torch.Tensor, ...]:
    """:func:`linear_taps` as tensors on ``device``, uploaded once per size pair, device and
    inference mode (``inference`` is part of the cache key only: inference tensors must not
    reach autograd)."""
    return tuple(torch.from_numpy(a.copy()).to(device) for a in linear_taps(n_in, n_out))


class UpsampledLogits:
    """Source-resolution logits of one instrument, computed from the decoder's on demand.

    Args:
        low_res: [h, w] float32 decoder logits (after hole filling), host memory. Kept by
            reference: the caller must not modify it afterwards.
        hw: (H, W) source size in pixels.
    """

    def __init__(self, low_res: np.ndarray, hw: tuple[int, int]):
        self.low_res = np.asarray(low_res, np.float32)
        if self.low_res.ndim != 2:
            raise ValueError(f"low_res must be [h, w], got shape {list(self.low_res.shape)}")
        self.hw = (int(hw[0]), int(hw[1]))
        self._ytaps = linear_taps(self.low_res.shape[0], self.hw[0])
        self._xtaps = linear_taps(self.low_res.shape[1], self.hw[1])
        self._full: Optional[np.ndarray] = None
        self._cached: Optional[tuple[tuple[int, int, int, int], np.ndarray]] = None

    def support(self, threshold: float) -> tuple[int, int, int, int]:
        """Smallest window (y0, y1, x0, x1), inclusive-exclusive source pixels, outside which
        every logit is <= ``threshold``; (0, 0, 0, 0) when there is none.

        Pixels outside are guaranteed below: the window covers every pixel one of whose
        taps is within the rounding bound (ROUNDING_BOUND_EPS x eps x max |logit|) of the
        threshold or above it.
        """
        low = self.low_res
        margin = ROUNDING_BOUND_EPS * _EPS32 * max(abs(float(threshold)), float(np.abs(low).max(initial=0.0)))
        near = low > np.float32(threshold - margin)
        rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
        if not len(rows):
            return (0, 0, 0, 0)
        y0, y1 = self._span(self._ytaps, rows[0], rows[-1])
        x0, x1 = self._span(self._xtaps, cols[0], cols[-1])
        return (y0, y1, x0, x1)

    @staticmethod
    def _span(taps, first: int, last: int) -> tuple[int, int]:
        """Output pixels whose taps touch input cells first..last (contiguous: taps are monotonic)."""
        i0, i1, _, _ = taps
        start = int(np.searchsorted(i1, first, side="left"))  # first pixel with i1 >= first
        stop = int(np.searchsorted(i0, last, side="right"))  # one past the last pixel with i0 <= last
        return start, stop

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """[y1 - y0, x1 - x0] float32 logits of source rows y0..y1-1 and columns x0..x1-1."""
        if self._full is not None:
            return self._full[y0:y1, x0:x1]
        if self._cached is not None:
            (cy0, cy1, cx0, cx1), values = self._cached
            if cy0 <= y0 and y1 <= cy1 and cx0 <= x0 and x1 <= cx1:
                return values[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.float32)
        yi0, yi1, wy0, wy1 = (a[y0:y1] for a in self._ytaps)
        xi0, xi1, wx0, wx1 = (a[x0:x1] for a in self._xtaps)
        r0 = int(yi0[0])
        band = self.low_res[r0 : int(yi1[-1]) + 1]  # the input rows the window reads
        rows = band[:, xi0] * wx0
        rows += band[:, xi1] * wx1  # [rows, x1 - x0], the products and sums of upsample_logits
        out = np.take(rows, yi0 - r0, axis=0)  # in place from here: half the time of fresh arrays
        out *= wy0[:, None]
        below = np.take(rows, yi1 - r0, axis=0)
        below *= wy1[:, None]
        out += below
        return out

    def full(self) -> np.ndarray:
        """[H, W] float32 logits of the whole frame (computed once, then kept)."""
        if self._full is None:
            self._full = upsample_logits(torch.from_numpy(self.low_res), self.hw).numpy()
        return self._full

    def binary_mask(self, threshold: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """The [H, W] bool mask ``logits > threshold`` and its tight bounding box.

        Only the :meth:`support` window is computed (and kept for :meth:`window`).

        Returns:
            (mask, (x0, y0, x1, y1)): the box inclusive-exclusive in source pixels, as
            :func:`~sam2s_ros.tracking.types.mask_bbox`; all 0 for an empty mask.
        """
        mask = np.zeros(self.hw, bool)
        y0, y1, x0, x1 = self.support(threshold)
        if y1 <= y0 or x1 <= x0:
            return mask, (0, 0, 0, 0)
        values = self.window(y0, y1, x0, x1)
        self._cached = ((y0, y1, x0, x1), values)
        inside = values > np.float32(threshold)
        mask[y0:y1, x0:x1] = inside
        bx0, by0, bx1, by1 = mask_bbox(inside)
        return mask, ((x0 + bx0, y0 + by0, x0 + bx1, y0 + by1) if bx1 > bx0 else (0, 0, 0, 0))

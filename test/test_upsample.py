"""Decoder logits -> source resolution (sam2s_ros.tracking.upsample): the full frame and the
windows the CPU path computes agree to the bit, masks computed inside windows equal the
thresholded full frame, and both stay within float32 rounding of SAM 2's F.interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2s_ros.tracking.types import FrameResult, InstrumentResult, mask_bbox
from sam2s_ros.tracking.upsample import UpsampledLogits, linear_taps, upsample_logits

#: (decoder side, source H, source W): 512² and 1024² models, DAVIS, 1280x1024, 1080p, tiny
SIZES = [(128, 1024, 1280), (256, 480, 854), (64, 1080, 1920), (128, 100, 90), (32, 7, 5)]


def _logits(h: int, seed: int, offset: float = -6.0) -> np.ndarray:
    """Smooth logits like a decoder's: a few blobs above 0 on a negative background."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy((rng.standard_normal((1, 1, max(h // 8, 1), max(h // 8, 1))) * 8).astype(np.float32))
    smooth = F.interpolate(low, size=(h, h), mode="bicubic", align_corners=False)[0, 0].numpy()
    return (smooth + offset + rng.standard_normal((h, h)).astype(np.float32) * 0.5).astype(np.float32)


@pytest.mark.parametrize("h,big_h,big_w", SIZES)
def test_full_frame_is_sam2_bilinear_within_rounding(h, big_h, big_w):
    low = _logits(h, 0)
    ref = F.interpolate(torch.from_numpy(low)[None, None], size=(big_h, big_w), mode="bilinear", align_corners=False)
    ours = upsample_logits(torch.from_numpy(low), (big_h, big_w))
    assert ours.shape == (big_h, big_w)
    # float32 rounding of values up to |low|.max(): a few ulp, not a different weight
    bound = 8 * np.finfo(np.float32).eps * float(np.abs(low).max())
    assert float((ours - ref[0, 0]).abs().max()) <= bound


@pytest.mark.parametrize("h,big_h,big_w", SIZES)
def test_windows_equal_the_full_frame_to_the_bit(h, big_h, big_w):
    low = _logits(h, 1)
    full = upsample_logits(torch.from_numpy(low), (big_h, big_w)).numpy()
    rng = np.random.default_rng(2)
    for _ in range(6):
        y0, y1 = sorted(rng.integers(0, big_h + 1, 2))
        x0, x1 = sorted(rng.integers(0, big_w + 1, 2))
        win = UpsampledLogits(low, (big_h, big_w)).window(y0, y1, x0, x1)
        assert win.shape == (y1 - y0, x1 - x0)
        assert np.array_equal(win, full[y0:y1, x0:x1])
    assert np.array_equal(UpsampledLogits(low, (big_h, big_w)).full(), full)


@pytest.mark.parametrize("h,big_h,big_w", SIZES)
@pytest.mark.parametrize("threshold", [0.0, 0.5, -3.0])
def test_window_masks_equal_the_thresholded_full_frame(h, big_h, big_w, threshold):
    for seed, offset in ((3, -6.0), (4, -12.0), (5, 2.0)):  # small blobs, (near) empty, most of the frame
        low = _logits(h, seed, offset)
        full = upsample_logits(torch.from_numpy(low), (big_h, big_w)).numpy()
        logits = UpsampledLogits(low, (big_h, big_w))
        mask, bbox = logits.binary_mask(threshold)
        expected = full > threshold
        assert mask.dtype == bool
        assert mask.shape == (big_h, big_w)
        assert np.array_equal(mask, expected)
        assert bbox == mask_bbox(expected)
        y0, y1, x0, x1 = logits.support(threshold)
        for outside in (expected[:y0], expected[y1:], expected[:, :x0], expected[:, x1:]):
            assert not outside.any()
        # the window kept from binary_mask serves the mask's box
        bx0, by0, bx1, by1 = bbox
        assert np.array_equal(logits.window(by0, by1, bx0, bx1), full[by0:by1, bx0:bx1])


def test_threshold_ties_outside_the_window_stay_unset():
    """Cells exactly at the threshold next to huge negative cells (NO_OBJ_SCORE = -1024):
    rounding must not set a pixel outside the computed window."""
    low = np.full((16, 16), -1024.0, np.float32)
    low[5:7, 5:9] = 0.5
    low[12, 12] = 0.5 - 1e-4
    for threshold in (0.5, 0.5 - 1e-4):
        full = upsample_logits(torch.from_numpy(low), (100, 130)).numpy()
        mask, _ = UpsampledLogits(low, (100, 130)).binary_mask(threshold)
        assert np.array_equal(mask, full > threshold)


def test_taps_follow_torch_and_stay_in_range():
    for n_in, n_out in ((128, 1280), (256, 854), (7, 3), (1, 5)):
        i0, i1, w0, w1 = linear_taps(n_in, n_out)
        assert i0.min() >= 0
        assert i1.max() <= n_in - 1
        assert set(np.unique(i1 - i0)) <= {0, 1}
        assert np.all(np.diff(i0) >= 0)
        assert np.all(np.diff(i1) >= 0)
        assert np.all((w0 >= 0) & (w1 >= 0))
        assert not i0.flags.writeable  # cached: shared by every result
    # a one-hot input reproduces the weights torch uses (exactly: one product each)
    i0, i1, w0, w1 = linear_taps(8, 20)
    eye = torch.eye(8)[:, None, :]  # [8, 1, 8]: row k is one-hot at k
    rows = F.interpolate(eye, size=20, mode="linear", align_corners=False)[:, 0]  # [8, 20]
    expected = np.zeros((8, 20), np.float32)
    expected[i0, np.arange(20)] += w0
    expected[i1, np.arange(20)] += w1
    assert np.array_equal(rows.numpy(), expected)


def test_label_image_from_windows_equals_dense_logits():
    """FrameResult.label_image resolves overlaps from logit windows as from full arrays."""
    hw = (240, 320)
    lows = [_logits(64, s, -2.0) for s in (7, 8, 9)]  # large, overlapping blobs
    windowed, dense = [], []
    for k, low in enumerate(lows):
        lg = UpsampledLogits(low, hw)
        mask, bbox = lg.binary_mask(0.0)
        windowed.append(InstrumentResult(k + 1, mask, lg, 1.0, 1.0, bbox))
        dense.append(InstrumentResult(k + 1, mask, lg.full(), 1.0, 1.0, bbox))
    masks = np.stack([r.mask for r in windowed])
    assert (masks.sum(0) > 1).any(), "the blobs were chosen to overlap"
    a = FrameResult(0, hw, windowed).label_image()
    b = FrameResult(0, hw, dense).label_image()
    assert np.array_equal(a, b)
    # where masks overlap the higher logit wins
    full = np.stack([r.mask_logits for r in dense])
    overlap = masks.sum(0) > 1
    winner = np.where(masks, full, -np.inf).argmax(0) + 1
    assert np.array_equal(a[overlap], winner[overlap])

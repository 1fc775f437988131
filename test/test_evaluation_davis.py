"""DAVIS J and F on hand-computed cases (sam2s_ros.evaluation.davis)."""

import math

import numpy as np
import pytest

from sam2s_ros.evaluation import davis

H, W = 480, 854  # DAVIS 480p: tolerance ceil(0.008 * 979.6) = 8 px


def square(h, w, y0, x0, size):
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def test_tolerance_at_480p_and_small_images():
    assert davis.boundary_tolerance_px(480, 854) == 8
    assert davis.boundary_tolerance_px(40, 40) == 1  # 0.008 * 56.6 = 0.45 -> 1
    assert davis.boundary_tolerance_px(40, 40, bound_th=3) == 3  # >= 1 means pixels


def test_disk_matches_skimage_definition():
    assert davis.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d2 = davis.disk(2)
    assert d2.shape == (5, 5)
    assert d2.sum() == 13


def test_perfect_prediction():
    gt = square(H, W, 100, 200, 50)
    assert davis.jaccard(gt, gt) == 1.0
    assert davis.f_measure(gt, gt) == 1.0


def test_both_empty_is_one():
    empty = np.zeros((H, W), bool)
    assert davis.jaccard(empty, empty) == 1.0
    assert davis.f_measure(empty, empty) == 1.0


def test_one_empty_is_zero():
    gt = square(H, W, 100, 200, 50)
    empty = np.zeros_like(gt)
    assert davis.jaccard(empty, gt) == 0.0
    assert davis.f_measure(empty, gt) == 0.0
    assert davis.jaccard(gt, empty) == 0.0
    assert davis.f_measure(gt, empty) == 0.0


def test_square_shift_jaccard_exact():
    # 20x20 square shifted 2 px: intersection 18 * 20 = 360, union 400 + 400 - 360 = 440.
    gt = square(H, W, 100, 100, 20)
    pred = square(H, W, 100, 102, 20)
    assert davis.jaccard(pred, gt) == pytest.approx(360 / 440, abs=1e-12)


def test_shift_within_tolerance_gives_f_one():
    gt = square(H, W, 100, 100, 60)
    pred = square(H, W, 105, 104, 60)  # every boundary pixel moves by sqrt(16 + 25) < 8 px
    assert davis.f_measure(pred, gt) == 1.0
    assert davis.jaccard(pred, gt) < 1.0


def test_shift_beyond_tolerance_hand_computed():
    # 40x40 image -> tolerance 1 px, disk(1) = plus shape.
    # GT: rows 0..19 everywhere; its one-pixel boundary (seg2bmap) is row 19, 40 pixels
    # (the image border is not a boundary).
    # Prediction: GT plus rows 20..24 on columns 20..39 (a step). Its boundary: row 19 on
    # columns 0..19 (20 px), column 19 on rows 20..24 (5 px, the background pixels left of
    # the step), row 24 on columns 20..39 (20 px) -> 45 pixels.
    # Precision: prediction boundary within 1 px of row 19 = row 19 (20 px) + (20, 19) -> 21/45.
    # Recall: GT boundary within the plus of a prediction boundary pixel = columns 0..19
    # plus (19, 20), right of (19, 19) -> 21/40.  F = 2PR/(P+R) = 42/85.
    gt = np.zeros((40, 40), bool)
    gt[:20] = True
    pred = gt.copy()
    pred[:25, 20:] = True
    assert davis.seg2bmap(gt).sum() == 40
    assert davis.seg2bmap(pred).sum() == 45
    p, r = davis.boundary_precision_recall(pred, gt)
    assert p == pytest.approx(21 / 45)
    assert r == pytest.approx(21 / 40)
    assert davis.f_measure(pred, gt) == pytest.approx(42 / 85)
    # J: intersection 800, union 800 + 5 * 20 = 900.
    assert davis.jaccard(pred, gt) == pytest.approx(800 / 900)


def test_far_shift_gives_f_zero():
    gt = np.zeros((40, 40), bool)
    gt[:20] = True
    pred = np.zeros_like(gt)
    pred[:23] = True  # boundary 3 rows below the GT's, tolerance 1 px
    assert davis.f_measure(pred, gt) == 0.0


def test_seg2bmap_square():
    # A 3x3 square at rows/cols 2..4: boundary on the background just above/left and on
    # the last object row/column (DAVIS convention).
    bmap = davis.seg2bmap(square(8, 8, 2, 2, 3))
    expected = np.zeros((8, 8), bool)
    expected[1, 1:5] = True  # row above (incl. the diagonal corner)
    expected[1:5, 1] = True  # column left
    expected[4, 2:5] = True  # last row
    expected[2:5, 4] = True  # last column
    assert (bmap == expected).all()


def test_void_pixels_excluded_from_j():
    gt = square(H, W, 100, 100, 20)
    pred = square(H, W, 100, 102, 20)
    void = np.zeros_like(gt)
    void[100:120, 120:122] = True  # the 40 predicted-only pixels
    assert davis.jaccard(pred, gt, void) == pytest.approx(360 / 400)
    void[100:110, 100:122] = True  # plus the top half: inter 180, union 10 rows * 20 = 200
    assert davis.jaccard(pred, gt, void) == pytest.approx(180 / 200)
    everything = np.ones_like(gt)
    assert davis.jaccard(pred, gt, everything) == 1.0  # nothing left to score


def test_void_pixels_excluded_from_f():
    # The step of the hand-computed case lies entirely in void -> perfect boundary.
    gt = np.zeros((40, 40), bool)
    gt[:20] = True
    pred = gt.copy()
    pred[:25, 20:] = True
    void = np.zeros_like(gt)
    void[20:, :] = True
    assert davis.f_measure(pred, gt, void) == 1.0
    assert davis.jaccard(pred, gt, void) == 1.0


def test_size_mismatch_raises():
    with pytest.raises(ValueError, match="differ in size"):
        davis.jaccard(np.zeros((4, 4)), np.zeros((4, 5)))


def test_sequence_drops_first_and_last_frame():
    gt = [square(60, 80, 10, 10, 20)] * 5
    empty = np.zeros((60, 80), bool)
    preds = [empty, gt[1], gt[2], empty, empty]  # first and last are not counted
    res = davis.evaluate_object(preds, gt)
    assert res.frames.tolist() == [1, 2, 3]
    assert res.j.tolist() == [1.0, 1.0, 0.0]
    assert res.J.mean == pytest.approx(2 / 3)
    assert res.F.mean == pytest.approx(2 / 3)
    assert res.jf == pytest.approx(2 / 3)
    assert res.J.recall == pytest.approx(2 / 3)
    kept = davis.evaluate_object(preds, gt, drop_first_last=False)
    assert kept.J.mean == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match=">= 3 frames"):
        davis.evaluate_object(preds[:2], gt[:2])


def test_statistics_decay_bins_like_davis():
    # DAVIS bins for T = 8: ids = round(linspace(1, 8, 5)) - 1 = [0, 2, 3, 5, 7]
    # -> first bin values[0:3], last bin values[5:8].
    values = [1, 1, 1, 0.5, 0.5, 0, 0, 0]
    stats = davis.statistics(values)
    assert stats.decay == pytest.approx(1.0)
    assert stats.mean == pytest.approx(4 / 8)
    assert stats.recall == pytest.approx(3 / 8)
    assert math.isnan(davis.statistics([]).mean)


def test_summary_weighs_objects_equally():
    gt = [square(60, 80, 10, 10, 20)] * 4
    empty = [np.zeros((60, 80), bool)] * 4
    res = {1: davis.evaluate_object(gt, gt), 2: davis.evaluate_object(empty, gt)}
    summary = davis.summarize(res)
    assert (summary.j_mean, summary.f_mean, summary.jf_mean, summary.num_objects) == (0.5, 0.5, 0.5, 2)

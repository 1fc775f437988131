"""J&F of the DAVIS benchmark (region similarity J, boundary accuracy F).

Definitions (Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for Video
Object Segmentation", CVPR 2016, Sec. 3; implementation details follow the DAVIS 2017
evaluation code, ``davis2017-evaluation/davis2017/metrics.py`` and ``evaluation.py``):

* **J** (Jaccard, region IoU) of a predicted mask M and a ground-truth mask G:
  ``J = |M ∩ G| / |M ∪ G|``, counted over non-void pixels; ``J = 1`` when the union is
  empty (both masks empty).
* **F** (contour accuracy): boundaries ``b(M)``, ``b(G)`` are one-pixel boundary maps
  (:func:`seg2bmap`, the DAVIS ``seg2bmap`` of masks with void pixels set to background).
  Boundary pixels match within a tolerance of
  ``bound_pix = ceil(bound_th * sqrt(H^2 + W^2))`` pixels (``bound_th = 0.008``; 8 px at
  854x480), implemented as a dilation with a disk of that radius (:func:`disk`, the
  pixels with ``dx^2 + dy^2 <= r^2``, identical to ``skimage.morphology.disk`` that DAVIS
  uses). Precision ``P = |b(M) ∩ dil(b(G))| / |b(M)|``, recall
  ``R = |b(G) ∩ dil(b(M))| / |b(G)|``, ``F = 2PR / (P + R)`` (0 when P + R = 0).
  Empty cases as in DAVIS: both boundaries empty -> P = R = 1 (F = 1); one of them empty
  -> F = 0.
* **Sequence statistics** per object over frames: mean, recall (fraction of frames with a
  value > 0.5) and decay (mean of the first quarter of frames minus the mean of the last
  quarter, DAVIS ``db_statistics`` bins). In the semi-supervised protocol the first frame
  (the one whose ground truth is given as the prompt) and the last frame are not scored.
* **J&F** = (mean J + mean F) / 2; over several objects, J mean and F mean are first
  averaged over objects (each object counts once, whatever its length).

Masks are [H, W] arrays, non-zero = object; the void mask marks pixels excluded from both J
and F (e.g. unlabeled pixels, CholecSeg8k's 255 class code, DAVIS 2017's 255 label).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

BOUND_TH = 0.008  # DAVIS boundary tolerance, fraction of the image diagonal
RECALL_THRESHOLD = 0.5  # DAVIS "recall": fraction of frames with J (or F) above this
DECAY_BINS = 4  # DAVIS decay: first vs last of 4 temporal bins


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [H, W] mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_same_shape(pred: np.ndarray, gt: np.ndarray, void: Optional[np.ndarray]) -> None:
    shapes = {pred.shape, gt.shape} | ({void.shape} if void is not None else set())
    if len(shapes) != 1:
        raise ValueError(f"masks differ in size: {sorted(shapes)}")


def boundary_tolerance_px(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """DAVIS boundary matching tolerance.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        bound_th: tolerance as a fraction of the image diagonal when < 1; taken as a
            number of pixels when >= 1 (as in DAVIS).

    Returns:
        Radius in pixels: ``ceil(bound_th * sqrt(H^2 + W^2))``, or ``ceil(bound_th)``.
    """
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(math.ceil(bound_th * math.hypot(height, width)))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element (as ``skimage.morphology.disk``).

    Args:
        radius: radius in pixels, >= 0.

    Returns:
        [2r+1, 2r+1] uint8, 1 where ``dx^2 + dy^2 <= r^2``.
    """
    r = int(radius)
    dy, dx = np.ogrid[-r : r + 1, -r : r + 1]
    return (dx * dx + dy * dy <= r * r).astype(np.uint8)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask (DAVIS ``seg2bmap`` at the mask's size).

    A pixel is a boundary pixel when it differs from its east, south or south-east
    neighbour (outside the image counts as background, except that the last row and column
    compare only along the image border), so the boundary lies on the object's last pixels
    at its right/bottom edges and on the first background pixels at its left/top edges.

    Args:
        mask: [H, W] bool (non-zero = object).

    Returns:
        [H, W] bool boundary map.
    """
    seg = _as_bool(mask, "mask")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def jaccard(pred: np.ndarray, gt: np.ndarray, void: Optional[np.ndarray] = None) -> float:
    """Region similarity J (IoU) of one frame.

    Args:
        pred: [H, W] predicted mask (non-zero = object).
        gt: [H, W] ground-truth mask (non-zero = object).
        void: optional [H, W] mask of pixels to ignore (non-zero = void).

    Returns:
        ``|pred ∩ gt| / |pred ∪ gt|`` over non-void pixels, in [0, 1]; 1.0 when the union
        is empty.

    Raises:
        ValueError: the masks are not 2-D or differ in size.
    """
    pred, gt = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    void = _as_bool(void, "void") if void is not None else None
    _check_same_shape(pred, gt, void)
    valid = ~void if void is not None else np.ones_like(gt)
    inter = int(np.count_nonzero(pred & gt & valid))
    union = int(np.count_nonzero((pred | gt) & valid))
    return 1.0 if union == 0 else inter / union


def boundary_precision_recall(
    pred: np.ndarray, gt: np.ndarray, void: Optional[np.ndarray] = None, bound_th: float = BOUND_TH
) -> tuple[float, float]:
    """Boundary precision and recall of one frame (see the module docstring).

    Args:
        pred: [H, W] predicted mask (non-zero = object).
        gt: [H, W] ground-truth mask.
        void: optional [H, W] void mask; void pixels are set to background before the
            boundaries are taken.
        bound_th: tolerance, see :func:`boundary_tolerance_px`.

    Returns:
        (precision, recall), each in [0, 1], with the DAVIS empty-case conventions.

    Raises:
        ValueError: the masks are not 2-D or differ in size.
    """
    pred, gt = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    void = _as_bool(void, "void") if void is not None else None
    _check_same_shape(pred, gt, void)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    pred_b, gt_b = seg2bmap(pred), seg2bmap(gt)
    n_pred, n_gt = int(np.count_nonzero(pred_b)), int(np.count_nonzero(gt_b))
    if n_pred == 0 or n_gt == 0:
        # DAVIS: (1, 0) for an empty prediction, (0, 1) for an empty ground truth, (1, 1) for both.
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    kernel = disk(boundary_tolerance_px(*gt.shape, bound_th=bound_th))
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pred_b & gt_dil) / n_pred
    recall = np.count_nonzero(gt_b & pred_dil) / n_gt
    return float(precision), float(recall)


def f_measure(pred: np.ndarray, gt: np.ndarray, void: Optional[np.ndarray] = None, bound_th: float = BOUND_TH) -> float:
    """Boundary accuracy F of one frame.

    Args:
        pred: [H, W] predicted mask (non-zero = object).
        gt: [H, W] ground-truth mask.
        void: optional [H, W] void mask.
        bound_th: tolerance, see :func:`boundary_tolerance_px`.

    Returns:
        ``2PR / (P + R)`` in [0, 1]; 1.0 when both masks are empty, 0.0 when only one is.

    Raises:
        ValueError: the masks are not 2-D or differ in size.
    """
    precision, recall = boundary_precision_recall(pred, gt, void, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Statistics:
    """DAVIS statistics of one metric of one object over frames.

    Attributes:
        mean: mean over frames (NaN when there are none).
        recall: fraction of frames with a value above 0.5.
        decay: mean of the first temporal quarter minus mean of the last quarter.
    """

    mean: float
    recall: float
    decay: float


def statistics(values: Sequence[float]) -> Statistics:
    """DAVIS ``db_statistics`` of per-frame values.

    Args:
        values: [T] per-frame J or F values.

    Returns:
        :class:`Statistics`; all NaN for T = 0.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.size == 0:
        return Statistics(math.nan, math.nan, math.nan)
    # Bins as in DAVIS: ids = round(linspace(1, T, 5)) - 1, bin i = vals[ids[i] : ids[i+1] + 1].
    ids = (np.round(np.linspace(1, vals.size, DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64)
    bins = [vals[ids[i] : ids[i + 1] + 1] for i in range(DECAY_BINS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[-1]))
    return Statistics(float(np.mean(vals)), float(np.mean(vals > RECALL_THRESHOLD)), decay)


@dataclass(frozen=True)
class ObjectEvaluation:
    """J and F of one object over a sequence.

    Attributes:
        frames: [T] int64 indices (into the input sequence) of the counted frames.
        j: [T] float64 per-frame J.
        f: [T] float64 per-frame F.
        J: statistics of ``j``.
        F: statistics of ``f``.
    """

    frames: np.ndarray
    j: np.ndarray
    f: np.ndarray
    J: Statistics
    F: Statistics

    @property
    def jf(self) -> float:
        """(mean J + mean F) / 2."""
        return (self.J.mean + self.F.mean) / 2.0


def evaluate_object(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    voids: Optional[Sequence[Optional[np.ndarray]]] = None,
    drop_first_last: bool = True,
    bound_th: float = BOUND_TH,
) -> ObjectEvaluation:
    """J and F of one object over a sequence of frames.

    Args:
        preds: T masks [H, W] (non-zero = object); use an all-zero mask for a frame
            without a prediction.
        gts: T ground-truth masks [H, W].
        voids: optional T void masks [H, W] (None entries allowed).
        drop_first_last: semi-supervised protocol: do not score the first frame (the
            prompted one) and the last frame.
        bound_th: boundary tolerance, see :func:`boundary_tolerance_px`.

    Returns:
        :class:`ObjectEvaluation` over the scored frames.

    Raises:
        ValueError: lengths differ, or fewer than 3 frames with ``drop_first_last``.
    """
    n = len(gts)
    if len(preds) != n or (voids is not None and len(voids) != n):
        raise ValueError(f"sequence lengths differ: {len(preds)} predictions, {n} ground truths")
    _check_length(n, drop_first_last)
    frames = range(1, n - 1) if drop_first_last else range(n)
    j = np.full(n, np.nan)
    f = np.full(n, np.nan)
    for t in frames:  # the dropped frames are not scored at all
        void = voids[t] if voids is not None else None
        j[t] = jaccard(preds[t], gts[t], void)
        f[t] = f_measure(preds[t], gts[t], void, bound_th)
    return aggregate(j, f, drop_first_last)


def _check_length(n: int, drop_first_last: bool) -> None:
    if drop_first_last and n < 3:
        raise ValueError(f"dropping the first and last frame needs >= 3 frames, got {n}")
    if n < 1:
        raise ValueError("no frame to score")


def aggregate(j: Sequence[float], f: Sequence[float], drop_first_last: bool = True) -> ObjectEvaluation:
    """Sequence statistics of one object from per-frame values of all its frames.

    Args:
        j: [T] per-frame J of every frame of the sequence (frame 0 = the prompted one).
        f: [T] per-frame F, same frames.
        drop_first_last: do not count frame 0 and frame T-1 (semi-supervised protocol).

    Returns:
        :class:`ObjectEvaluation` over the counted frames.

    Raises:
        ValueError: lengths differ, or fewer than 3 frames with ``drop_first_last``.
    """
    j_all, f_all = np.asarray(j, np.float64), np.asarray(f, np.float64)
    if j_all.shape != f_all.shape or j_all.ndim != 1:
        raise ValueError(f"per-frame J and F must be [T] arrays of equal length, got {j_all.shape}, {f_all.shape}")
    _check_length(len(j_all), drop_first_last)
    frames = np.arange(1, len(j_all) - 1) if drop_first_last else np.arange(len(j_all))
    j_kept, f_kept = j_all[frames], f_all[frames]
    return ObjectEvaluation(frames, j_kept, f_kept, statistics(j_kept), statistics(f_kept))


@dataclass(frozen=True)
class Summary:
    """J&F over several objects (each object weighs the same).

    Attributes:
        j_mean: mean over objects of the per-object mean J.
        f_mean: mean over objects of the per-object mean F.
        jf_mean: (j_mean + f_mean) / 2.
        num_objects: number of objects averaged.
    """

    j_mean: float
    f_mean: float
    jf_mean: float
    num_objects: int


def summarize(objects: Mapping[int, ObjectEvaluation]) -> Summary:
    """Average per-object results as the DAVIS "Global" row does.

    Args:
        objects: ``{object_id: ObjectEvaluation}``.

    Returns:
        :class:`Summary`; NaN means when ``objects`` is empty.
    """
    if not objects:
        return Summary(math.nan, math.nan, math.nan, 0)
    j_mean = float(np.mean([o.J.mean for o in objects.values()]))
    f_mean = float(np.mean([o.F.mean for o in objects.values()]))
    return Summary(j_mean, f_mean, (j_mean + f_mean) / 2.0, len(objects))

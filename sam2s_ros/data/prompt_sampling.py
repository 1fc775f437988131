"""Prompts derived from a ground-truth mask (for making test bags and for evaluation).

Three kinds, as in the SAM 2 / SA-V / SAM2S evaluations:

* ``box``: the mask's tight bounding box (x0, y0, x1, y1) of pixel coordinates, inclusive
  as SAM 2's ``mask_to_box``: a mask covering columns 10..19 gives x0 = 10, x1 = 19 (x0 ==
  x1 for a one-pixel-wide mask).
* ``clicks``: N positive clicks at pixel centres (column, row). The first click is the
  mask pixel farthest from the mask boundary (``cv2.distanceTransform``, L2, exact 5x5
  mask, on the mask padded by one background pixel so that the image border counts as
  boundary; ties go to the first pixel in row-major order). The others are drawn uniformly
  without replacement from the remaining mask pixels with ``numpy.random.default_rng``
  seeded by ``(seed, instrument_id)``, so the result is deterministic per instrument.
* ``mask``: the binary mask itself.

Coordinates follow :mod:`sam2s_ros.tracking.types`: x right, y down, pixel centres at
integer coordinates.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import cv2
import numpy as np

from sam2s_ros.errors import PromptError
from sam2s_ros.tracking.types import PromptInput, PromptMode, mask_bbox

PromptKind = Literal["box", "clicks", "mask"]
PROMPT_KINDS: tuple[str, ...] = ("box", "clicks", "mask")
DEFAULT_CLICKS = 3


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise PromptError(f"a mask must be 2-D [H, W], got shape {mask.shape}")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise PromptError("cannot derive a prompt from an empty mask")
    return mask


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight bounding box of a binary mask.

    Args:
        mask: [H, W] bool (or any dtype, non-zero = object); must not be empty.

    Returns:
        [4] float32 (x0, y0, x1, y1) pixel coordinates, inclusive (x0 = first column,
        x1 = last column; SAM 2's ``mask_to_box``), so 0 <= x0 <= x1 < W, 0 <= y0 <= y1 < H.

    Raises:
        PromptError: the mask is empty or not 2-D.
    """
    x0, y0, x1, y1 = mask_bbox(_check_mask(mask))  # inclusive-exclusive index ranges
    return np.array([x0, y0, x1 - 1, y1 - 1], dtype=np.float32)


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel farthest from the mask boundary (image border counts as boundary).

    Args:
        mask: [H, W] bool; must not be empty.

    Returns:
        (x, y) integer pixel indices (column, row) of that pixel; the first in row-major
        order among equally distant pixels.

    Raises:
        PromptError: the mask is empty or not 2-D.
    """
    mask = _check_mask(mask)
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def sample_clicks(mask: np.ndarray, num_clicks: int = DEFAULT_CLICKS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positive clicks inside a mask (see the module docstring for the rule).

    Args:
        mask: [H, W] bool; must not be empty.
        num_clicks: wanted number of clicks, >= 1; fewer are returned when the mask has
            fewer pixels.
        seed: seed of the random part (clicks 2..N); same inputs give the same clicks.

    Returns:
        points: [N, 2] float32 (x, y) source pixels at pixel centres (column, row).
        labels: [N] int32, all 1 (positive).

    Raises:
        PromptError: empty mask or num_clicks < 1.
    """
    if num_clicks < 1:
        raise PromptError(f"num_clicks must be >= 1, got {num_clicks}")
    mask = _check_mask(mask)
    first = interior_point(mask)
    ys, xs = np.nonzero(mask)
    others = np.flatnonzero(~((xs == first[0]) & (ys == first[1])))
    rng = np.random.default_rng(seed)
    picked = rng.choice(others, size=min(num_clicks - 1, others.size), replace=False) if others.size else others
    cols = np.concatenate([[first[0]], xs[picked]])
    rows = np.concatenate([[first[1]], ys[picked]])
    points = np.stack([cols, rows], axis=1).astype(np.float32)
    return points, np.ones(len(points), dtype=np.int32)


def prompt_from_mask(
    mask: np.ndarray,
    instrument_id: int,
    kind: PromptKind = "box",
    num_clicks: int = DEFAULT_CLICKS,
    seed: int = 0,
    mode: PromptMode = PromptMode.NEW,
) -> PromptInput:
    """One prompt for one instrument from its ground-truth mask.

    Args:
        mask: [H, W] bool ground-truth mask of the instrument; must not be empty.
        instrument_id: id of the instrument, 1..65535.
        kind: ``"box"``, ``"clicks"`` or ``"mask"``.
        num_clicks: clicks for ``kind="clicks"``.
        seed: base seed for ``kind="clicks"``; the generator is seeded with
            ``(seed, instrument_id)``.
        mode: prompt mode (default NEW).

    Returns:
        The prompt: ``box`` set, or ``points``/``labels`` set, or ``mask`` ([H, W] bool).

    Raises:
        PromptError: empty mask, unknown kind or bad instrument id.
    """
    if not 1 <= instrument_id <= 65535:
        raise PromptError(f"instrument_id must be in 1..65535, got {instrument_id}")
    if kind == "box":
        return PromptInput(instrument_id, mode, box=mask_to_box(mask))
    if kind == "clicks":
        points, labels = sample_clicks(mask, num_clicks, seed=_seed_for(seed, instrument_id))
        return PromptInput(instrument_id, mode, points=points, labels=labels)
    if kind == "mask":
        return PromptInput(instrument_id, mode, mask=_check_mask(mask).copy())
    raise PromptError(f"unknown prompt kind {kind!r} (choose from {', '.join(PROMPT_KINDS)})")


def _seed_for(seed: int, instrument_id: int) -> int:
    # One independent, reproducible stream per (seed, instrument): SeedSequence mixes both.
    return int(np.random.SeedSequence([seed, instrument_id]).generate_state(1)[0])


def instrument_ids(labels: np.ndarray, ignore: Sequence[int] = ()) -> list[int]:
    """Instrument ids present in a label image.

    Args:
        labels: [H, W] uint8/uint16 label image, 0 = background.
        ignore: ids to leave out (e.g. a void label such as 255).

    Returns:
        Sorted ids > 0 that occur in ``labels`` and are not in ``ignore``.
    """
    skip = {0, *(int(i) for i in ignore)}
    return [int(i) for i in np.unique(labels) if int(i) not in skip]


def prompts_from_labels(
    labels: np.ndarray,
    kind: PromptKind = "box",
    num_clicks: int = DEFAULT_CLICKS,
    seed: int = 0,
    ids: Optional[Sequence[int]] = None,
    ignore: Sequence[int] = (),
) -> list[PromptInput]:
    """One NEW prompt per instrument of a ground-truth label image.

    Args:
        labels: [H, W] uint8/uint16 label image, 0 = background, k = instrument k.
        kind: see :func:`prompt_from_mask`.
        num_clicks: clicks per instrument for ``kind="clicks"``.
        seed: base seed (see :func:`prompt_from_mask`).
        ids: instruments to prompt; default all of :func:`instrument_ids`. An id that is
            absent from ``labels`` is an error.
        ignore: label values that are not instruments (void).

    Returns:
        Prompts sorted by instrument id.

    Raises:
        PromptError: no instrument in the label image, or a requested id is absent.
    """
    present = instrument_ids(labels, ignore)
    wanted = present if ids is None else sorted(ids)
    if not wanted:
        raise PromptError("the label image holds no instrument (only background)")
    absent = [i for i in wanted if i not in present]
    if absent:
        raise PromptError(f"instrument id(s) {absent} not in the label image (present: {present})")
    return [prompt_from_mask(labels == i, i, kind, num_clicks, seed) for i in wanted]

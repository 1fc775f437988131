"""Plain data that crosses the tracker's boundary (numpy in, numpy out; no ROS, no torch).

Pixel convention (used everywhere in sam2s_ros, the same as image_geometry, OpenCV and SAM
2's predictors): coordinates are pixels of the SOURCE image, x to the right, y down, and the
centre of pixel (column u, row v) is at (u, v), so the image spans [-0.5, W - 0.5] x
[-0.5, H - 0.5]. A click on pixel (u, v) is (x, y) = (u, v). A prompt box is (x0, y0, x1,
y1) with x0 <= x1, y0 <= y1; the box around columns a..b and rows c..d is (a, c, b, d)
(SAM 2's ``mask_to_box``). Bounding boxes of result masks (:func:`mask_bbox`) are index
ranges, inclusive-exclusive: x0 <= u < x1 (the node publishes them as
``sensor_msgs/RegionOfInterest``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

#: half a pixel: how far the image extends beyond the outermost pixel centres
HALF_PIXEL = 0.5


class PromptMode(enum.IntEnum):
    """How a prompt relates to the instrument id (values equal Prompt.msg MODE_*)."""

    NEW = 0  # start tracking a new instrument; error if the id is already tracked
    REFINE = 1  # correct an already tracked instrument on this frame (becomes a conditioning frame)
    REPLACE = 2  # drop the instrument's memory and start it again from this prompt


class ClassSource(enum.IntEnum):
    """Where an instrument's class comes from (values equal InstrumentMask.CLASS_SOURCE_*)."""

    NONE = 0
    PROMPT = 1
    MODEL = 2


@dataclass
class PromptInput:
    """One prompt for one instrument on one frame.

    Attributes:
        instrument_id: caller-chosen id, 1..65535 (0 is background in label images).
        mode: see :class:`PromptMode`.
        points: [N, 2] float32, (x, y) source pixels; N may be 0.
        labels: [N] int32, 1 positive click, 0 negative click.
        box: optional [4] float32 (x0, y0, x1, y1) source pixels.
        mask: optional [H, W] bool of exactly the source size; not combinable with
            points or a box.
        class_id: optional class id from the vocabulary (None = not given).
        class_name: optional class name ("" = not given).
    """

    instrument_id: int
    mode: PromptMode = PromptMode.NEW
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    box: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    class_id: Optional[int] = None
    class_name: str = ""


@dataclass
class InstrumentResult:
    """Tracking output of one instrument on one frame.

    Attributes:
        instrument_id: the caller's id.
        mask: [H, W] bool at source resolution (mask_logits > mask threshold).
        video_logits: the logits at source resolution, or None when the tracker was asked
            not to keep them: a [H, W] float32 array, or an object with ``window(y0, y1, x0,
            x1)`` and ``full()`` that computes them from the decoder's 1/4-resolution logits
            on demand (the tracker's :class:`~sam2s_ros.tracking.upsample.UpsampledLogits`).
            Read them through :attr:`mask_logits` or :meth:`logits_window`.
        predicted_iou: mask-decoder IoU prediction of the chosen mask (~[0, 1]).
        object_score: object-score logit; > 0 means visible.
        bbox: (x0, y0, x1, y1) int pixels of the binary mask, inclusive-exclusive; all 0
            when the mask is empty.
        class_id / class_name / class_score / class_source: see :class:`ClassSource`;
            class_id is -1 and class_name "" when unknown.
        is_conditioning_frame: True when a prompt was applied on this frame.
    """

    instrument_id: int
    mask: np.ndarray
    video_logits: Any
    predicted_iou: float
    object_score: float
    bbox: tuple[int, int, int, int]
    class_id: int = -1
    class_name: str = ""
    class_score: float = 0.0
    class_source: ClassSource = ClassSource.NONE
    is_conditioning_frame: bool = False

    @property
    def mask_logits(self) -> Optional[np.ndarray]:
        """[H, W] float32 logits at source resolution (SAM 2's video-res output: bilinear
        upsampling of the decoder's logits), or None. Computed on first access when the
        tracker kept only the decoder's logits (1280x1024: ~5 ms per instrument on 2 cores)."""
        v = self.video_logits
        return v if v is None or isinstance(v, np.ndarray) else v.full()

    def logits_window(self, y0: int, y1: int, x0: int, x1: int) -> Optional[np.ndarray]:
        """[y1 - y0, x1 - x0] float32 logits of source rows y0..y1-1, columns x0..x1-1, or None
        (only that window is computed when the logits are kept at decoder resolution)."""
        v = self.video_logits
        if v is None or isinstance(v, np.ndarray):
            return None if v is None else v[y0:y1, x0:x1]
        return v.window(y0, y1, x0, x1)

    @property
    def visible(self) -> bool:
        """True when the object score logit is positive (SAM 2's object-appearing test)."""
        return self.object_score > 0.0


@dataclass
class RejectedPrompt:
    """A prompt that track() could not apply, and why (the frame was still tracked)."""

    prompt: PromptInput
    reason: str


@dataclass
class FrameResult:
    """Everything the tracker produced for one frame.

    Attributes:
        frame_index: tracker frame counter (0 for the first frame after start/reset).
        image_hw: (H, W) of the source image in pixels.
        instruments: one result per tracked instrument, sorted by instrument id.
        rejected_prompts: prompts given to track() that were refused.
        timings: seconds spent per stage ("preprocess": resize and normalise the frame,
            "image_encoder", "memory_attention", "mask_decoder", "memory_encoder") and in
            all of ``track`` ("total").
        overlap_owner: optional [H, W] uint8, 0 = no mask, else 1 + the index in
            ``instruments`` of the instrument with the highest mask logit among those whose
            mask covers the pixel (the tracker computes it on its device, so that the label
            image needs no float32 logits on the host); None = resolve from ``mask_logits``.
    """

    frame_index: int
    image_hw: tuple[int, int]
    instruments: list[InstrumentResult]
    rejected_prompts: list[RejectedPrompt] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    overlap_owner: Optional[np.ndarray] = None

    def label_image(self, dtype=np.uint16) -> np.ndarray:
        """[H, W] label image: 0 background, else the instrument id.

        Where masks overlap, the instrument with the higher mask logit wins (or, without
        logits, the higher instrument id). Raises ValueError when dtype is uint8 and an id
        is above 255.
        """
        h, w = self.image_hw
        labels = np.zeros((h, w), dtype=dtype)
        if dtype == np.uint8 and any(r.instrument_id > 255 for r in self.instruments):
            raise ValueError("instrument id above 255 does not fit a mono8 label image")
        if self.overlap_owner is not None:
            ids = np.array([0] + [r.instrument_id for r in self.instruments], dtype=dtype)
            return ids[self.overlap_owner]
        # Each instrument only touches its mask's bounding box (``bbox``, the tight box of
        # ``mask``), and the best score so far is kept for the union of the boxes only: at
        # 1280x1024 with 3 instruments this is ~10x less work than full frames. Selections
        # are products with 0/1 (exact for finite logits): numpy's masked assignments take
        # 5-10x longer on full-frame masks.
        drawn = [r for r in self.instruments if r.bbox[2] > r.bbox[0] and r.bbox[3] > r.bbox[1]]
        if not drawn:
            return labels
        ux0, uy0 = min(r.bbox[0] for r in drawn), min(r.bbox[1] for r in drawn)
        ux1, uy1 = max(r.bbox[2] for r in drawn), max(r.bbox[3] for r in drawn)
        best = np.zeros((uy1 - uy0, ux1 - ux0), np.float32)  # highest score so far, where owned
        owned = np.zeros(best.shape, bool)  # some earlier instrument's mask is set
        for k, r in enumerate(drawn):
            x0, y0, x1, y1 = r.bbox
            window, union = (slice(y0, y1), slice(x0, x1)), (slice(y0 - uy0, y1 - uy0), slice(x0 - ux0, x1 - ux0))
            score = r.logits_window(y0, y1, x0, x1)
            if score is None:
                score = np.float32(r.instrument_id)
            best_w, owned_w = best[union], owned[union]
            take = r.mask[window] & (~owned_w | (score > best_w))
            keep = (~take).view(np.uint8)
            labels_w = labels[window]
            labels_w *= keep
            labels_w += take.view(np.uint8) * labels.dtype.type(r.instrument_id)
            if k == len(drawn) - 1:
                break  # nothing compares with the last one's scores
            best_w *= keep
            best_w += score * take.view(np.uint8)
            owned_w |= take
        return labels


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight bounding box (x0, y0, x1, y1) of a [H, W] mask (non-zero = object).

    Inclusive-exclusive on pixel indices (x0 = first column, x1 = last column + 1); all 0
    when the mask is empty.
    """
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1) if len(xs) else (0, 0, 0, 0)

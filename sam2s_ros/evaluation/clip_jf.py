"""J&F of one tracker configuration on a labelled clip, in process (no ROS).

Used to compare precisions of the same weights (issue #17: bf16 / int8 against fp32) by the
accuracy test and ``benchmarks/eval_precision.py``: every instrument present in the first
frame's label image gets a box prompt (``sam2s_ros.data.prompt_sampling``) on that frame and
nothing after; DAVIS J and F at source resolution, first and last frame not scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from sam2s_ros.data.frames import Clip
from sam2s_ros.data.prompt_sampling import prompts_from_labels
from sam2s_ros.evaluation.davis import ObjectEvaluation, Summary, evaluate_object, summarize


@dataclass
class ClipScore:
    """Result of :func:`score_clip`.

    Attributes:
        objects: {instrument id: ObjectEvaluation}.
        summary: J&F over the objects (DAVIS "Global" row).
        masks: per frame {instrument id: [H, W] bool} as tracked (for agreement checks).
        frame_seconds: wall time of each ``track()`` call.
    """

    objects: dict[int, ObjectEvaluation]
    summary: Summary
    masks: list[dict[int, np.ndarray]]
    frame_seconds: list[float]


def score_clip(tracker, clip: Clip, ids: Optional[Sequence[int]] = None, ignore: Sequence[int] = ()) -> ClipScore:
    """Track ``clip`` with ``tracker`` from box prompts on frame 0 and score it against the labels.

    Args:
        tracker: a fresh ``InstrumentTracker`` (any backend / precision).
        clip: frames and [H, W] label images (0 background, k = object k); frame 0 must be
            labelled, later frames without a label image are not allowed.
        ids: objects to prompt and score (default every id in frame 0's labels).
        ignore: label values that are not objects.

    Returns:
        :class:`ClipScore`.

    Raises:
        ValueError: fewer than 3 frames or a frame without labels; PromptError: an id absent
            from frame 0.
    """
    if len(clip.frames) < 3 or len(clip.labels) != len(clip.frames) or any(lab is None for lab in clip.labels):
        raise ValueError("score_clip needs >= 3 frames, each with a label image")
    prompts = prompts_from_labels(clip.labels[0], kind="box", ids=ids, ignore=ignore)
    wanted = [p.instrument_id for p in prompts]
    masks: list[dict[int, np.ndarray]] = []
    seconds: list[float] = []
    for i, frame in enumerate(clip.frames):
        t0 = time.perf_counter()
        result = tracker.track(frame, prompts if i == 0 else [])
        seconds.append(time.perf_counter() - t0)
        masks.append({r.instrument_id: r.mask for r in result.instruments})
    objects = {}
    for k in wanted:
        preds = [m.get(k, np.zeros(lab.shape, bool)) for m, lab in zip(masks, clip.labels)]
        objects[k] = evaluate_object(preds, [lab == k for lab in clip.labels])
    return ClipScore(objects, summarize(objects), masks, seconds)


__all__ = ["ClipScore", "score_clip"]

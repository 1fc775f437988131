"""Prompt validation and conversion to SAM 2 model inputs.

Source-pixel prompts (see sam2s_ros.tracking.types for the convention) are scaled to the
model's S x S input like SAM 2's video predictor does (``points / (W, H) * S``); a box
becomes two points with labels 2 and 3 placed before the clicks; a mask is resized to
S x S with antialiased bilinear interpolation and thresholded at 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam2s_ros.errors import PromptError
from sam2s_ros.export.contract import BOX_POINTS, MAX_PROMPT_CLICKS, MAX_PROMPT_POINTS
from sam2s_ros.tracking.types import HALF_PIXEL, PromptInput

MAX_POINTS = MAX_PROMPT_CLICKS


def point_count(prompt: PromptInput) -> int:
    """Points the decoder gets for a prompt: clicks + 2 box corners."""
    return int(np.size(prompt.labels)) + (BOX_POINTS if prompt.box is not None else 0)


def check_point_count(prompt: PromptInput, backend=None) -> None:
    """Refuse a prompt with more points than the backend's decoder takes.

    The limit is ``backend.max_prompt_points`` (graph backends: the "points" maximum of
    their TensorRT optimization profile) or contract.MAX_PROMPT_POINTS. Checked before
    the prompt is accepted, so that no instrument is registered that cannot be decoded.

    Raises:
        PromptError: too many clicks + box corners.
    """
    limit = int(getattr(backend, "max_prompt_points", MAX_PROMPT_POINTS))
    n = point_count(prompt)
    if n > limit:
        box = f" + {BOX_POINTS} box corners" if prompt.box is not None else ""
        raise PromptError(
            f"prompt has {n} points ({int(np.size(prompt.labels))} clicks{box}); this backend takes at most {limit}"
        )


def check_geometry(prompt: PromptInput, image_hw: tuple[int, int]) -> None:
    """Check a prompt's points, labels, box and mask against the source image size.

    Raises:
        PromptError: with the reason (NaN / out-of-frame points, label values, empty or
            out-of-frame box, mask of the wrong size or empty, mask mixed with clicks, no
            input at all).
    """
    h, w = image_hw
    if not 1 <= int(prompt.instrument_id) <= 65535:
        raise PromptError(f"instrument_id must be 1..65535, got {prompt.instrument_id}")
    pts = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2) if np.size(prompt.points) else np.zeros((0, 2))
    labels = np.asarray(prompt.labels).reshape(-1)
    if len(pts) != len(labels):
        raise PromptError(f"{len(pts)} points but {len(labels)} labels")
    if len(pts) > MAX_POINTS:
        raise PromptError(f"at most {MAX_POINTS} points per prompt, got {len(pts)}")
    if not np.all(np.isfinite(pts)):
        raise PromptError("prompt points contain NaN or infinite coordinates")
    if len(pts) and not _inside(pts, w, h):
        raise PromptError(
            f"prompt point outside the {w}x{h} image (pixel centres at integer coordinates, "
            f"x in [-0.5, {w - 0.5}], y in [-0.5, {h - 0.5}]): {pts.tolist()}"
        )
    if len(labels) and not np.all(np.isin(labels, (0, 1))):
        raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
    if prompt.box is not None:
        box = np.asarray(prompt.box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.all(np.isfinite(box)):
            raise PromptError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box.tolist()}")
        x0, y0, x1, y1 = box
        if not (x1 >= x0 and y1 >= y0):
            raise PromptError(f"inverted box (x0, y0, x1, y1) = {box.tolist()}: needs x0 <= x1 and y0 <= y1")
        if not _inside(box.reshape(2, 2), w, h):
            raise PromptError(f"box {box.tolist()} outside the {w}x{h} image (x in [-0.5, {w - 0.5}])")
    if prompt.mask is not None:
        mask = np.asarray(prompt.mask)
        if mask.shape != (h, w):
            raise PromptError(f"mask prompt has size {list(mask.shape)} but the image is {h}x{w}")
        if len(pts) or prompt.box is not None:
            raise PromptError("a mask prompt cannot be combined with points or a box")
        if not mask.any():
            raise PromptError("mask prompt is empty")
    elif len(pts) == 0 and prompt.box is None:
        raise PromptError("prompt has no points, box or mask")


def _inside(pts: np.ndarray, w: int, h: int) -> bool:
    """All [N, 2] (x, y) points within the image, whose pixel centres are at integer coordinates."""
    x, y = pts[:, 0], pts[:, 1]
    return bool(
        x.min() >= -HALF_PIXEL and y.min() >= -HALF_PIXEL and x.max() <= w - HALF_PIXEL and y.max() <= h - HALF_PIXEL
    )


def to_model_points(
    prompt: PromptInput, image_hw: tuple[int, int], image_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box corners + clicks in model pixels, scaled as SAM 2's predictors do (``x / W * S``).

    Source coordinates have pixel centres at integers (see sam2s_ros.tracking.types); the
    model coordinates keep that convention (SAM 2's prompt encoder adds 0.5 to reach the
    pixel centre), so a click on source pixel u lands in model pixel ``round(u * S / W)``,
    which lies inside the resized footprint of pixel u while S / W > 0.5.

    Returns:
        coords [1, P, 2] float32 (x, y) in 0..S, labels [1, P] int32 (2/3 box, 1/0 clicks).
    """
    h, w = image_hw
    pts = np.asarray(prompt.points, dtype=np.float32).reshape(-1, 2)
    labels = np.asarray(prompt.labels, dtype=np.int32).reshape(-1)
    if prompt.box is not None:
        pts = np.concatenate([np.asarray(prompt.box, np.float32).reshape(2, 2), pts], axis=0)
        labels = np.concatenate([np.array([2, 3], np.int32), labels])
    coords = torch.from_numpy(pts).to(device)
    coords = coords / torch.tensor([w, h], dtype=torch.float32, device=device) * image_size
    return coords[None], torch.from_numpy(labels).to(device)[None]


def to_model_mask(mask: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """[H, W] bool source mask -> [1, 1, S, S] float32 in {0, 1} (SAM 2 add_new_mask)."""
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]
    m = F.interpolate(m, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (m >= 0.5).float()

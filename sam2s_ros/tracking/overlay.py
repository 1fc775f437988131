"""rgb8 overlay for people: the source image with coloured masks, outlines, ids and class names."""

from __future__ import annotations

import cv2
import numpy as np

from sam2s_ros.tracking.types import FrameResult

# Distinct RGB colours (Tableau 10 + 10 more), chosen by instrument id.
PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
        (174, 199, 232),
        (255, 187, 120),
        (152, 223, 138),
        (255, 152, 150),
        (197, 176, 213),
        (196, 156, 148),
        (247, 182, 210),
        (199, 199, 199),
        (219, 219, 141),
        (158, 218, 229),
    ],
    dtype=np.uint8,
)


def instrument_colour(instrument_id: int) -> tuple[int, int, int]:
    """RGB colour of an instrument id (stable across frames)."""
    r, g, b = PALETTE[(int(instrument_id) - 1) % len(PALETTE)]
    return int(r), int(g), int(b)


def instrument_label(instrument_id: int, class_name: str) -> str:
    """Text drawn next to an instrument: ``"3 grasper"`` or ``"3"``."""
    return f"{instrument_id} {class_name}".strip()


def render_overlay(image: np.ndarray, result: FrameResult, alpha: float = 0.45) -> np.ndarray:
    """Blend each visible instrument's mask over the image and label it.

    Args:
        image: [H, W, 3] uint8 RGB source image (not modified).
        result: tracker output for this image (masks at the same size).
        alpha: mask opacity in [0, 1].

    Returns:
        [H, W, 3] uint8 RGB overlay.
    """
    out = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 800.0)
    thickness = max(1, int(round(2 * scale)))
    for r in result.instruments:
        if not r.mask.any():
            continue
        colour = np.array(instrument_colour(r.instrument_id), dtype=np.float32)
        region = out[r.mask].astype(np.float32)
        out[r.mask] = (region * (1.0 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(r.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), thickness)
        _draw_label(out, instrument_label(r.instrument_id, r.class_name), r.bbox, scale, thickness)
    return out


def _draw_label(out: np.ndarray, text: str, bbox: tuple[int, int, int, int], scale: float, thickness: int) -> None:
    """White text on a dark box at the top-left of ``bbox``, kept inside the image."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, 0.6 * scale, thickness)
    x = int(min(max(bbox[0], 0), max(out.shape[1] - tw - 2, 0)))
    y = int(min(max(bbox[1], th + base + 2), out.shape[0] - 1))
    cv2.rectangle(out, (x, y - th - base - 2), (x + tw + 2, y), (0, 0, 0), cv2.FILLED)
    cv2.putText(out, text, (x + 1, y - base), font, 0.6 * scale, (255, 255, 255), thickness, cv2.LINE_AA)

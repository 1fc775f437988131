#!/usr/bin/env python3
"""Bytes per frame of sam2s_node's outputs at 1080p with 3 instruments: full vs cropped masks.

Serialized sizes (CDR, what DDS sends and rosbag2 stores) of ``InstrumentMaskArray`` with
``mask_format: full`` (before: every mask at source size) and ``cropped`` (the default: each
mask cropped to its roi), and of the mono8 label image, for one 1920x1080 frame with three
instruments drawn as tool shafts entering from the image border (:data:`SHAFTS`). The sizes
are computed, not timed: docs/node_interface.md quotes this script's output, and
test/test_mask_bytes.py checks that the quote matches.

Run: ``.venv/bin/python benchmarks/mask_bytes.py``
"""

from __future__ import annotations

import cv2
import numpy as np

from sam2s_ros import codec
from sam2s_ros.data import bags
from sam2s_ros.tracking.types import FrameResult, InstrumentResult, mask_bbox

WIDTH, HEIGHT = 1920, 1080
#: three instrument shafts: ((x, y) start on the border, (x, y) tip, thickness in pixels)
SHAFTS = (((0, 860), (760, 520), 70), ((1919, 820), (1180, 470), 70), ((900, 0), (1010, 380), 50))


def scene() -> FrameResult:
    """The 1080p frame's tracking result: three instruments, masks at source size."""
    instruments = []
    for i, (start, tip, thickness) in enumerate(SHAFTS, start=1):
        canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.line(canvas, start, tip, 1, thickness)
        mask = canvas.astype(bool)
        instruments.append(InstrumentResult(i, mask, None, 0.9, 5.0, mask_bbox(mask)))
    return FrameResult(0, (HEIGHT, WIDTH), instruments)


def message_bytes() -> dict[str, int]:
    """Serialized bytes: ``masks_full``, ``masks_cropped``, ``label_image`` (mono8)."""
    store = bags.make_typestore()
    types = codec.rosbags_types(store)
    header = codec.make_header(1_700_000_000 * codec.NS_PER_S, "endoscope_left", types)
    result = scene()

    def size(msg, type_name: str) -> int:
        return len(store.serialize_cdr(msg, type_name))

    return {
        "masks_full": size(codec.masks_msg(result, header, 0.0, True, types, "full"), codec.MASK_ARRAY_TYPE),
        "masks_cropped": size(codec.masks_msg(result, header, 0.0, True, types, "cropped"), codec.MASK_ARRAY_TYPE),
        "label_image": size(codec.label_image_msg(result, header, "mono8", types), codec.IMAGE_TYPE),
    }


def report() -> str:
    """The table quoted in docs/node_interface.md (bytes per frame per eye)."""
    b = message_bytes()
    rois = ", ".join(f"{x1 - x0}x{y1 - y0}" for x0, y0, x1, y1 in (r.bbox for r in scene().instruments))
    rows = [
        f"1080p ({WIDTH}x{HEIGHT}), 3 instruments (roi {rois} px), bytes per frame per eye:",
        "",
        "| Output | mask_format: full (before) | mask_format: cropped (default) |",
        "|---|---|---|",
        f"| masks (InstrumentMaskArray) | {b['masks_full']:,} | {b['masks_cropped']:,} |",
        f"| label_image (mono8) | {b['label_image']:,} | {b['label_image']:,} |",
        f"| total | {b['masks_full'] + b['label_image']:,} | {b['masks_cropped'] + b['label_image']:,} |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    print(report())

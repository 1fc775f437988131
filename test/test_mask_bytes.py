"""The bandwidth figure in docs/node_interface.md is benchmarks/mask_bytes.py's output."""

from __future__ import annotations

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def _mask_bytes():
    spec = importlib.util.spec_from_file_location("mask_bytes", REPO / "benchmarks" / "mask_bytes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_quote_the_computed_figure():
    report = _mask_bytes().report()
    docs = (REPO / "docs" / "node_interface.md").read_text()
    assert report in docs, f"docs/node_interface.md is out of date; run benchmarks/mask_bytes.py:\n{report}"


def test_cropped_masks_are_a_fraction_of_full_frame_masks():
    module = _mask_bytes()
    b = module.message_bytes()
    pixels = sum(r.mask.size for r in module.scene().instruments)  # 3 full-frame mono8 masks
    assert b["masks_full"] > pixels  # every mask pixel plus headers
    roi_pixels = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in (r.bbox for r in module.scene().instruments))
    assert roi_pixels < b["masks_cropped"] < roi_pixels + 2_000  # the roi pixels plus fixed overhead
    assert b["masks_cropped"] * 5 < b["masks_full"]
    assert b["label_image"] > module.WIDTH * module.HEIGHT

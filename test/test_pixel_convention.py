"""One pixel convention: pixel centres at integer coordinates (image_geometry, OpenCV, SAM 2).

A click at the centre of a one-pixel object, (x, y) = (column, row), must land on that
object in the model's resized S x S input: the model coordinate from ``to_model_points``
plus the 0.5 that SAM 2's prompt encoder adds (``PromptEncoder._embed_points``) has to lie
in the resized footprint of that source pixel, which cv2.resize (half-pixel centres, as in
``to_model_input``) puts at [u * S / W, (u + 1) * S / W).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from sam2s_ros.errors import PromptError
from sam2s_ros.tracking.preprocess import to_model_input
from sam2s_ros.tracking.prompts import check_geometry, to_model_points
from sam2s_ros.tracking.types import PromptInput

CPU = torch.device("cpu")
# (W, H, S): 1080p and CholecSeg8k downsampled, a small frame upsampled, identity
SIZES = [(1920, 1080, 1024), (854, 480, 512), (64, 48, 256), (512, 512, 512)]
SAM2_ENCODER_SHIFT = 0.5  # SAM 2's PromptEncoder adds 0.5 ("shift to center of pixel")


def _encoder_position(x: float, y: float, w: int, h: int, s: int) -> np.ndarray:
    """Continuous model-input position the prompt encoder embeds for a source click (x, y)."""
    prompt = PromptInput(1, points=np.array([[x, y]], np.float32), labels=np.array([1], np.int32))
    coords, labels = to_model_points(prompt, (h, w), s, CPU)
    assert labels.tolist() == [[1]]
    return coords[0, 0].numpy().astype(np.float64) + SAM2_ENCODER_SHIFT


def _in_footprint(pos: float, u: int, size: int, s: int) -> bool:
    return u * s / size <= pos < (u + 1) * s / size


def test_sam2_prompt_encoder_shifts_points_by_half_a_pixel():
    """The premise of this file, read from the installed SAM 2 (sam2 1.1.0)."""
    from sam2.modeling.sam.prompt_encoder import PromptEncoder

    assert "points = points + 0.5" in inspect.getsource(PromptEncoder._embed_points)


@pytest.mark.parametrize(("w", "h", "s"), SIZES)
def test_click_at_the_centre_of_a_one_pixel_object_lands_on_it(w, h, s):
    rng = np.random.default_rng(w + h + s)
    pixels = [(0, 0), (w - 1, h - 1), (w // 2, h // 3)] + [
        (int(u), int(v)) for u, v in zip(rng.integers(0, w, 40), rng.integers(0, h, 40))
    ]
    for u, v in pixels:
        px, py = _encoder_position(u, v, w, h, s)  # the click on pixel (u, v) is (x, y) = (u, v)
        assert _in_footprint(px, u, w, s), f"x: click on column {u} of {w} embeds at {px:.3f} (S={s})"
        assert _in_footprint(py, v, h, s), f"y: click on row {v} of {h} embeds at {py:.3f} (S={s})"


def test_the_old_half_pixel_convention_misses_on_1080p():
    """Why the convention matters: clicking at (u + 0.5, v + 0.5) misses one-pixel columns of
    a 1920-wide frame at S = 1024 (the position lands in the next pixel's footprint)."""
    w, h, s = 1920, 1080, 1024
    misses = [u for u in range(0, w, 7) if not _in_footprint(_encoder_position(u + 0.5, 0, w, h, s)[0], u, w, s)]
    assert len(misses) > 0.9 * len(range(0, w, 7))


@pytest.mark.parametrize(("w", "h", "s"), [(64, 48, 256), (512, 512, 512)])
def test_the_resized_image_shows_the_object_where_the_click_lands(w, h, s):
    """On the real model input (to_model_input), the model pixel the click falls in is lit by
    the one-pixel object (sizes where the resize keeps a one-pixel object visible)."""
    for u, v in [(0, 0), (w - 1, h - 1), (w // 2 + 3, h // 2 - 5)]:
        image = np.zeros((h, w, 3), np.uint8)
        image[v, u] = 255
        model_input = to_model_input(image, s, CPU)[0, 0].numpy()  # normalised red channel
        background = model_input.min()
        px, py = _encoder_position(u, v, w, h, s)
        k, j = int(np.floor(px)), int(np.floor(py))
        assert model_input[j, k] > background + 1.0, f"pixel ({u}, {v}) -> model ({k}, {j}) is dark"


def test_check_geometry_uses_the_same_convention():
    h, w = 48, 64
    ok = PromptInput(1, points=np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]], np.float32), labels=np.array([1, 1]))
    check_geometry(ok, (h, w))
    for x, y in [(w - 0.4, 3.0), (3.0, h - 0.4), (-0.6, 0.0)]:
        with pytest.raises(PromptError, match="outside"):
            check_geometry(PromptInput(1, points=np.array([[x, y]], np.float32), labels=np.array([1])), (h, w))
    # a box around one pixel column (x0 == x1) is valid: SAM 2's mask_to_box gives such boxes
    check_geometry(PromptInput(1, box=np.array([5, 5, 5, 9], np.float32)), (h, w))
    with pytest.raises(PromptError, match="inverted box"):
        check_geometry(PromptInput(1, box=np.array([6, 5, 5, 9], np.float32)), (h, w))
    with pytest.raises(PromptError, match="outside"):
        check_geometry(PromptInput(1, box=np.array([0, 0, w, 9], np.float32)), (h, w))

"""sam2s_ros.data.prompt_sampling: box, interior point and click sampling from label masks."""

from __future__ import annotations

import numpy as np
import pytest

from sam2s_ros.data.prompt_sampling import interior_point, mask_to_box, prompt_from_mask, sample_clicks
from sam2s_ros.errors import PromptError


@pytest.fixture
def square() -> np.ndarray:
    mask = np.zeros((20, 30), bool)
    mask[5:12, 10:17] = True  # 7 x 7 square
    return mask


def test_box_of_a_square(square):
    # pixel coordinates of the first and last column / row, as SAM 2's mask_to_box
    assert mask_to_box(square).tolist() == [10, 5, 16, 11]


def test_box_of_one_pixel_is_that_pixel():
    one = np.zeros((4, 4), bool)
    one[2, 1] = True
    assert mask_to_box(one).tolist() == [1, 2, 1, 2]


def test_box_matches_sam2_mask_to_box(square):
    import torch
    from sam2.utils.misc import mask_to_box as sam2_mask_to_box

    expected = sam2_mask_to_box(torch.from_numpy(square)[None, None])[0, 0].tolist()
    assert mask_to_box(square).tolist() == expected


def test_interior_point_is_the_centre(square):
    assert interior_point(square) == (13, 8)


def test_interior_point_ties_take_the_first():
    wide = np.zeros((20, 30), bool)
    wide[5:10, 10:21] = True  # 5 x 11: columns 12..18 of row 7 tie at distance 3 -> first one
    assert interior_point(wide) == (12, 7)


def test_image_border_counts_as_boundary():
    edge = np.zeros((20, 30), bool)
    edge[:, :6] = True
    assert interior_point(edge)[0] in (2, 3)


def test_clicks_are_distinct_inside_and_deterministic(square):
    points, labels = sample_clicks(square, 4, seed=1)
    assert points.dtype == np.float32
    assert points.shape == (4, 2)
    assert labels.tolist() == [1, 1, 1, 1]
    assert points[0].tolist() == [13.0, 8.0]  # the centre pixel (column 13, row 8)
    assert all(square[int(y), int(x)] for x, y in points)
    assert np.array_equal(points, np.round(points))  # pixel centres are integer coordinates
    assert len({tuple(p) for p in points.tolist()}) == 4
    np.testing.assert_array_equal(sample_clicks(square, 4, seed=1)[0], points)


def test_fewer_pixels_than_clicks():
    one = np.zeros((4, 4), bool)
    one[2, 1] = True
    assert sample_clicks(one, 3)[0].tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(
    "mask,instrument_id,match",
    [(np.zeros((4, 4), bool), 1, "empty mask"), (np.ones((4, 4), bool), 0, "1..65535")],
    ids=["empty_mask", "id_zero"],
)
def test_bad_prompt_sources_are_refused(mask, instrument_id, match):
    with pytest.raises(PromptError, match=match):
        prompt_from_mask(mask, instrument_id)

"""The readout memory of sam2s_mobile (sam2s_ros.model.readout): memories, readout, prompt, presence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2s_ros.backends.base import AttendedMemory, MemoryPrompt
from sam2s_ros.data import read_rgb
from sam2s_ros.model import stages
from sam2s_ros.model.build import build_random_model
from sam2s_ros.model.readout import (
    ABSENT_SCORE,
    NO_OBJ_SCORE,
    READOUT_KEY_DIM,
    ReadoutMemoryEncoder,
    fit_key_projection,
    init_key_projection,
)
from sam2s_ros.tracking.config import MOBILE_MODEL, TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker

S, G = 128, 8  # model input side, stride-16 grid


def _features(seed: int = 0) -> torch.Tensor:
    """[1, 256, G, G] features whose cells are far apart (random directions)."""
    return torch.randn(1, 256, G, G, generator=torch.Generator().manual_seed(seed))


def _mask_of_cells(cells: list[tuple[int, int]]) -> torch.Tensor:
    """[1, 1, S, S] memory-encoder input (+10 object, -10 background) covering whole grid cells (row, col)."""
    m = torch.full((1, 1, S, S), -10.0)
    for r, c in cells:
        m[..., r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] = 10.0
    return m


def _stage(seed: int = 0):
    sam = build_random_model(MOBILE_MODEL, S, seed=seed)
    return sam, stages.MemoryReadoutStage(sam, G), stages.MemoryEncoderStage(sam)


def _readout(stage, feat, mem_feats, valid):
    return stage(feat, None, mem_feats, None, None, valid, None, None, None)


def test_memory_holds_unit_keys_and_the_mask_on_the_grid():
    enc = ReadoutMemoryEncoder()
    feat = _features()
    mask = _mask_of_cells([(2, 3), (2, 4)])
    mask[..., 100:104, 40:44] = 10.0  # one decoder-grid pixel (4x4) of a thin object in cell (6, 2)
    mem = enc(feat, mask)["vision_features"]
    assert mem.shape == (1, 64, G, G)
    norms = mem[0, :READOUT_KEY_DIM].norm(dim=0)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    value = mem[0, READOUT_KEY_DIM]
    expected = torch.zeros(G, G)
    expected[2, 3] = expected[2, 4] = expected[6, 2] = 1.0
    assert torch.equal(value, expected)


def test_readout_of_a_remembered_frame_prompts_its_object():
    """The current frame equals the remembered one: the readout finds the remembered cells,
    the box spans them, the click is inside and the mask prompt is positive only there."""
    _, readout, encoder = _stage()
    feat = _features()
    cells = [(2, 3), (2, 4), (3, 3), (3, 4)]
    mem, _ = encoder(feat, _mask_of_cells(cells), torch.ones(1))
    pix, coords, labels, mask, present = _readout(readout, feat, mem[:, None], torch.ones(1, 1, dtype=torch.bool))
    assert torch.equal(pix, feat)  # the decoder sees the image features unchanged
    assert bool(present[0])
    assert labels.tolist() == [[1, 2, 3]]
    click, top_left, bottom_right = coords[0].tolist()
    assert top_left == [3 * 16.0, 2 * 16.0]
    assert bottom_right == [5 * 16.0, 4 * 16.0]
    assert 48 <= click[0] <= 80
    assert 32 <= click[1] <= 64
    assert mask.shape == (1, 1, S // 4, S // 4)
    assert float(mask[0, 0, 12, 14]) > 0
    assert float(mask[0, 0, 28, 2]) < 0


def test_an_empty_memory_finds_nothing():
    _, readout, encoder = _stage()
    feat = _features()
    mem, _ = encoder(feat, torch.full((1, 1, S, S), -10.0), torch.ones(1))
    _, _, labels, _, present = _readout(readout, feat, mem[:, None], torch.ones(1, 1, dtype=torch.bool))
    assert not bool(present[0])
    assert labels.tolist() == [[-1, -1, -1]]


def test_an_absent_object_writes_no_value():
    _, _, encoder = _stage()
    mem, _ = encoder(_features(), _mask_of_cells([(1, 1)]), torch.tensor([-3.0]))
    assert float(mem[0, READOUT_KEY_DIM].abs().sum()) == 0.0


def test_padding_frames_do_not_change_the_readout():
    _, readout, encoder = _stage()
    feat = _features()
    mem, _ = encoder(feat, _mask_of_cells([(4, 4)]), torch.ones(1))
    junk = torch.randn(1, 1, 64, G, G) * 5
    alone = _readout(readout, feat, mem[:, None], torch.ones(1, 1, dtype=torch.bool))
    padded = _readout(readout, feat, torch.cat([mem[:, None], junk], 1), torch.tensor([[True, False]]))
    for a, b in zip(alone, padded):
        assert torch.equal(a, b)


def test_key_fit_keeps_the_variance_of_low_rank_features():
    gen = torch.Generator().manual_seed(0)
    cells = torch.randn(4000, 12, generator=gen) @ torch.randn(12, 256, generator=gen)  # rank 12
    basis, kept = fit_key_projection(cells)
    assert basis.shape == (256, READOUT_KEY_DIM)
    assert torch.allclose(basis.T @ basis, torch.eye(READOUT_KEY_DIM), atol=1e-4)  # orthonormal directions
    assert kept > 0.999
    enc = ReadoutMemoryEncoder()
    init_key_projection(enc, basis)
    assert torch.equal(enc.out_proj.weight[:READOUT_KEY_DIM, :256, 0, 0], basis.T)


@pytest.mark.shared_data
def test_tracker_empties_the_mask_where_the_readout_finds_nothing(shared_dir):
    frame = read_rgb(shared_dir / "data" / "cholecseg8k_clip" / "frames" / "00000.png")
    cfg = TrackerConfig(model_size=MOBILE_MODEL, image_size=S, allow_random_weights=True, seed=0)
    tracker = InstrumentTracker.from_config(cfg)
    from sam2s_ros.tracking.preprocess import to_model_input

    feats = tracker.backend.encode_image(to_model_input(frame, S, tracker.device))
    prompt = MemoryPrompt(
        torch.tensor([[[40.0, 40.0], [20.0, 20.0], [60.0, 60.0]]] * 2),
        torch.tensor([[1, 2, 3], [-1, -1, -1]], dtype=torch.int32),
        torch.full((2, 1, S // 4, S // 4), 5.0),
        torch.tensor([True, False]),
    )
    out = tracker._decode_tracked(AttendedMemory(feats.feat_s2.expand(2, -1, -1, -1), prompt), feats)
    assert float(out.object_score_logits[1]) == ABSENT_SCORE
    assert float(out.object_score_logits[0]) > 0
    assert bool((out.low_res_masks[1] == NO_OBJ_SCORE).all())
    assert not bool((out.low_res_masks[0] == NO_OBJ_SCORE).all())
    up = F.interpolate(out.low_res_masks[1:], (S, S), mode="bilinear", align_corners=False)
    assert not np.any(up.numpy() > 0)

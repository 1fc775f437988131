"""Streaming tracker behaviour on real frames with random weights (hiera-tiny, 128 px input)."""

from __future__ import annotations

import dataclasses

import numpy as np
import psutil
import pytest
import torch

from sam2s_ros.errors import ConfigError, FrameError, PromptError, StateFileError, UnknownInstrumentError
from sam2s_ros.tracking.config import TrackerConfig
from sam2s_ros.tracking.types import ClassSource, PromptInput, PromptMode

from tracker_fixtures import box, click, load_frames, small_tracker


@pytest.fixture(scope="module")
def frames(shared_dir):
    return load_frames(shared_dir, 72)


def _ids(result):
    return [r.instrument_id for r in result.instruments]


def test_outputs_have_source_resolution_and_consistent_fields(frames):
    tr = small_tracker()
    res = tr.track(frames[0], [click(1, 430, 300, class_id=2), box(2, 100, 80, 300, 260, class_name="other")])
    assert _ids(res) == [1, 2]
    assert res.frame_index == 0
    assert res.image_hw == (480, 854)
    for r in res.instruments:
        assert r.mask.shape == (480, 854)
        assert r.mask.dtype == bool
        assert r.mask_logits.shape == (480, 854)
        assert r.mask_logits.dtype == np.float32
        assert np.array_equal(r.mask, r.mask_logits > 0)
        assert r.is_conditioning_frame
        x0, y0, x1, y1 = r.bbox
        if r.mask.any():
            ys, xs = np.nonzero(r.mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    one, two = res.instruments
    assert (one.class_id, one.class_name, one.class_source) == (2, "prograsp_forceps", ClassSource.PROMPT)
    assert (two.class_id, two.class_name, two.class_source) == (7, "other", ClassSource.PROMPT)
    labels = res.label_image()
    assert labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert np.array_equal(labels > 0, one.mask | two.mask)
    nxt = tr.track(frames[1])
    assert nxt.frame_index == 1
    assert not any(r.is_conditioning_frame for r in nxt.instruments)
    assert set(res.timings) >= {"preprocess", "image_encoder", "mask_decoder", "memory_encoder", "total"}
    assert "memory_attention" in nxt.timings


def test_add_remove_refine_mid_stream(frames):
    tr = small_tracker()
    tr.track(frames[0], [click(1, 430, 300)])
    tr.track(frames[1])
    res = tr.track(frames[2], [box(5, 50, 50, 200, 200)])  # added while 1 keeps tracking
    assert _ids(res) == [1, 5]
    assert [r.is_conditioning_frame for r in res.instruments] == [False, True]
    res = tr.track(
        frames[3],
        [
            PromptInput(
                1,
                PromptMode.REFINE,
                points=np.array([[430, 300], [100, 400]], np.float32),
                labels=np.array([1, 0], np.int32),
            )
        ],
    )
    assert res.instruments[0].is_conditioning_frame
    assert tr.memory_sizes()[1]["cond"] == 2
    tr.remove_instrument(5)
    res = tr.track(frames[4])
    assert _ids(res) == [1]
    res = tr.track(frames[5], [click(5, 300, 200)])  # the id comes back as a new instrument
    assert _ids(res) == [1, 5]
    assert tr.memory_sizes()[5]["cond"] == 1
    gt = np.zeros((480, 854), bool)
    gt[200:400, 300:600] = True
    res = tr.track(frames[6], [PromptInput(5, PromptMode.REPLACE, mask=gt)])
    assert tr.memory_sizes()[5] == {"cond": 1, "short_term": 0, "long_term": 0, "candidates": 0, "pointers": 0}
    replaced = res.instruments[1].mask
    assert (replaced & gt).sum() / (replaced | gt).sum() > 0.95


def test_refinement_changes_the_mask_and_mask_prompt_is_used_as_output(frames):
    tr = small_tracker()
    tr.track(frames[0], [click(1, 430, 300)])
    base = small_tracker()
    base.track(frames[0], [click(1, 430, 300)])
    refined = tr.track(
        frames[1],
        [PromptInput(1, PromptMode.REFINE, points=np.array([[50, 50]], np.float32), labels=np.array([0], np.int32))],
    ).instruments[0]
    plain = base.track(frames[1]).instruments[0]
    assert not np.allclose(refined.mask_logits, plain.mask_logits)
    gt = np.zeros((480, 854), bool)
    gt[100:300, 200:500] = True
    res = tr.track(frames[2], [PromptInput(1, PromptMode.REFINE, mask=gt)]).instruments[0]
    iou = (res.mask & gt).sum() / (res.mask | gt).sum()
    assert iou > 0.95
    assert res.predicted_iou == 1.0
    assert res.object_score > 0


def test_instrument_that_disappears_and_comes_back(frames):
    tr = small_tracker()
    head = tr.backend.sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    tr.track(frames[0], [click(1, 430, 300)])
    with torch.no_grad():
        saved = head.bias.clone()
        head.bias.fill_(-1e4)  # the model now says "instrument absent" on every tracked frame
    gone = [tr.track(f).instruments[0] for f in frames[1:9]]
    assert all(not r.visible and not r.mask.any() and r.bbox == (0, 0, 0, 0) for r in gone)
    sizes = tr.memory_sizes()[1]
    assert sizes["short_term"] == 0
    assert sizes["pointers"] == 0
    with torch.no_grad():
        head.bias.copy_(saved + 1e4)  # visible again
    back = [tr.track(f).instruments[0] for f in frames[9:12]]
    assert all(r.visible and r.mask.any() for r in back)
    assert tr.memory_sizes()[1]["short_term"] == 3


def test_save_load_gives_identical_next_frame_masks(frames, tmp_path):
    tr = small_tracker(iou_threshold=0.0, candidate_pool_size=2)
    tr.track(frames[0], [click(1, 430, 300, class_id=1), box(2, 100, 80, 300, 260)])
    for f in frames[1:12]:
        tr.track(f)
    path = str(tmp_path / "state.pt")
    tr.save_state(path)
    expected = tr.track(frames[12])
    fresh = small_tracker(iou_threshold=0.0, candidate_pool_size=2)
    assert fresh.load_state(path) == [1, 2]
    assert fresh.frame_index == 12
    got = fresh.track(frames[12])
    assert fresh.memory_sizes() == tr.memory_sizes()
    assert tr.memory_sizes()[1]["long_term"] > 0
    for a, b in zip(expected.instruments, got.instruments):
        assert np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.mask_logits, b.mask_logits)
        assert (a.class_id, a.class_source) == (b.class_id, b.class_source)


def test_load_state_refuses_bad_files(tmp_path):
    tr = small_tracker()
    with pytest.raises(StateFileError, match="does not exist"):
        tr.load_state(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(StateFileError, match="corrupt"):
        tr.load_state(str(tmp_path / "junk.pt"))
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(StateFileError, match="not a sam2s_ros tracker state"):
        tr.load_state(str(tmp_path / "other.pt"))
    other = small_tracker(image_size=160)
    other.save_state(str(tmp_path / "160.pt"))
    with pytest.raises(StateFileError, match="image_size"):
        tr.load_state(str(tmp_path / "160.pt"))


def test_memory_bounded_over_300_frames(frames):
    tr = small_tracker(iou_threshold=0.0)
    proc = psutil.Process()
    tr.track(frames[0], [click(1, 430, 300), box(2, 100, 80, 300, 260)])
    sizes, rss = [], []
    for t in range(1, 300):
        tr.track(frames[t % len(frames)])
        sizes.append(tr.memory_sizes())
        rss.append(proc.memory_info().rss)
    # after warm-up every bank holds a fixed number of memories (the candidate pool cycles below its cap)
    fixed = [{i: {k: v for k, v in s[i].items() if k != "candidates"} for i in s} for s in sizes]
    assert all(f == fixed[-1] for f in fixed[60:])
    assert all(s[i]["candidates"] < tr.cfg.divemem.candidate_pool_size for s in sizes for i in s)
    assert sizes[-1][1]["short_term"] == 6
    assert sizes[-1][1]["long_term"] == 3
    # resident memory does not trend upward: the last 100 frames stay within 25 MB of frames 100-150
    base = np.median(rss[100:150])
    assert max(rss[-100:]) - base < 25 * 2**20, f"RSS grew {(max(rss[-100:]) - base) / 2**20:.1f} MB"


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((10, 10), np.uint8), "shape"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy"),
    ],
)
def test_bad_frames_raise_frame_error(image, message):
    tr = small_tracker()
    with pytest.raises(FrameError, match=message):
        tr.track(image)
    assert tr.frame_index == 0


@pytest.mark.parametrize(
    "prompt, error, message",
    [
        (PromptInput(1, points=np.array([[np.nan, 3.0]], np.float32), labels=np.array([1])), PromptError, "NaN"),
        (PromptInput(1, points=np.array([[900.0, 3.0]], np.float32), labels=np.array([1])), PromptError, "outside"),
        (PromptInput(1, points=np.array([[9.0, 3.0]], np.float32), labels=np.array([5])), PromptError, "labels"),
        (PromptInput(1, box=np.array([60, 50, 50, 80], np.float32)), PromptError, "inverted box"),
        (PromptInput(1, mask=np.ones((10, 10), bool)), PromptError, "size"),
        (PromptInput(1, mask=np.zeros((480, 854), bool)), PromptError, "empty"),
        (PromptInput(1), PromptError, "no points"),
        (PromptInput(0, box=np.array([1, 1, 9, 9], np.float32)), PromptError, "instrument_id"),
        (PromptInput(1, box=np.array([1, 1, 9, 9], np.float32), class_id=99), PromptError, "class_id"),
        (
            PromptInput(7, PromptMode.REFINE, box=np.array([1, 1, 9, 9], np.float32)),
            UnknownInstrumentError,
            "not tracked",
        ),
    ],
)
def test_bad_prompts_are_refused_with_reasons(frames, prompt, error, message):
    tr = small_tracker()
    with pytest.raises(error, match=message):
        tr.check_prompt(prompt, (480, 854))
    res = tr.track(frames[0], [prompt, click(2, 10, 10)])
    assert _ids(res) == [2]
    assert len(res.rejected_prompts) == 1
    assert message.lower() in res.rejected_prompts[0].reason.lower()


def test_instrument_limits_and_unknown_ids(frames):
    tr = small_tracker()
    tr.cfg.max_instruments = 2
    res = tr.track(frames[0], [click(1, 10, 10), click(2, 20, 20), click(3, 30, 30), click(1, 40, 40)])
    assert _ids(res) == [1, 2]
    assert [r.prompt.instrument_id for r in res.rejected_prompts] == [3, 1]
    assert "max_instruments" in res.rejected_prompts[0].reason
    with pytest.raises(PromptError, match="already tracked"):
        tr.check_prompt(click(1, 5, 5), (480, 854))
    with pytest.raises(UnknownInstrumentError, match="not tracked"):
        tr.remove_instrument(42)
    tr.reset()
    assert tr.instrument_ids == []
    assert tr.frame_index == 0


@pytest.mark.parametrize("batching", ["batched", "per_instrument"])
def test_batching_with_padded_memories_equals_tracking_alone(frames, batching):
    """Instruments with different memory sizes share one batch (padded, masked keys), or go
    through memory attention one by one, and get the same masks as when each is tracked alone."""
    both, alone_1, alone_2 = small_tracker(), small_tracker(), small_tracker()
    both.cfg = dataclasses.replace(both.cfg, memory_attention_batching=batching)
    calls = []
    attend = both.backend.attend_memory
    both.backend.attend_memory = lambda feats, memory: calls.append(memory.mem_feats.shape[0]) or attend(feats, memory)
    both.track(frames[0], [click(1, 430, 300)])
    alone_1.track(frames[0], [click(1, 430, 300)])
    alone_2.track(frames[0])
    for t in (1, 2):
        both.track(frames[t])
        alone_1.track(frames[t])
        alone_2.track(frames[t])
    both.track(frames[3], [box(2, 100, 80, 300, 260)])
    alone_1.track(frames[3])
    alone_2.track(frames[3], [box(2, 100, 80, 300, 260)])
    for t in (4, 5, 6):
        res = both.track(frames[t])
        sizes = both.memory_sizes()
        assert sizes[1]["short_term"] != sizes[2]["short_term"]  # really padded
        ref = {1: alone_1.track(frames[t]).instruments[0], 2: alone_2.track(frames[t]).instruments[0]}
        for r in res.instruments:
            assert np.abs(r.mask_logits - ref[r.instrument_id].mask_logits).max() < 1e-4
    assert calls[-1] == (2 if batching == "batched" else 1)
    assert len(calls) == (6 if batching == "batched" else 9)


def test_unknown_memory_attention_batching_is_refused():
    cfg = TrackerConfig(allow_random_weights=True, memory_attention_batching="sometimes")
    with pytest.raises(ConfigError, match="memory_attention_batching must be one of"):
        cfg.validate()


def test_label_image_resolves_overlaps_inside_each_bbox_like_the_full_frame_rule():
    """label_image works inside each mask's bbox; it must equal the full-frame rule (higher logit wins,
    else higher id) on overlapping masks, with and without logits."""
    from sam2s_ros.tracking.types import FrameResult, InstrumentResult, mask_bbox

    rng = np.random.default_rng(3)
    h, w = 120, 160
    for keep_logits in (True, False):
        insts = []
        for i in range(3):
            logits = rng.normal(size=(h, w)).astype(np.float32) * 4
            mask = np.zeros((h, w), bool)
            mask[20 + 10 * i : 90, 30 + 15 * i : 120] = True  # all three overlap
            mask &= logits > -2
            insts.append(InstrumentResult(i + 1, mask, logits if keep_logits else None, 1.0, 1.0, mask_bbox(mask)))
        insts.append(InstrumentResult(9, np.zeros((h, w), bool), None, 1.0, -1.0, (0, 0, 0, 0)))  # empty mask
        expected = np.zeros((h, w), np.uint16)
        best = np.full((h, w), -np.inf, np.float32)
        for r in insts:
            score = r.mask_logits if r.mask_logits is not None else np.full((h, w), r.instrument_id, np.float32)
            take = r.mask & (score > best)
            expected[take], best[take] = r.instrument_id, score[take]
        got = FrameResult(0, (h, w), insts).label_image()
        assert len(np.unique(got)) == 4  # background and three ids: the overlap is really resolved
        np.testing.assert_array_equal(got, expected)

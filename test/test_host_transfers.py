"""The tracker's per-frame path is device-resident: one host copy per frame, by construction.

Issue #14 item 7. No GPU is needed: on the CPU every tensor-to-host conversion
(``item``, ``cpu``, ``numpy``, ``tolist``, ``float()``, ``int()``, ``bool()``) is counted
during one steady-state frame. On a GPU each of these is a blocking copy; here they are
counted wherever they happen, and everything must go through ``transfer.to_host`` (one
``.cpu()`` of a packed buffer on a GPU, see test_packed_copy_*), a constant number of
times however many instruments and memory frames. Index tensors come from a per-layout
cache (no uploads in steady state). The GPU speed-up itself is measured by
scripts/gpu_verify.sh, not here.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from sam2s_ros.tracking import memory_bank, transfer
from sam2s_ros.tracking import tracker as tracker_mod
from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig
from sam2s_ros.tracking.memory_bank import InstrumentMemory, build_memory_inputs, select_long_term
from sam2s_ros.tracking.tracker import InstrumentTracker, fill_holes

from tracker_fixtures import box, load_frames

HOST_CONVERSIONS = ("item", "cpu", "numpy", "tolist", "__float__", "__int__", "__bool__", "__index__")
#: per frame: the results, one DiveMem selection (frames where a pool fills), fill_holes
MAX_TO_HOST_CALLS = 3
BOXES = [(100, 80, 300, 260), (250, 150, 500, 400), (400, 100, 700, 300)]


@pytest.fixture(scope="module")
def frames(shared_dir):
    return load_frames(shared_dir, 12)


def _config(num_maskmem: int = 3, **kw) -> TrackerConfig:
    # small pools: DiveMem selections happen within a few frames
    mem = DiveMemConfig(
        num_maskmem=num_maskmem, max_obj_ptrs=3, long_term_frames=1, candidate_pool_size=2, iou_threshold=0.0
    )
    return TrackerConfig(model_size="tiny", image_size=128, allow_random_weights=True, divemem=mem, **kw)


class _HostCounter:
    """Counts tensor -> host conversions outside ``transfer.to_host`` and the to_host calls,
    and ``torch.tensor`` calls that create device tensors (uploads)."""

    def __init__(self, monkeypatch):
        self.outside = collections.Counter()
        self.to_host_calls: list[list[tuple]] = []
        self.uploads = 0
        self._inside = 0
        for name in HOST_CONVERSIONS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        to_host, tensor = transfer.to_host, torch.tensor

        def counted_to_host(*tensors):
            self.to_host_calls.append([(tuple(t.shape), t.dtype) for t in tensors])
            self._inside += 1
            try:
                return to_host(*tensors)
            finally:
                self._inside -= 1

        def counted_tensor(*a, **kw):
            self.uploads += kw.get("device") is not None
            return tensor(*a, **kw)

        monkeypatch.setattr(transfer, "to_host", counted_to_host)
        monkeypatch.setattr(torch, "tensor", counted_tensor)

    def _wrap(self, name, original):
        def wrapped(t, *a, **kw):
            if not self._inside:
                self.outside[name] += 1
            return original(t, *a, **kw)

        return wrapped


def _run(frames, n_instruments: int, n_frames: int, **kw) -> InstrumentTracker:
    tr = InstrumentTracker.from_config(_config(**kw))
    tr.track(frames[0], [box(i + 1, *BOXES[i]) for i in range(n_instruments)])
    for f in frames[1:n_frames]:
        tr.track(f)
    return tr


@pytest.mark.parametrize("n_instruments", [1, 3])
@pytest.mark.parametrize("num_maskmem", [3, 7])
def test_steady_state_frame_copies_to_host_once(frames, monkeypatch, n_instruments, num_maskmem):
    """1 or 3 instruments, 2 or 6 frame windows: no conversion outside to_host, which is
    called a constant number of times, with the masks, owners and a [B, 2] score table."""
    warm = num_maskmem + 3  # window full, first long-term frame selected: a steady layout
    tr = _run(frames, n_instruments, warm, fill_hole_area=8, return_mask_logits=False, num_maskmem=num_maskmem)
    tr.track(frames[warm])  # the memory layout of the measured frame is cached now
    sizes_before = tr.memory_sizes()
    counter = _HostCounter(monkeypatch)
    res = tr.track(frames[warm + 1])
    monkeypatch.undo()
    assert len(res.instruments) == n_instruments
    for sizes in sizes_before.values():
        assert sizes["short_term"] == num_maskmem - 1
        assert sizes["long_term"] == 1
    assert dict(counter.outside) == {}, "host conversions outside transfer.to_host"
    assert counter.uploads == 0, "torch.tensor(..., device=...) in a steady-state frame"
    assert 2 <= len(counter.to_host_calls) <= MAX_TO_HOST_CALLS  # fill_holes + results (+ a selection)
    results_call = next(c for c in counter.to_host_calls if len(c) == 3)
    assert results_call == [
        ((n_instruments, 480, 854), torch.bool),
        ((n_instruments, 2), torch.float32),
        ((480, 854), torch.uint8),
    ]
    assert res.overlap_owner is not None
    for r in res.instruments:
        assert r.mask_logits is None
        assert r.mask.dtype == bool
        assert r.mask.shape == (480, 854)


def test_logits_on_the_host_copy_only_decoder_logits(frames, monkeypatch):
    """return_mask_logits (the CPU default): the results call copies the [B, h, w] decoder
    logits and the score table, not [B, H, W] masks; masks come from host windows."""
    tr = _run(frames, 3, 6, fill_hole_area=8, return_mask_logits=True)
    tr.track(frames[6])
    counter = _HostCounter(monkeypatch)
    res = tr.track(frames[7])
    monkeypatch.undo()
    assert dict(counter.outside) == {}, "host conversions outside transfer.to_host"
    low = tr.image_size // 4
    assert 1 <= len(counter.to_host_calls) <= MAX_TO_HOST_CALLS
    assert [((3, low, low), torch.float32), ((3, 2), torch.float32)] in counter.to_host_calls
    assert not any(shape[-2:] == (480, 854) for call in counter.to_host_calls for shape, _ in call)
    assert res.overlap_owner is None
    for r in res.instruments:
        assert np.array_equal(r.mask, r.mask_logits > 0)


def test_divemem_selections_of_all_instruments_share_one_copy(frames, monkeypatch):
    """Frames where several candidate pools fill: still one to_host for all selections."""
    tr = _run(frames, 3, 2)
    counter = _HostCounter(monkeypatch)
    selections = []
    for f in frames[2:10]:
        before = {i: s["long_term"] for i, s in tr.memory_sizes().items()}
        counter.to_host_calls.clear()
        tr.track(f)
        grew = sum(s["long_term"] > before[i] for i, s in tr.memory_sizes().items())
        selections.append((grew, len(counter.to_host_calls)))
        assert dict(counter.outside) == {}
    monkeypatch.undo()
    assert any(grew >= 2 for grew, _ in selections), f"no frame with several selections: {selections}"
    for grew, calls in selections:
        assert calls <= 2, selections  # results + at most one batched selection


def test_batched_selection_equals_immediate_selection():
    """add_tracked(select=False) + select_long_term picks exactly what add_tracked picks."""
    cfg = DiveMemConfig(num_maskmem=2, long_term_frames=2, candidate_pool_size=3, iou_threshold=0.0)
    gen = torch.Generator().manual_seed(0)
    writes = [(t, torch.randn(64, 4, 4, generator=gen), torch.randn(256, generator=gen)) for t in range(1, 30)]
    cond = torch.randn(64, 4, 4, generator=gen)

    def long_term_frames(select_now: bool) -> list[list[int]]:
        mems = [InstrumentMemory(cfg) for _ in range(3)]
        for m in mems:
            m.add_conditioning(0, cond, writes[0][2], 1.0, 1.0)
        for t, feat, ptr in writes:
            for k, m in enumerate(mems):
                m.add_tracked(t, feat.roll(k, 0), ptr, 1.0, 0.9, select=select_now)
            if not select_now:
                assert all(len(m.candidates) <= cfg.candidate_pool_size for m in mems)
                select_long_term(mems)
            assert not any(m.selection_pending for m in mems)
        return [[e.frame_idx for e in m.long_term] for m in mems]

    batched = long_term_frames(False)
    assert batched == long_term_frames(True)
    assert all(len(p) == 2 for p in batched)


def _reference_memory_inputs(memories, frame_idx, feat_hw, max_obj_ptrs):
    """The per-slot padding loop build_memory_inputs replaced (values must not change)."""
    gathered = [m.gather(frame_idx) for m in memories]
    b, n_f, n_p = len(memories), max(len(g[0]) for g in gathered), max(len(g[1]) for g in gathered)
    mem_feats = torch.zeros(b, n_f, 64, feat_hw, feat_hw)
    tpos = torch.zeros(b, n_f, dtype=torch.int64)
    mem_valid = torch.zeros(b, n_f, dtype=torch.bool)
    ptrs = torch.zeros(b, max(n_p, 1), 256)
    ptr_pos = torch.zeros(b, max(n_p, 1))
    ptr_valid = torch.zeros(b, max(n_p, 1), dtype=torch.bool)
    t_diff_max = max(max_obj_ptrs - 1, 1)
    for row, (fr, pointers) in enumerate(gathered):
        for j, (entry, t_pos) in enumerate(fr):
            mem_feats[row, j] = entry.maskmem.float()
            tpos[row, j] = memory_bank.MODEL_NUM_MASKMEM - t_pos - 1
            mem_valid[row, j] = True
        for j, (dist, ptr) in enumerate(pointers):
            ptrs[row, j], ptr_pos[row, j], ptr_valid[row, j] = ptr, dist / t_diff_max, True
    return mem_feats, tpos, mem_valid, ptrs, ptr_pos, ptr_valid


@pytest.mark.parametrize("long_term", [True, False])
def test_memory_inputs_equal_the_slot_loop_and_indices_are_built_once(monkeypatch, long_term):
    cfg = DiveMemConfig(num_maskmem=4, max_obj_ptrs=6, long_term_enabled=long_term, candidate_pool_size=2)
    gen = torch.Generator().manual_seed(0)
    mems = [InstrumentMemory(cfg) for _ in range(3)]
    for k, m in enumerate(mems):  # rows with different frame and pointer counts: padding
        m.add_conditioning(0, torch.randn(64, 8, 8, generator=gen), torch.randn(256, generator=gen), 2.0, 0.9)
        for t in range(1, 2 + 3 * k):
            m.add_tracked(t, torch.randn(64, 8, 8, generator=gen), torch.randn(256, generator=gen), 2.0, 0.99)
    frame = 2 + 3 * 2
    got = build_memory_inputs(mems, frame, 8, cfg.max_obj_ptrs, torch.device("cpu"))
    assert got.padded
    for a, b in zip(got[:6], _reference_memory_inputs(mems, frame, 8, cfg.max_obj_ptrs)):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
    # same layout again (other features): the index tensors are the cached ones, no upload
    uploads = []
    tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **kw: uploads.append(kw.get("device")) or tensor(*a, **kw))
    again = build_memory_inputs(mems, frame, 8, cfg.max_obj_ptrs, "cpu")
    monkeypatch.undo()
    assert [d for d in uploads if d is not None] == []
    for name in ("mem_tpos_index", "mem_valid", "ptr_valid"):
        assert getattr(again, name) is getattr(got, name), name
    # one instrument alone: nothing padded, no slot index at all
    alone = build_memory_inputs(mems[:1], frame, 8, cfg.max_obj_ptrs, "cpu")
    assert alone.padded is False
    assert bool(alone.mem_valid.all())
    assert bool(alone.ptr_valid.all())


def test_memory_inputs_keep_gradients():
    cfg = DiveMemConfig(num_maskmem=3, memory_dtype="float32")
    m1, m2 = InstrumentMemory(cfg), InstrumentMemory(cfg)
    feat = torch.randn(64, 4, 4, requires_grad=True)
    ptr = torch.randn(256, requires_grad=True)
    m1.add_conditioning(0, feat, ptr, 1.0, 1.0)
    m2.add_conditioning(0, feat * 2, ptr, 1.0, 1.0)
    m2.add_tracked(1, feat * 3, ptr, 1.0, 1.0)
    mi = build_memory_inputs([m1, m2], 2, 4, cfg.max_obj_ptrs, "cpu")
    (mi.mem_feats.sum() + mi.obj_ptrs.sum()).backward()
    assert torch.equal(feat.grad, torch.full_like(feat, 6.0))  # 1 + 2 + 3
    assert torch.equal(ptr.grad, torch.full_like(ptr, 3.0))


def test_packed_copy_restores_every_tensor_with_one_cpu_call(monkeypatch):
    """to_host's device path (one ``.cpu()`` of a packed byte buffer), run on CPU tensors."""
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.rand(3, 5, 7, generator=gen) > 0.5,
        torch.randint(0, 255, (5, 7), dtype=torch.uint8, generator=gen),
        torch.randn(3, 2, generator=gen),
        torch.randint(-9, 9, (4,), dtype=torch.int64, generator=gen),
        torch.randn(3, 5, 7, generator=gen)[:, ::2],  # not contiguous
    ]
    calls = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **kw: calls.append(t.shape) or cpu(t, *a, **kw))
    out = transfer.packed_copy(tensors)
    monkeypatch.undo()
    assert len(calls) == 1
    for a, b in zip(out, tensors):
        assert a.dtype == b.numpy().dtype
        assert a.shape == tuple(b.shape)
        assert np.array_equal(a, b.numpy())
        assert a.ctypes.data % a.itemsize == 0  # aligned views


def test_constant_is_cached_per_value_and_mode():
    a = transfer.constant((1, 2, 3), torch.int64, torch.device("cpu"))
    assert transfer.constant((1, 2, 3), torch.int64, "cpu") is a
    assert transfer.constant((1, 2, 3), torch.float32, "cpu") is not a
    with torch.inference_mode():
        b = transfer.constant((1, 2, 3), torch.int64, "cpu")
    assert b is not a
    assert not a.is_inference()


def test_fill_holes_equals_the_per_instrument_fill():
    import cv2

    gen = torch.Generator().manual_seed(3)
    low = torch.randn(3, 1, 32, 32, generator=gen) + 0.8
    out = fill_holes(low, 8)
    for b in range(3):
        bg = (low[b, 0] <= 0).numpy().astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= 8) + 1
        ref = low[b, 0].clone()
        ref[torch.from_numpy(np.isin(labels, small))] = 0.1
        assert torch.equal(out[b, 0], ref)
    assert not torch.equal(out, low)
    assert fill_holes(low, 0) is low


def test_label_image_from_device_owners_equals_logit_resolution(frames):
    """Overlapping instruments: the [H, W] owner map the tracker copies gives the label image
    the float32 logits give; masks with and without returned logits are the same."""
    with_logits = _run(frames, 3, 1)  # CPU: logits returned (auto)
    without = InstrumentTracker.from_config(_config(return_mask_logits=False))
    without.track(frames[0], [box(i + 1, *BOXES[i]) for i in range(3)])
    overlaps = 0
    for f in frames[1:4]:
        a, b = with_logits.track(f), without.track(f)
        assert all(r.mask_logits is not None for r in a.instruments)
        assert all(r.mask_logits is None for r in b.instruments)
        for ra, rb in zip(a.instruments, b.instruments):
            assert np.array_equal(ra.mask, rb.mask)
            assert np.array_equal(ra.mask, ra.mask_logits > 0)
            assert (ra.predicted_iou, ra.object_score) == (rb.predicted_iou, rb.object_score)
        assert a.overlap_owner is None  # logits on the host: label_image resolves from them
        by_logits = a.label_image()
        overlaps += int((np.stack([r.mask for r in a.instruments]).sum(0) > 1).sum())
        assert np.array_equal(b.label_image(), by_logits)
        stacked = [torch.from_numpy(np.stack([getattr(r, k) for r in a.instruments])) for k in ("mask_logits", "mask")]
        assert np.array_equal(tracker_mod.overlap_owner(*stacked).numpy(), b.overlap_owner)
    assert overlaps > 0, "the boxes were chosen to overlap; no overlapping pixel was tracked"


def test_overlap_owner_ties_and_empty_pixels():
    logits = torch.tensor([[[1.0, 2.0, -1.0]], [[1.0, 3.0, -2.0]]])  # [2, 1, 3]
    owner = tracker_mod.overlap_owner(logits, logits > 0)
    assert owner.dtype == torch.uint8
    assert owner.tolist() == [[1, 2, 0]]  # tie -> first row; nothing set -> 0

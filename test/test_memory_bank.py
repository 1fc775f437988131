"""DiveMem memory-bank policy on constructed memories (no network)."""

from __future__ import annotations

import torch

from sam2s_ros.tracking.config import DiveMemConfig
from sam2s_ros.tracking.memory_bank import MODEL_NUM_MASKMEM, InstrumentMemory, most_diverse_index

HW = 4


def _feat(direction: int, scale: float = 1.0) -> torch.Tensor:
    """[64, HW, HW] memory whose flattened vector points along basis direction ``direction``."""
    f = torch.zeros(64 * HW * HW)
    f[direction] = scale
    return f.reshape(64, HW, HW)


def _ptr(v: float) -> torch.Tensor:
    return torch.full((256,), v)


def test_most_diverse_index_picks_least_similar_candidate():
    held = torch.stack([_feat(0).flatten(), _feat(1).flatten()])
    cands = torch.stack([_feat(0, 2.0).flatten(), (_feat(1) + _feat(2)).flatten(), _feat(3).flatten()])
    assert most_diverse_index(cands, held) == 2  # orthogonal to everything held
    assert most_diverse_index(cands, held[:0]) == 0  # nothing held -> first candidate


def test_divemem_keeps_most_diverse_candidate_and_rejects_low_confidence():
    cfg = DiveMemConfig(
        num_maskmem=3, long_term_frames=2, candidate_pool_size=3, iou_threshold=0.9, memory_dtype="float32"
    )
    mem = InstrumentMemory(cfg)
    mem.add_conditioning(0, _feat(0), _ptr(0), 5.0, 1.0)
    # frames 1..2 fill the 2-frame window; later frames push older ones out as candidates
    plan = {1: (0, 0.95), 2: (7, 0.5), 3: (0, 0.97), 4: (9, 0.99), 5: (1, 0.99), 6: (1, 0.99), 7: (1, 0.99)}
    for t, (direction, iou) in plan.items():
        mem.add_tracked(t, _feat(direction), _ptr(t), 3.0, iou)
    # evicted in order: 1 (dir 0), 2 (dir 7, iou 0.5 -> rejected), 3 (dir 0), 4 (dir 9), 5 (dir 1)
    # the pool [1, 3, 4] filled at frame 6: frame 4 (orthogonal to the conditioning frame) wins
    assert [e.frame_idx for e in mem.long_term] == [4]
    assert [e.frame_idx for e in mem.candidates] == [5]
    assert all(e.frame_idx != 2 for e in list(mem.long_term) + mem.candidates)
    # short-term window stays complete: the last num_maskmem - 1 frames, consecutive
    assert [e.frame_idx for e in mem.short_term] == [6, 7]


def test_invisible_frames_never_enter_memory_with_divemem():
    cfg = DiveMemConfig(num_maskmem=4, iou_threshold=0.0, candidate_pool_size=1, memory_dtype="float32")
    mem = InstrumentMemory(cfg)
    mem.add_conditioning(0, _feat(0), _ptr(0), 5.0, 1.0)
    for t in range(1, 20):
        mem.add_tracked(t, _feat(t % 50), _ptr(t), -2.0 if t % 2 else 2.0, 0.99)
    held = list(mem.short_term) + list(mem.long_term) + mem.candidates
    assert held
    assert all(e.object_score > 0 for e in held)
    assert all(f % 2 == 0 for f, _ in mem.recent_ptrs)


def test_sam21_mode_keeps_occluded_frames_and_uses_frame_distance():
    cfg = DiveMemConfig(long_term_enabled=False, memory_dtype="float32")
    mem = InstrumentMemory(cfg)
    mem.add_conditioning(0, _feat(0), _ptr(0), 5.0, 1.0)
    for t in range(1, 10):
        mem.add_tracked(t, _feat(t), _ptr(t), -1.0, 0.2)  # occluded, low IoU: SAM 2.1 keeps them
    frames, ptrs = mem.gather(10)
    assert [(e.frame_idx, t_pos) for e, t_pos in frames] == [(0, 0)] + [
        (10 - d, MODEL_NUM_MASKMEM - d) for d in range(6, 0, -1)
    ]
    assert [d for d, _ in ptrs] == [10] + list(range(1, 10))
    assert mem.sizes()["long_term"] == 0


def test_bank_size_is_fixed_after_warm_up():
    cfg = DiveMemConfig(iou_threshold=0.0, memory_dtype="float32", max_cond_frames=2)
    mem = InstrumentMemory(cfg)
    sizes = []
    for t in range(400):
        if t % 100 == 0:
            mem.add_conditioning(t, _feat(t % 64), _ptr(t), 5.0, 1.0)
        else:
            mem.add_tracked(t, _feat(t % 64), _ptr(t), 2.0, 0.99)
        sizes.append(mem.sizes())
    frames, ptrs = mem.gather(400)
    assert sizes[-1]["cond"] == 2
    assert sizes[-1]["short_term"] == 6
    assert sizes[-1]["long_term"] == 3
    assert all(s["candidates"] < cfg.candidate_pool_size for s in sizes)
    assert len(frames) == 2 + 3 + 6
    assert len(ptrs) <= 2 + 3 + 15
    assert list(mem.cond) == [0, 300]  # first prompt frame kept, then the most recent

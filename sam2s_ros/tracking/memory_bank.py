"""Per-instrument memory bank: SAM 2.1's memory plus SAM2S-style DiveMem, always bounded.

Held per instrument (limits in sam2s_ros.tracking.config.DiveMemConfig):
- conditioning frames (prompted), at most ``max_cond_frames``: the first one and the most
  recent ones are kept (SAM 2.1 keeps all; a cap keeps a 30-minute procedure bounded);
- the short-term window: the last ``num_maskmem - 1`` tracked frames (complete);
- recent object pointers: the last ``max_obj_ptrs - 1`` tracked frames;
- with DiveMem on: up to ``long_term_frames`` long-term frames and a pool of at most
  ``candidate_pool_size`` candidates.

DiveMem (after the SAM2S / ReSurgSAM2 papers): a frame leaving the
short-term window becomes a long-term candidate when its predicted IoU >=
``iou_threshold`` and object score >= ``object_score_threshold``. When the pool is full,
the candidate least similar to what is already held (highest cosine similarity of its
memory features to any held long-term frame, or to the conditioning frames while none is
held, is lowest) joins the long-term memory (FIFO), and the pool is emptied. With DiveMem on,
frames where the instrument is not visible (object score < 0) never enter memory: neither
the window, the pointers nor the candidates.

With DiveMem off the selection is exactly SAM 2.1's (``SAM2Base._prepare_memory_conditioned_features``,
temporal stride 1): a window frame at distance d (1..num_maskmem-1) gets t_pos = 7 - d,
conditioning frames t_pos 0, pointers their signed frame distance. With DiveMem on, the
window holds the last num_maskmem - 1 frames with the instrument visible, ranked by recency.
Long-term frames are attended like conditioning frames (t_pos 0) and their pointers at
their real distance.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from sam2s_ros.backends.base import MemoryInputs
from sam2s_ros.tracking import transfer
from sam2s_ros.tracking.config import DiveMemConfig

#: temporal position encodings in SAM 2.1 checkpoints (maskmem_tpos_enc rows, num_maskmem = 7)
MODEL_NUM_MASKMEM = 7
#: channels of a spatial memory (SAM 2.1 mem_dim) and size of an object pointer (hidden_dim)
MEM_DIM, OBJ_PTR_DIM = 64, 256
#: stride of the image-encoder features that memories live on: the grid side is image_size // 16
FEATURE_STRIDE = 16

MEMORY_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class MemoryEntry:
    """One frame's memory of one instrument.

    Attributes:
        frame_idx: tracker frame index of the frame.
        maskmem: [MEM_DIM=64, h, w] spatial memory features (storage dtype, e.g. bfloat16).
        obj_ptr: [OBJ_PTR_DIM=256] float32 object pointer.
        object_score: object-score logit (> 0 visible).
        iou: predicted IoU of the mask.
    """

    frame_idx: int
    maskmem: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: float
    iou: float

    def to_state(self) -> dict:
        return {
            "frame_idx": self.frame_idx,
            "maskmem": self.maskmem.cpu(),
            "obj_ptr": self.obj_ptr.cpu(),
            "object_score": self.object_score,
            "iou": self.iou,
        }


def most_diverse_index(candidates: torch.Tensor, held: torch.Tensor) -> int:
    """Index of the candidate least similar to everything held.

    Args:
        candidates: [C, D] float features (C >= 1).
        held: [H, D] float features; with H == 0 the first candidate is chosen.

    Returns:
        argmin over candidates of max cosine similarity to the held rows.
    """
    return int(_most_diverse(candidates, held))


def _most_diverse(candidates: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """:func:`most_diverse_index` as a 0-d int64 tensor on the candidates' device (no host sync)."""
    if held.shape[0] == 0:
        return torch.zeros((), dtype=torch.int64, device=candidates.device)
    sim = F.normalize(candidates.float(), dim=1) @ F.normalize(held.float(), dim=1).T  # [C, H]
    return sim.max(dim=1).values.argmin()


def select_long_term(memories: Sequence["InstrumentMemory"]) -> None:
    """Resolve the DiveMem selection of every memory whose candidate pool is full.

    The selections of all memories are computed on their device and copied to the host
    together (one transfer however many instruments), so the tracker calls this once per
    frame after ``add_tracked(..., select=False)`` on each instrument.
    """
    pending = [m for m in memories if m.selection_pending]
    if not pending:
        return
    (picks,) = transfer.to_host(torch.stack([m._diversity_pick() for m in pending]))
    for m, k in zip(pending, picks):
        m.long_term.append(m.candidates[int(k)])
        m.candidates = []


class InstrumentMemory:
    """Bounded memory bank of one instrument (see module docstring)."""

    def __init__(self, cfg: DiveMemConfig):
        self.cfg = cfg
        self.storage_dtype = MEMORY_DTYPES[cfg.memory_dtype]
        self.cond: "OrderedDict[int, MemoryEntry]" = OrderedDict()
        self.short_term: deque[MemoryEntry] = deque(maxlen=cfg.num_maskmem - 1)
        self.recent_ptrs: deque[tuple[int, torch.Tensor]] = deque(maxlen=max(cfg.max_obj_ptrs - 1, 0))
        self.long_term: deque[MemoryEntry] = deque(maxlen=max(cfg.long_term_frames, 1))
        self.candidates: list[MemoryEntry] = []

    # ---- writing -------------------------------------------------------------------
    def _entry(self, frame_idx, maskmem, obj_ptr, object_score, iou) -> MemoryEntry:
        return MemoryEntry(
            int(frame_idx), maskmem.to(self.storage_dtype), obj_ptr.float(), float(object_score), float(iou)
        )

    def add_conditioning(
        self, frame_idx: int, maskmem: torch.Tensor, obj_ptr: torch.Tensor, object_score: float, iou: float
    ) -> None:
        """Store a prompted frame (replaces a tracked entry of the same frame)."""
        entry = self._entry(frame_idx, maskmem, obj_ptr, object_score, iou)
        self.short_term = deque((e for e in self.short_term if e.frame_idx != frame_idx), maxlen=self.short_term.maxlen)
        self.recent_ptrs = deque(
            ((f, p) for f, p in self.recent_ptrs if f != frame_idx), maxlen=self.recent_ptrs.maxlen
        )
        self.cond[entry.frame_idx] = entry
        while len(self.cond) > self.cfg.max_cond_frames:
            keys = list(self.cond)
            del self.cond[keys[1] if len(keys) > 1 else keys[0]]  # keep the first prompt frame

    def add_tracked(
        self,
        frame_idx: int,
        maskmem: torch.Tensor,
        obj_ptr: torch.Tensor,
        object_score: float,
        iou: float,
        select: bool = True,
    ) -> None:
        """Store a tracked (non-conditioning) frame.

        Args:
            select: resolve a DiveMem selection (candidate pool full) now; False leaves it
                pending for :func:`select_long_term`, which batches it with other instruments'.
        """
        if self.cfg.long_term_enabled and object_score < 0:
            return  # DiveMem: frames without the instrument never enter memory
        entry = self._entry(frame_idx, maskmem, obj_ptr, object_score, iou)
        if self.cfg.long_term_enabled and len(self.short_term) == self.short_term.maxlen:
            self._offer_candidate(self.short_term[0])
        self.short_term.append(entry)
        if self.recent_ptrs.maxlen:
            self.recent_ptrs.append((entry.frame_idx, entry.obj_ptr))
        if select:
            select_long_term([self])

    @property
    def selection_pending(self) -> bool:
        """True while the candidate pool is full and its DiveMem selection not yet made."""
        return len(self.candidates) >= self.cfg.candidate_pool_size

    def _offer_candidate(self, entry: MemoryEntry) -> None:
        if self.cfg.long_term_frames == 0:
            return
        if entry.iou < self.cfg.iou_threshold or entry.object_score < self.cfg.object_score_threshold:
            return
        select_long_term([self])  # a selection still pending from an earlier write comes first
        self.candidates.append(entry)

    def _diversity_pick(self) -> torch.Tensor:
        """Index (0-d device tensor) of the candidate that joins the long-term memory."""
        held = list(self.long_term) or list(self.cond.values())
        cand = torch.stack([c.maskmem.flatten() for c in self.candidates])
        held_t = torch.stack([h.maskmem.flatten() for h in held]) if held else cand[:0]
        return _most_diverse(cand, held_t)

    # ---- reading -------------------------------------------------------------------
    def gather(self, frame_idx: int) -> tuple[list[tuple[MemoryEntry, int]], list[tuple[int, torch.Tensor]]]:
        """Memories and pointers to attend to on ``frame_idx``.

        Returns:
            frames: [(entry, t_pos)] in SAM 2's order (conditioning, then long-term, then
                the window oldest first); t_pos 0 for conditioning/long-term frames.
            pointers: [(signed frame distance, obj_ptr [256])], conditioning first.
        """
        n = self.cfg.num_maskmem
        frames = [(e, 0) for e in self.cond.values()]  # t_pos 0 = conditioning
        ptrs = [(frame_idx - e.frame_idx, e.obj_ptr) for e in self.cond.values() if e.frame_idx <= frame_idx]
        if self.cfg.long_term_enabled:
            frames += [(e, 0) for e in self.long_term]
            ptrs += [(frame_idx - e.frame_idx, e.obj_ptr) for e in self.long_term]
            window = list(self.short_term)  # oldest first; rank r from the newest -> t_pos 7 - r
            frames += [(e, MODEL_NUM_MASKMEM - (len(window) - i)) for i, e in enumerate(window)]
            ptrs += [(frame_idx - f, p) for f, p in reversed(self.recent_ptrs)]
        else:
            by_frame = {e.frame_idx: e for e in self.short_term}
            for dist in range(n - 1, 0, -1):  # oldest first, t_pos = 7 - distance
                e = by_frame.get(frame_idx - dist)
                if e is not None:
                    frames.append((e, MODEL_NUM_MASKMEM - dist))
            recent = dict(self.recent_ptrs)
            for t_diff in range(1, self.cfg.max_obj_ptrs):
                if frame_idx - t_diff < 0:
                    break
                p = recent.get(frame_idx - t_diff)
                if p is not None:
                    ptrs.append((t_diff, p))
        return frames, ptrs

    def sizes(self) -> dict[str, int]:
        """Current counts: cond, short_term, long_term, candidates, pointers."""
        return {
            "cond": len(self.cond),
            "short_term": len(self.short_term),
            "long_term": len(self.long_term) if self.cfg.long_term_enabled else 0,
            "candidates": len(self.candidates),
            "pointers": len(self.recent_ptrs),
        }

    # ---- persistence ---------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "cond": [e.to_state() for e in self.cond.values()],
            "short_term": [e.to_state() for e in self.short_term],
            "recent_ptrs": [(f, p.cpu()) for f, p in self.recent_ptrs],
            "long_term": [e.to_state() for e in self.long_term],
            "candidates": [e.to_state() for e in self.candidates],
        }

    @classmethod
    def from_parts(
        cls,
        cfg: DiveMemConfig,
        cond: list[MemoryEntry],
        short_term: list[MemoryEntry],
        recent_ptrs: list[tuple[int, torch.Tensor]],
        long_term: list[MemoryEntry],
        candidates: list[MemoryEntry],
    ) -> "InstrumentMemory":
        """A memory bank holding already validated entries (see sam2s_ros.tracking.state)."""
        m = cls(cfg)
        for e in cond:
            m.cond[e.frame_idx] = e
        m.short_term.extend(short_term)
        m.recent_ptrs.extend(recent_ptrs)
        m.long_term.extend(long_term)
        m.candidates = list(candidates)
        return m


def build_memory_inputs(
    memories: list[InstrumentMemory], frame_idx: int, feat_hw: int, max_obj_ptrs: int, device: torch.device
) -> MemoryInputs:
    """What B instruments attend to on ``frame_idx``, padded to common F frames and P pointers.

    The one place where a memory bank becomes memory-attention input: the tracker and the
    trainer (``sam2s_ros.training``) both call it, so training sees exactly the DiveMem
    selection that inference makes. Differentiable: memory features and pointers that carry
    gradients keep them.

    Cost per call, however many instruments and frames: one stack and at most one padding
    copy each for features and pointers, and one asynchronous upload of the pointer
    distances; the index and validity tensors are built once per memory layout (which
    slots hold which temporal position) and cached (:func:`memory_layout`). Nothing waits
    for the device.

    Args:
        memories: one InstrumentMemory per batch row.
        frame_idx: index of the frame being tracked.
        feat_hw: side of the stride-16 feature grid (image_size / 16).
        max_obj_ptrs: DiveMemConfig.max_obj_ptrs (pointer distances are divided by it - 1,
            as SAM 2.1 does).

    Returns:
        MemoryInputs (shapes in sam2s_ros.backends.base); rows with fewer frames / pointers
        are padded and marked invalid. The index and validity tensors are shared between
        calls: do not modify them in place.
    """
    device = torch.device(device)
    gathered = [m.gather(frame_idx) for m in memories]
    b = len(memories)
    layout = MemoryLayout(
        tuple(tuple(t_pos for _, t_pos in frames) for frames, _ in gathered),
        tuple(len(pointers) for _, pointers in gathered),
    )
    idx = memory_layout(layout, device)
    n_f, n_p = idx.mem_valid.shape[1], idx.ptr_valid.shape[1]
    feats = [entry.maskmem for frames, _ in gathered for entry, _ in frames]
    mem_feats = _scatter_rows(feats, idx.frame_slots, b * n_f, (MEM_DIM, feat_hw, feat_hw), device)
    ptrs = _scatter_rows(
        [p for _, pointers in gathered for _, p in pointers], idx.ptr_slots, b * n_p, (OBJ_PTR_DIM,), device
    )
    t_diff_max = max(max_obj_ptrs - 1, 1)
    pos = [[dist / t_diff_max for dist, _ in pointers] + [0.0] * (n_p - len(pointers)) for _, pointers in gathered]
    return MemoryInputs(
        mem_feats.view(b, n_f, MEM_DIM, feat_hw, feat_hw),
        idx.tpos_index,
        idx.mem_valid,
        ptrs.view(b, n_p, OBJ_PTR_DIM),
        transfer.upload(torch.tensor(pos, dtype=torch.float32), device),
        idx.ptr_valid,
        padded=idx.frame_slots is not None or idx.ptr_slots is not None,
    )


class MemoryLayout(NamedTuple):
    """Which slots of a padded memory batch are used: per row, the t_pos of each frame
    (in gather order) and the number of pointers."""

    frame_tpos: tuple[tuple[int, ...], ...]
    pointer_counts: tuple[int, ...]


class LayoutIndices(NamedTuple):
    """Device tensors of a MemoryLayout (B rows, F = most frames, P = max(most pointers, 1))."""

    tpos_index: torch.Tensor  # [B, F] int64, num_maskmem - t_pos - 1 (0 in padding)
    mem_valid: torch.Tensor  # [B, F] bool
    ptr_valid: torch.Tensor  # [B, P] bool
    frame_slots: Optional[torch.Tensor]  # [N] int64 flat slots of the N frames; None = no padding
    ptr_slots: Optional[torch.Tensor]  # [M] int64 flat slots of the M pointers; None = no padding


def memory_layout(layout: MemoryLayout, device: torch.device) -> LayoutIndices:
    """Index and validity tensors of ``layout`` on ``device``, built once per layout (cached)."""
    n_f = max((len(r) for r in layout.frame_tpos), default=0)
    n_p = max(max(layout.pointer_counts, default=0), 1)
    tpos = tuple(tuple(MODEL_NUM_MASKMEM - t - 1 for t in r) + (0,) * (n_f - len(r)) for r in layout.frame_tpos)
    mem_valid = tuple((True,) * len(r) + (False,) * (n_f - len(r)) for r in layout.frame_tpos)
    ptr_valid = tuple((True,) * n + (False,) * (n_p - n) for n in layout.pointer_counts)
    frame_slots = tuple(row * n_f + j for row, r in enumerate(layout.frame_tpos) for j in range(len(r)))
    ptr_slots = tuple(row * n_p + j for row, n in enumerate(layout.pointer_counts) for j in range(n))
    b = len(layout.pointer_counts)
    return LayoutIndices(
        transfer.constant(tpos, torch.int64, device),
        transfer.constant(mem_valid, torch.bool, device),
        transfer.constant(ptr_valid, torch.bool, device),
        None if len(frame_slots) == b * n_f else transfer.constant(frame_slots, torch.int64, device),
        None if len(ptr_slots) == b * n_p else transfer.constant(ptr_slots, torch.int64, device),
    )


def _scatter_rows(
    rows: list[torch.Tensor], slots: Optional[torch.Tensor], total: int, shape: tuple, device: torch.device
) -> torch.Tensor:
    """[total, *shape] float32: ``rows`` (each ``shape``) at flat ``slots``, zeros elsewhere."""
    if not rows:
        return torch.zeros(total, *shape, device=device)
    stacked = torch.stack(rows).to(device).float()
    if slots is None:
        return stacked
    return stacked.new_zeros(total, *shape).index_copy(0, slots, stacked)

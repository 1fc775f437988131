"""Per-instrument tracker state and its save/load format (a torch file, tensors only).

A state file is checked completely before anything of the running tracker is touched:
format and version, model identity, every key (none missing, none unknown), the type and
range of every number (instrument ids 1..65535, frame indices before the saved frame
counter, finite scores), every tensor's dtype, shape and values (finite) against the
running model, and the bank sizes against the running DiveMem limits.
:func:`validate_state` builds a new :class:`LoadedState` from it (tensors moved to the
tracker's device and storage dtype); the tracker adopts it in one assignment
(:meth:`InstrumentTracker.adopt_state <sam2s_ros.tracking.tracker.InstrumentTracker.adopt_state>`).
File access (regular files only, bounded reads, atomic writes) is in
:mod:`sam2s_ros.tracking.state_files`.
"""

from __future__ import annotations

import io
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, NoReturn

import torch

from sam2s_ros.errors import StateFileError
from sam2s_ros.tracking.config import DiveMemConfig
from sam2s_ros.tracking.memory_bank import (
    MEM_DIM,
    MEMORY_DTYPES,
    OBJ_PTR_DIM,
    InstrumentMemory,
    MemoryEntry,
)
from sam2s_ros.tracking.state_files import read_regular_file, write_atomic

STATE_FORMAT = "sam2s_ros.tracker_state"
STATE_VERSION = 1
#: instrument ids a state may hold (InstrumentMask.instrument_id is a uint16; 0 = background)
INSTRUMENT_ID_MIN, INSTRUMENT_ID_MAX = 1, 65535
#: largest frame counter accepted (InstrumentMaskArray.frame_index is a uint64; torch int64)
MAX_FRAME_INDEX = 2**62
#: class ids a state may hold (InstrumentMask.class_id is an int32; -1 = none)
CLASS_ID_MIN, CLASS_ID_MAX = -1, 2**31 - 1
MAX_CLASS_NAME_CHARS = 256
_FLOAT_DTYPES = tuple(MEMORY_DTYPES.values())

_TOP_KEYS = frozenset(
    {"format", "version", "model_size", "image_size", "checkpoint_sha256", "frame_index", "instruments"}
)
_INSTRUMENT_KEYS = frozenset({"instrument_id", "class_id", "class_name", "class_probs", "memory"})
_MEMORY_KEYS = frozenset({"cond", "short_term", "recent_ptrs", "long_term", "candidates"})
_ENTRY_KEYS = frozenset({"frame_idx", "maskmem", "obj_ptr", "object_score", "iou"})


@dataclass
class InstrumentState:
    """Everything the tracker holds for one instrument."""

    instrument_id: int
    memory: InstrumentMemory
    class_id: int = -1
    class_name: str = ""
    class_probs: deque = field(default_factory=deque)  # recent [C] semantic-head probabilities


@dataclass(frozen=True)
class StateIdentity:
    """What a saved state must match to be loaded: model size, image size, checkpoint sha256."""

    model_size: str
    image_size: int
    checkpoint_sha256: str


@dataclass(frozen=True)
class StateSpec:
    """What the running tracker accepts: its identity, memory shapes and limits.

    Attributes:
        identity: model size, image size, checkpoint hash.
        divemem: the running memory limits (bank sizes above them are refused).
        feat_hw: side of the memory feature grid (image_size // 16); maskmem is
            [MEM_DIM, feat_hw, feat_hw].
        max_instruments: most instruments in one state.
        num_classes: classes of the trained semantic head (0 = none: class_probs must be empty).
        class_smoothing_frames: most class_probs rows per instrument.
        device: where the loaded tensors go.
    """

    identity: StateIdentity
    divemem: DiveMemConfig
    feat_hw: int
    max_instruments: int
    num_classes: int
    class_smoothing_frames: int
    device: torch.device

    def max_bytes(self) -> int:
        """Upper bound of the size of a valid state file (float32 tensors, generous overhead), bytes."""
        cfg, limits = self.divemem, bank_limits(self.divemem)
        entries = limits["cond"] + limits["short_term"] + limits["long_term"] + limits["candidates"]
        entry = 4 * (MEM_DIM * self.feat_hw**2 + OBJ_PTR_DIM) + 4096
        pointers = max(cfg.max_obj_ptrs - 1, 0) * (4 * OBJ_PTR_DIM + 1024)
        probs = self.class_smoothing_frames * (4 * self.num_classes + 1024)
        return self.max_instruments * (entries * entry + pointers + probs + (64 << 10)) + (1 << 20)


@dataclass
class LoadedState:
    """A validated state, ready to be adopted by the tracker."""

    instruments: dict[int, InstrumentState]
    frame_index: int


def bank_limits(cfg: DiveMemConfig) -> dict[str, int]:
    """Most entries of each part of one instrument's memory bank under ``cfg``."""
    bank = InstrumentMemory(cfg)
    return {
        "cond": cfg.max_cond_frames,
        "short_term": bank.short_term.maxlen or 0,
        "recent_ptrs": bank.recent_ptrs.maxlen or 0,
        "long_term": bank.long_term.maxlen or 0,
        "candidates": cfg.candidate_pool_size,
    }


# ---- writing ------------------------------------------------------------------------------


def state_dict(identity: StateIdentity, frame_index: int, instruments: Iterable[InstrumentState]) -> dict:
    """The saved form of a tracker state: plain values and CPU tensors (built under the tracker's lock)."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "model_size": identity.model_size,
        "image_size": identity.image_size,
        "checkpoint_sha256": identity.checkpoint_sha256,
        "frame_index": frame_index,
        "instruments": [
            {
                "instrument_id": s.instrument_id,
                "class_id": s.class_id,
                "class_name": s.class_name,
                "class_probs": [p.cpu() for p in s.class_probs],
                "memory": s.memory.to_state(),
            }
            for s in instruments
        ],
    }


def encode_state(state: dict) -> bytes:
    """Serialise :func:`state_dict` output (torch format). Raises StateFileError."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except Exception as exc:  # torch raises RuntimeError / pickling errors, not OSError
        raise StateFileError(f"cannot serialise the tracker state: {type(exc).__name__}: {exc}") from exc
    return buffer.getvalue()


def save_state(path: str, state: dict, overwrite: bool = True) -> None:
    """Write :func:`state_dict` output to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        StateFileError: cannot serialise or write, the target is not a regular file, or it
            exists and ``overwrite`` is False.
    """
    write_atomic(path, encode_state(state), overwrite)


# ---- reading ------------------------------------------------------------------------------


def load_state(path: str, spec: StateSpec) -> LoadedState:
    """Read and completely validate the state file ``path``; touches no tracker.

    Raises:
        StateFileError: not a regular file, too large, corrupt or unsafe (pickled code), not
            a tracker state, another model, or any invalid key, value, dtype or shape.
    """
    data = read_regular_file(path, spec.max_bytes())
    return validate_state(decode_state(data, path), spec, path)


def decode_state(data: bytes, source: str) -> Any:
    """Unpickle a torch file with ``weights_only`` (tensors and plain containers only).

    Raises:
        StateFileError: not a torch file, or it holds anything else (e.g. pickled code).
    """
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/EOFError/... for bad files
        raise StateFileError(f"tracker state {source!r} is corrupt or unsafe: {type(exc).__name__}: {exc}") from exc


def validate_state(raw: Any, spec: StateSpec, source: str) -> LoadedState:
    """Check a decoded state against ``spec`` and build a new LoadedState from it.

    Args:
        raw: what :func:`decode_state` returned.
        spec: the running tracker's identity, shapes and limits.
        source: where it came from (for messages).

    Raises:
        StateFileError: naming the first problem and where it is (e.g.
            ``instruments[1].memory.cond[0].maskmem: shape (64, 8, 8), expected (64, 16, 16)``).
    """
    return _Validator(spec, source).state(raw)


class _Validator:
    """Walks a decoded state; every method raises StateFileError at the first problem."""

    def __init__(self, spec: StateSpec, source: str) -> None:
        self.spec, self.source = spec, source
        self.limits = bank_limits(spec.divemem)
        self.storage_dtype = MEMORY_DTYPES[spec.divemem.memory_dtype]

    def fail(self, where: str, problem: str) -> NoReturn:
        raise StateFileError(f"tracker state {self.source!r} is invalid: {where}: {problem}")

    def state(self, raw: Any) -> LoadedState:
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            raise StateFileError(f"{self.source!r} is not a sam2s_ros tracker state")
        if raw.get("version") != STATE_VERSION:
            raise StateFileError(
                f"tracker state version {raw.get('version')!r} is not supported (need {STATE_VERSION})"
            )
        self.keys(raw, _TOP_KEYS, "state")
        mine = self.spec.identity
        theirs = (raw["model_size"], raw["image_size"], raw["checkpoint_sha256"])
        if theirs != (mine.model_size, mine.image_size, mine.checkpoint_sha256):
            sha = raw["checkpoint_sha256"]
            sha_text = sha[:12] if isinstance(sha, str) and sha else "random weights"
            raise StateFileError(
                f"tracker state was saved with model/image_size/checkpoint {theirs[:2]} {sha_text}, "
                f"this tracker runs {(mine.model_size, mine.image_size)} "
                f"{mine.checkpoint_sha256[:12] or 'random weights'}"
            )
        frame_index = self.integer(raw["frame_index"], "frame_index", 0, MAX_FRAME_INDEX)
        items = self.sequence(raw["instruments"], "instruments", self.spec.max_instruments, "max_instruments")
        instruments: dict[int, InstrumentState] = {}
        for i, item in enumerate(items):
            state = self.instrument(item, f"instruments[{i}]", frame_index)
            if state.instrument_id in instruments:
                self.fail(f"instruments[{i}].instrument_id", f"instrument {state.instrument_id} appears twice")
            instruments[state.instrument_id] = state
        return LoadedState(instruments, frame_index)

    def instrument(self, d: Any, where: str, frame_index: int) -> InstrumentState:
        self.keys(d, _INSTRUMENT_KEYS, where)
        iid = self.integer(d["instrument_id"], f"{where}.instrument_id", INSTRUMENT_ID_MIN, INSTRUMENT_ID_MAX)
        class_id = self.integer(d["class_id"], f"{where}.class_id", CLASS_ID_MIN, CLASS_ID_MAX)
        name = d["class_name"]
        if not isinstance(name, str) or len(name) > MAX_CLASS_NAME_CHARS:
            self.fail(f"{where}.class_name", f"expected a string of at most {MAX_CLASS_NAME_CHARS} characters")
        probs_raw = self.sequence(
            d["class_probs"], f"{where}.class_probs", self.spec.class_smoothing_frames, "class_smoothing_frames"
        )
        if probs_raw and self.spec.num_classes == 0:
            self.fail(f"{where}.class_probs", "class scores, but this checkpoint has no trained semantic head")
        probs = deque(
            (
                self.tensor(p, f"{where}.class_probs[{j}]", (self.spec.num_classes,), torch.float32, cpu=True)
                for j, p in enumerate(probs_raw)
            ),
            maxlen=self.spec.class_smoothing_frames,
        )
        memory = self.memory(d["memory"], f"{where}.memory", frame_index)
        return InstrumentState(iid, memory, class_id, name, probs)

    def memory(self, d: Any, where: str, frame_index: int) -> InstrumentMemory:
        self.keys(d, _MEMORY_KEYS, where)
        parts: dict[str, list] = {}
        limit_names = {
            "cond": "divemem.max_cond_frames",
            "short_term": "divemem.num_maskmem - 1",
            "recent_ptrs": "divemem.max_obj_ptrs - 1",
            "long_term": "divemem.long_term_frames",
            "candidates": "divemem.candidate_pool_size",
        }
        for part in ("cond", "short_term", "long_term", "candidates"):
            items = self.sequence(d[part], f"{where}.{part}", self.limits[part], limit_names[part])
            parts[part] = [self.entry(e, f"{where}.{part}[{j}]", frame_index) for j, e in enumerate(items)]
        if not parts["cond"]:
            self.fail(f"{where}.cond", "no conditioning frame (every tracked instrument has at least one)")
        frames = [e.frame_idx for e in parts["cond"]]
        if len(set(frames)) != len(frames):
            self.fail(f"{where}.cond", f"a frame appears twice among {frames}")
        pointers = self.sequence(
            d["recent_ptrs"], f"{where}.recent_ptrs", self.limits["recent_ptrs"], limit_names["recent_ptrs"]
        )
        ptrs = [self.pointer(p, f"{where}.recent_ptrs[{j}]", frame_index) for j, p in enumerate(pointers)]
        return InstrumentMemory.from_parts(
            self.spec.divemem, parts["cond"], parts["short_term"], ptrs, parts["long_term"], parts["candidates"]
        )

    def entry(self, d: Any, where: str, frame_index: int) -> MemoryEntry:
        self.keys(d, _ENTRY_KEYS, where)
        hw = self.spec.feat_hw
        return MemoryEntry(
            self.frame(d["frame_idx"], f"{where}.frame_idx", frame_index),
            self.tensor(d["maskmem"], f"{where}.maskmem", (MEM_DIM, hw, hw), self.storage_dtype),
            self.tensor(d["obj_ptr"], f"{where}.obj_ptr", (OBJ_PTR_DIM,), torch.float32),
            self.number(d["object_score"], f"{where}.object_score"),
            self.number(d["iou"], f"{where}.iou"),
        )

    def pointer(self, p: Any, where: str, frame_index: int) -> tuple[int, torch.Tensor]:
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            self.fail(where, "expected a (frame_idx, obj_ptr) pair")
        return (
            self.frame(p[0], f"{where}[0]", frame_index),
            self.tensor(p[1], f"{where}[1]", (OBJ_PTR_DIM,), torch.float32),
        )

    # ---- leaves ---------------------------------------------------------------------------

    def keys(self, d: Any, expected: frozenset, where: str) -> None:
        if not isinstance(d, dict):
            self.fail(where, f"expected a dict, got {type(d).__name__}")
        missing = sorted(expected - d.keys())
        if missing:
            self.fail(where, f"missing key(s) {', '.join(missing)}")
        unknown = sorted(repr(k) for k in d.keys() - expected)
        if unknown:
            self.fail(where, f"unknown key(s) {', '.join(unknown[:5])}")

    def sequence(self, v: Any, where: str, max_len: int, limit_name: str) -> list:
        if not isinstance(v, (list, tuple)):
            self.fail(where, f"expected a list, got {type(v).__name__}")
        if len(v) > max_len:
            self.fail(where, f"{len(v)} items, this tracker holds at most {max_len} ({limit_name})")
        return list(v)

    def integer(self, v: Any, where: str, low: int, high: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(where, f"expected an integer, got {type(v).__name__}")
        if not low <= v <= high:
            self.fail(where, f"{v} is outside {low}..{high}")
        return int(v)

    def frame(self, v: Any, where: str, frame_index: int) -> int:
        idx = self.integer(v, where, 0, MAX_FRAME_INDEX)
        if idx >= frame_index:
            self.fail(where, f"frame {idx} is not before the state's frame_index {frame_index}")
        return idx

    def number(self, v: Any, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(where, f"expected a finite number, got {v!r}"[:200])
        return float(v)

    def tensor(self, t: Any, where: str, shape: tuple[int, ...], dtype: torch.dtype, cpu: bool = False) -> torch.Tensor:
        """A strided float tensor of ``shape`` with finite values, as a new ``dtype`` tensor on the device (or CPU)."""
        if not isinstance(t, torch.Tensor):
            self.fail(where, f"expected a tensor, got {type(t).__name__}")
        if t.layout != torch.strided or t.dtype not in _FLOAT_DTYPES:
            self.fail(where, f"{t.layout} {t.dtype} tensor, expected a dense float tensor")
        if tuple(t.shape) != shape:
            self.fail(where, f"shape {tuple(t.shape)}, expected {shape}")
        if not bool(torch.isfinite(t).all()):
            self.fail(where, "holds NaN or infinite values")
        return t.detach().to("cpu" if cpu else self.spec.device, dtype, copy=True).contiguous()

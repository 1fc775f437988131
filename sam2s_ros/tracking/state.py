"""Per-instrument tracker state and its save/load format (a torch file, tensors only).

:meth:`InstrumentTracker.save_state <sam2s_ros.tracking.tracker.InstrumentTracker.save_state>`
and ``load_state`` call :func:`save_state` / :func:`load_state`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import torch

from sam2s_ros.errors import StateFileError
from sam2s_ros.tracking.config import DiveMemConfig
from sam2s_ros.tracking.memory_bank import InstrumentMemory

STATE_FORMAT = "sam2s_ros.tracker_state"
STATE_VERSION = 1


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


def save_state(path: str, identity: StateIdentity, frame_index: int, instruments: Iterable[InstrumentState]) -> None:
    """Write every instrument's memory bank and the frame counter to ``path`` (torch file).

    Raises:
        StateFileError: the file cannot be written.
    """
    state = {
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
    try:
        torch.save(state, path)
    except OSError as exc:
        raise StateFileError(f"cannot write tracker state to {path!r}: {exc}") from exc


def load_state(
    path: str,
    identity: StateIdentity,
    divemem: DiveMemConfig,
    device: torch.device,
    class_smoothing_frames: int,
) -> tuple[dict[int, InstrumentState], int]:
    """Read a state written by :func:`save_state`.

    Returns:
        ``({instrument_id: InstrumentState}, frame_index)``.

    Raises:
        StateFileError: missing/corrupt file, not a tracker state, or saved with another
            model size, image size or checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise StateFileError(f"tracker state {path!r} does not exist") from exc
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/EOFError for bad files
        raise StateFileError(f"tracker state {path!r} is corrupt or unsafe: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise StateFileError(f"{path!r} is not a sam2s_ros tracker state")
    if state.get("version") != STATE_VERSION:
        raise StateFileError(f"tracker state version {state.get('version')} is not supported (need {STATE_VERSION})")
    mine = (identity.model_size, identity.image_size, identity.checkpoint_sha256)
    theirs = (state["model_size"], state["image_size"], state["checkpoint_sha256"])
    if mine != theirs:
        raise StateFileError(
            f"tracker state was saved with model/image_size/checkpoint {theirs[:2]} "
            f"{theirs[2][:12] or 'random weights'}, this tracker runs {mine[:2]} "
            f"{mine[2][:12] or 'random weights'}"
        )
    try:
        instruments = {}
        for d in state["instruments"]:
            s = InstrumentState(
                int(d["instrument_id"]),
                InstrumentMemory.from_state(divemem, d["memory"], device),
                int(d["class_id"]),
                str(d["class_name"]),
                deque(d["class_probs"], maxlen=class_smoothing_frames),
            )
            instruments[s.instrument_id] = s
        frame_index = int(state["frame_index"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateFileError(f"tracker state {path!r} is incomplete: {exc}") from exc
    return instruments, frame_index

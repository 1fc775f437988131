"""Shared helpers for tracker tests: small random-weight trackers and real frames."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from sam2s_ros.data import Clip, read_davis_sequence
from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import PromptInput, PromptMode


def small_tracker(image_size: int = 128, **divemem) -> InstrumentTracker:
    """Random-weight hiera-tiny tracker at a small input size (fast on CPU)."""
    cfg = TrackerConfig(
        model_size="tiny", image_size=image_size, allow_random_weights=True, seed=0, divemem=DiveMemConfig(**divemem)
    )
    return InstrumentTracker.from_config(cfg)


def load_frames(shared_dir: pathlib.Path, count: int, clip: str = "cholecseg8k_clip") -> list[np.ndarray]:
    """The first ``count`` frames of a clip in ``<shared>/data`` as [H, W, 3] uint8 RGB (skips without it)."""
    return load_clip(shared_dir, count, clip).frames


def load_clip(shared_dir: pathlib.Path, count: int, clip: str = "cholecseg8k_clip") -> Clip:
    """The first ``count`` frames and instrument labels of a clip in ``<shared>/data`` (skips without it)."""
    folder = shared_dir / "data" / clip
    if not (folder / "frames").is_dir():
        pytest.skip(f"real frames not found at {folder / 'frames'}")
    return read_davis_sequence(folder, count)


def click(iid: int, x: float, y: float, mode=PromptMode.NEW, **kw) -> PromptInput:
    return PromptInput(iid, mode, points=np.array([[x, y]], np.float32), labels=np.array([1], np.int32), **kw)


def box(iid: int, x0, y0, x1, y1, mode=PromptMode.NEW, **kw) -> PromptInput:
    return PromptInput(iid, mode, box=np.array([x0, y0, x1, y1], np.float32), **kw)

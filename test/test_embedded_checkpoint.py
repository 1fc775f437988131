"""The shipped checkpoint models/sam2s_mobile.safetensors: safe to load, the file its model card
names, and still tracking (short runs on the CholecSeg8k and DAVIS blackswan evaluation clips)."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT
from safetensors import safe_open

from sam2s_ros.evaluation import davis
from sam2s_ros.model.checkpoint import file_sha256
from sam2s_ros.tracking.config import MOBILE_MODEL, TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import PromptInput, PromptMode

CHECKPOINT = REPO_ROOT / "models" / "sam2s_mobile.safetensors"
CARD = REPO_ROOT / "models" / "sam2s_mobile.md"
MAX_BYTES = 32 * 1024 * 1024
SHORT_RUN_FRAMES = 8
MIN_MEAN_J = 0.5


def test_the_file_is_small_fp16_safetensors_without_pickle():
    assert CHECKPOINT.stat().st_size <= MAX_BYTES
    raw = CHECKPOINT.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors: length + JSON, no pickle
    assert header["__metadata__"]["format"] == "sam2s_ros.checkpoint"
    with safe_open(str(CHECKPOINT), framework="pt") as f:
        meta = f.metadata()
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert meta["model_size"] == MOBILE_MODEL
    assert dtypes == {"F16"}, dtypes


def test_the_model_card_names_this_file():
    text = CARD.read_text()
    match = re.search(r"sha256 `([0-9a-f]{64})`", text)
    assert match, "the model card must state the file's sha256"
    assert match.group(1) == file_sha256(str(CHECKPOINT))
    for needed in ("Apache-2.0", "MobileSAM", "CC BY 4.0", "sam2s train"):
        assert needed in text, needed


def _image_size() -> int:
    with safe_open(str(CHECKPOINT), framework="pt") as f:
        return int(f.metadata()["image_size"])


def _short_run_mean_j(root, frame_name: str, label_dir: str) -> float:
    """Box prompt from the ground truth (label 1) on frame 0, nothing after; mean J over frames
    1..SHORT_RUN_FRAMES-1 at source resolution."""
    cfg = TrackerConfig(model_size=MOBILE_MODEL, image_size=_image_size(), checkpoint=str(CHECKPOINT))
    tracker = InstrumentTracker.from_config(cfg)
    assert tracker.describe()["model"] == MOBILE_MODEL
    js = []
    for i in range(SHORT_RUN_FRAMES):
        frame = cv2.cvtColor(cv2.imread(str(root / "frames" / frame_name.format(i))), cv2.COLOR_BGR2RGB)
        gt = cv2.imread(str(root / label_dir / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED) == 1
        prompts = []
        if i == 0:
            ys, xs = np.nonzero(gt)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            prompts = [PromptInput(1, PromptMode.NEW, box=box)]
        res = tracker.track(frame, prompts)
        if i > 0:
            js.append(davis.jaccard(res.instruments[0].mask, gt))
    return float(np.mean(js))


@pytest.mark.shared_data
def test_short_replay_on_the_surgical_clip_tracks_the_grasper(shared_dir):
    """The issue's check: the CholecSeg8k grasper (zero-shot: never trained or tuned on)."""
    mean_j = _short_run_mean_j(shared_dir / "data" / "cholecseg8k_clip", "{:05d}.png", "masks_instruments")
    assert mean_j >= MIN_MEAN_J, f"mean J {mean_j:.3f} over frames 1..{SHORT_RUN_FRAMES - 1}"


@pytest.mark.shared_data
def test_short_run_on_the_davis_evaluation_clip_tracks_the_swan(shared_dir):
    mean_j = _short_run_mean_j(shared_dir / "data" / "davis2016_blackswan", "{:05d}.jpg", "masks")
    assert mean_j >= MIN_MEAN_J, f"mean J {mean_j:.3f} over frames 1..{SHORT_RUN_FRAMES - 1}"

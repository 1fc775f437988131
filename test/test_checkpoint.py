"""Checkpoint loading: official layout, safetensors, semantic head, and every refusal."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sam2s_ros.errors import CheckpointError
from sam2s_ros.model.build import build_random_model
from sam2s_ros.tracking.config import ENDOVIS17_CLASSES, TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import ClassSource

from tracker_fixtures import click, load_frames

SIZE = 128


@pytest.fixture(scope="module")
def tiny_state():
    return build_random_model("tiny", SIZE, seed=3).state_dict()


def _tracker(path, **kw) -> InstrumentTracker:
    return InstrumentTracker.from_config(TrackerConfig(model_size="tiny", image_size=SIZE, checkpoint=str(path), **kw))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_official_layout_loads_and_matches_the_weights(tiny_state, tmp_path, shared_dir):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny_state}, path)
    tr = _tracker(path)
    assert tr.describe()["weights"] == f"checkpoint {path}"
    assert not tr.describe()["semantic_head_trained"]
    loaded = tr.backend.sam.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_state.items())
    # the same weights from safetensors give identical masks
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(st))
    frame = load_frames(shared_dir, 1)[0]
    a = tr.track(frame, [click(1, 430, 300)]).instruments[0]
    b = _tracker(st).track(frame, [click(1, 430, 300)]).instruments[0]
    assert np.array_equal(a.mask_logits, b.mask_logits)


def test_missing_checkpoint_needs_explicit_random_weights(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint configured"):
        InstrumentTracker.from_config(TrackerConfig(model_size="tiny", image_size=SIZE))
    with pytest.raises(CheckpointError, match="does not exist"):
        _tracker(tmp_path / "nope.pt")


def test_corrupt_checkpoint_is_refused(tiny_state, tmp_path):
    path = tmp_path / "corrupt.pt"
    torch.save({"model": tiny_state}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(CheckpointError, match="corrupt"):
        _tracker(path)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="safetensors"):
        _tracker(bad_st)


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="may run code"):
        _tracker(path)


def test_checkpoint_of_another_model_size_names_the_mismatch(tmp_path):
    small = build_random_model("small", SIZE, seed=0).state_dict()
    path = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": small}, path)
    with pytest.raises(CheckpointError, match="missing keys|shape mismatches|unexpected keys") as info:
        _tracker(path)
    assert "image_encoder.trunk.blocks" in str(info.value)


def test_unexpected_and_missing_keys_are_listed(tiny_state, tmp_path):
    state = dict(tiny_state)
    state.pop("no_mem_embed")
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys: no_mem_embed.*1 unexpected keys: extra.weight"):
        _tracker(path)
    torch.save(["not", "a", "dict"], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        _tracker(tmp_path / "list.pt")


def test_semantic_head_gives_model_classes(tiny_state, tmp_path, shared_dir):
    n_cls, dim = len(ENDOVIS17_CLASSES), 32
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(dim, 256, generator=gen)
    # every pointer projects onto class 4's embedding direction -> class 4 must win
    emb = torch.randn(n_cls, dim, generator=gen) * 0.01
    bias = torch.zeros(dim)
    bias[0] = 1e4
    emb[3, 0] = 1.0
    state = dict(tiny_state)
    state.update(
        {"semantic_head.proj.weight": proj, "semantic_head.proj.bias": bias, "semantic_head.class_embeddings": emb}
    )
    path = tmp_path / "sam2s.pt"
    torch.save({"model": state}, path)
    tr = _tracker(path)
    assert tr.describe()["semantic_head_trained"]
    frame = load_frames(shared_dir, 1)[0]
    r = tr.track(frame, [click(1, 430, 300, class_id=1)]).instruments[0]
    assert r.visible
    assert r.class_source == ClassSource.MODEL
    assert (r.class_id, r.class_name) == (4, ENDOVIS17_CLASSES[3])
    assert r.class_score > 0.9
    # a head whose class count differs from the vocabulary is refused
    state["semantic_head.class_embeddings"] = emb[:3]
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="3 classes but class_vocabulary has 7"):
        _tracker(path)

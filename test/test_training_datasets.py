"""Training data: DAVIS-style folders, bags, splits, and a clear error for every bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from sam2s_ros.training.config import DataConfig, SourceConfig
from sam2s_ros.training.datasets import DatasetError, load_davis_sequence, load_source, split_sequences
from sam2s_ros.training.sampling import clip_indices

pytestmark = pytest.mark.shared_data
SEQ = "dog"


@pytest.fixture
def seq_dir(tmp_path, shared_dir):
    """A copy of the first 6 frames + masks of a real DAVIS 2016 training sequence."""
    src = shared_dir / "data" / "davis2016_train" / SEQ
    dst = tmp_path / SEQ
    for sub in ("frames", "masks"):
        (dst / sub).mkdir(parents=True)
        for p in sorted((src / sub).iterdir())[:6]:
            shutil.copy(p, dst / sub / p.name)
    return dst


def test_reads_a_real_sequence(seq_dir):
    seq = load_davis_sequence(seq_dir, 128)
    assert seq.num_frames == 6
    assert seq.labels.shape == (6, 128, 128)
    assert seq.object_ids == [1]
    assert seq.read_frame(0).shape == (480, 854, 3)


def _first(folder):
    return sorted(folder.iterdir())[0]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: _first(d / "masks").unlink(), "6 frames but 5 masks"),
        (lambda d: _first(d / "masks").rename(d / "masks" / "99999.png"), "file names must match"),
        (lambda d: Image.fromarray(np.zeros((100, 100), np.uint8)).save(_first(d / "masks")), "mask is 100x100"),
        (
            lambda d: [Image.fromarray(np.zeros((480, 854), np.uint8)).save(p) for p in (d / "masks").iterdir()],
            "every mask is empty",
        ),
        (lambda d: _first(d / "masks").write_bytes(b"not a png"), "cannot read label image"),
        (lambda d: shutil.rmtree(d / "masks"), "masks/ is missing"),
        (
            lambda d: Image.fromarray(np.zeros((480, 854, 3), np.uint8)).save(_first(d / "masks")),
            "not a single-channel label image",
        ),
    ],
)
def test_bad_sequences_are_refused_with_the_reason(seq_dir, damage, message):
    damage(seq_dir)
    with pytest.raises(DatasetError, match=message):
        load_davis_sequence(seq_dir, 128)


def test_unreadable_frame_is_an_error_when_read(seq_dir):
    _first(seq_dir / "frames").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read frame"):
        load_davis_sequence(seq_dir, 128)


def test_source_filters_and_unknown_names(shared_dir):
    root = str(shared_dir / "data" / "davis2016_train")
    seqs = load_source(SourceConfig(path=root, sequences=["dog", "goat"], exclude=["goat"]), 0, 128, max_frames=3)
    assert [s.name for s in seqs] == ["dog"]
    with pytest.raises(DatasetError, match="not found"):
        load_source(SourceConfig(path=root, sequences=["blackswan"]), 0, 128)
    with pytest.raises(DatasetError, match="does not exist"):
        load_source(SourceConfig(path=root + "_nope"), 0, 128)


def test_class_map_and_split_by_sequence(tmp_path, shared_dir):
    cmap = tmp_path / "classes.yaml"
    cmap.write_text("dog: {1: dog}\ngoat: {1: goat}\n")
    root = str(shared_dir / "data" / "davis2016_train")
    seqs = load_source(SourceConfig(path=root, sequences=["dog", "goat"], class_map=str(cmap)), 0, 128, max_frames=3)
    assert {s.name: s.classes for s in seqs} == {"dog": {1: "dog"}, "goat": {1: "goat"}}
    train, val = split_sequences(seqs, DataConfig(val_sequences=["goat"]), seed=0)
    assert [s.name for s in train] == ["dog"]
    assert [s.name for s in val] == ["goat"]
    with pytest.raises(DatasetError, match="not among"):
        split_sequences(seqs, DataConfig(val_sequences=["camel"]), seed=0)


def test_hybrid_sampling_has_a_far_part_and_a_dense_window():
    data = DataConfig(clip_frames=8, far_frames=2, max_stride=1, reverse_prob=0.0)
    for seed in range(20):
        idx = clip_indices(100, data, np.random.default_rng(seed))
        assert len(idx) == 8
        assert idx == sorted(idx)
        assert len(set(idx)) == 8
        window = idx[3:]
        assert window == list(range(window[0], window[0] + 5))  # dense recent window, stride 1

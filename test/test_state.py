"""The tracker state file: complete validation, safe reads, atomic writes, confined names (no DDS).

A real random-weight tracker (128 px) on synthetic frames gives the valid state; every
hostile variant of it (test/hostile_states.py) is refused with a reason naming the
problem, and the tracker that refused it keeps its state and tracks on.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from sam2s_ros.errors import StateFileError
from sam2s_ros.node.state_store import MAX_NAME_CHARS, StateStore, check_name, default_state_dir
from sam2s_ros.tracking import state as tracker_state
from sam2s_ros.tracking.state_files import read_regular_file, write_atomic

from hostile_states import state_file_cases
from node_fixtures import synthetic_frame
from tracker_fixtures import click, small_tracker


@pytest.fixture(scope="module")
def tracked():
    """(tracker with 2 instruments after 4 frames, its exported valid state, a frame)."""
    tr = small_tracker(image_size=128)
    frame = synthetic_frame()
    tr.track(frame, [click(1, 60.0, 50.0), click(2, 100.0, 45.0)])
    for _ in range(3):
        tr.track(frame)
    return tr, tr.export_state(), frame


CASES = state_file_cases(max_instruments=8, max_cond_frames=4)


def test_battery_names_are_distinct():
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_state_is_refused_and_the_tracker_keeps_its_state(case, tracked, tmp_path):
    tr, valid, frame = tracked
    name, build, fragment = case
    path = tmp_path / f"{name}.pt"
    path.write_bytes(build(valid))
    before = (tr.instrument_ids, tr.frame_index, tr.memory_sizes())
    with pytest.raises(StateFileError) as info:
        tr.load_state(str(path))
    assert fragment in str(info.value), str(info.value)
    assert (tr.instrument_ids, tr.frame_index, tr.memory_sizes()) == before
    assert not os.path.exists("/tmp/sam2s_pwned")  # the pickled-code case never ran


def test_valid_state_round_trip_gives_identical_masks(tracked, tmp_path):
    tr, valid, frame = tracked
    path = str(tmp_path / "valid.pt")
    tracker_state.save_state(path, valid, overwrite=False)
    fresh = small_tracker(image_size=128)
    loaded = fresh.read_state(path)
    assert fresh.instrument_ids == []  # read_state touches nothing
    assert fresh.adopt_state(loaded) == [1, 2]
    assert fresh.frame_index == tr.frame_index == valid["frame_index"]
    expected, got = tr.track(frame), fresh.track(frame)
    for a, b in zip(expected.instruments, got.instruments, strict=True):
        assert np.array_equal(a.mask, b.mask)
    for inst in loaded.instruments.values():  # loaded tensors are new objects in the storage dtype
        entry = next(iter(inst.memory.cond.values()))
        assert entry.maskmem.dtype == torch.bfloat16
        assert entry.maskmem.shape == (64, 8, 8)


def test_bank_sizes_above_the_running_limits_are_refused(tracked, tmp_path):
    tr, valid, _ = tracked
    path = str(tmp_path / "state.pt")
    tracker_state.save_state(path, valid)
    tight = small_tracker(image_size=128, num_maskmem=2)  # short-term window of 1 frame
    with pytest.raises(StateFileError, match="divemem.num_maskmem"):
        tight.load_state(path)


def test_files_larger_than_any_state_are_refused_unread(tracked, tmp_path):
    tr, _, _ = tracked
    path = tmp_path / "huge.pt"
    with open(path, "wb") as f:  # sparse: costs no disk
        f.truncate(tr.state_spec().max_bytes() + 1)
    with pytest.raises(StateFileError, match="more than a state of this tracker can have"):
        tr.load_state(str(path))


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    link = tmp_path / "link.pt"
    (tmp_path / "target.pt").write_bytes(b"x")
    link.symlink_to(tmp_path / "target.pt")
    sock_path = tmp_path / "sock.pt"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for path, kind in ((fifo, "FIFO"), (folder, "directory"), (link, "symbolic link"), (sock_path, "socket")):
            with pytest.raises(StateFileError, match=f"is a {kind}, not a regular file"):
                read_regular_file(str(path), 1000)
            with pytest.raises(StateFileError, match=f"is a {kind}, not a regular file"):
                write_atomic(str(path), b"new", overwrite=True)
        with pytest.raises(StateFileError, match="does not exist"):
            read_regular_file(str(tmp_path / "missing.pt"), 1000)
        with pytest.raises(StateFileError, match="is a character device"):
            read_regular_file("/dev/zero", 1000)
    finally:
        sock.close()
    assert (tmp_path / "target.pt").read_bytes() == b"x"  # never written through the link


def test_atomic_write_refuses_to_overwrite_and_leaves_no_temporary_files(tmp_path):
    path = str(tmp_path / "s.pt")
    write_atomic(path, b"first", overwrite=False)
    with pytest.raises(StateFileError, match="exists; set overwrite"):
        write_atomic(path, b"second", overwrite=False)
    assert open(path, "rb").read() == b"first"
    write_atomic(path, b"third", overwrite=True)
    assert open(path, "rb").read() == b"third"
    with pytest.raises(StateFileError, match="cannot write"):
        write_atomic(str(tmp_path / "no_such_folder" / "s.pt"), b"x", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["s.pt"]


def test_serialisation_errors_become_state_file_errors():
    with pytest.raises(StateFileError, match="cannot serialise"):
        tracker_state.encode_state({"f": lambda: 0})  # torch.save raises a pickling error, not OSError


BAD_NAMES = [
    "",
    ".",
    "..",
    "../escape.pt",
    "a/b.pt",
    "/etc/passwd",
    ".hidden.pt",
    "-rf",
    "a..b",
    "name with space.pt",
    "nul\x00byte.pt",
    "new\nline.pt",
    "ümlaut.pt",
    "back\\slash.pt",
    "x" * (MAX_NAME_CHARS + 1),
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_state_names_outside_the_rule_are_refused(name, tmp_path):
    store = StateStore(str(tmp_path))
    with pytest.raises(StateFileError, match="state file name"):
        store.path_for_save(name)
    with pytest.raises(StateFileError, match="state file name"):
        store.path_for_load(name)


def test_good_names_resolve_inside_state_dir(tmp_path):
    for name in ("state.pt", "case_0423-left.v1.pt", "A" * MAX_NAME_CHARS):
        check_name(name)
        assert os.path.dirname(StateStore(str(tmp_path)).path_for_load(name)) == str(tmp_path)


def test_state_dir_default_and_creation(tmp_path):
    assert default_state_dir({"ROS_HOME": "/opt/ros_home"}) == default_state_dir({"ROS_HOME": "/opt/ros_home/"})
    assert str(default_state_dir({"ROS_HOME": "/opt/ros_home"})) == "/opt/ros_home/sam2s_state"
    assert str(default_state_dir({})).endswith(".ros/sam2s_state")
    store = StateStore(str(tmp_path / "new" / "states"))
    assert store.path_for_save("a.pt") == str(tmp_path / "new" / "states" / "a.pt")
    assert (os.stat(tmp_path / "new" / "states").st_mode & 0o777) == 0o700
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StateFileError, match="not a folder|cannot create"):
        StateStore(str(tmp_path / "file")).path_for_save("a.pt")

"""sam2s_ros.data.bags: rosbag2 I/O (typestore, writer/reader, is_bag, remove_bag)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sam2s_ros import codec
from sam2s_ros.data import bags
from sam2s_ros.errors import BagError

T0 = 1_700_000_000 * 10**9


def test_typestore_hashes_match_the_rosidl_build():
    """Types registered from msg/*.msg hash (RIHS01) like the CMake/rosidl build's."""
    assert (bags.find_msg_dir() / "Prompt.msg").is_file()
    store = bags.make_typestore()
    installed = Path(sys.prefix) / "share" / "sam2s_ros" / "msg"
    assert (installed / "Prompt.json").is_file(), f"no rosidl build installed in {installed} (run make setup)"
    for name in ("Prompt", "InstrumentMask", "InstrumentMaskArray"):
        type_json = json.loads((installed / f"{name}.json").read_text())
        hashes = {h["type_name"]: h["hash_string"] for h in type_json["type_hashes"]}
        assert store.hash_rihs01(f"sam2s_ros/msg/{name}") == hashes[f"sam2s_ros/msg/{name}"]
    assert bags.make_typestore(installed).hash_rihs01(codec.PROMPT_TYPE) == store.hash_rihs01(codec.PROMPT_TYPE)


def test_write_read_round_trip_and_is_bag(tmp_path):
    out = tmp_path / "bag"
    with bags.BagWriter(out, storage="sqlite3") as bag:
        bag.add_topic("/image", codec.IMAGE_TYPE)
        header = codec.make_header(T0, "f", bag.types)
        bag.write("/image", T0, codec.image_msg(np.full((2, 3), 7, np.uint8), "mono8", header, bag.types))
    assert bags.is_bag(out)
    assert not bags.is_bag(tmp_path)
    assert bags.bag_topics(out) == {"/image": codec.IMAGE_TYPE}
    (item,) = bags.read_messages(out)
    assert item.log_time_ns == T0
    np.testing.assert_array_equal(codec.image_to_array(item.msg), np.full((2, 3), 7, np.uint8))


def test_remove_bag_refuses_foreign_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(BagError, match="non-bag"):
        bags.remove_bag(tmp_path)
    assert (tmp_path / "notes.txt").is_file()

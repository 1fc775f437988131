"""sam2s_node in this process, talking to a peer node over real DDS.

Real tracker (random weights, image_size 256) on real laparoscopic frames; plus the node's
parameters, config file and launch file (checked without the launch package, which pip
cannot install).
"""

from __future__ import annotations

import ast
import os
import py_compile

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from sam2s_ros import codec
from sam2s_ros.errors import ConfigError
from sam2s_ros.msg import InstrumentMask
from sam2s_ros.node.parameters import ALL_PARAMS, declare_parameters, inference_threads, read_parameters
from sam2s_ros.srv import LoadState, RemoveInstrument, SaveState
from sam2s_ros.tracking.config import ENDOVIS17_CLASSES

from node_fixtures import (
    TEST_PARAMS,
    NodeFactory,
    add_prompt,
    click_prompt,
    image_msg,
    pixels,
    stamp_s,
    synthetic_frame,
    wait_until,
    with_stamp,
)
from tracker_fixtures import load_frames

WAIT = 60.0  # s; one frame takes ~0.3-3 s at 256 px on 2 busy cores


@pytest.fixture
def make_harness(rclpy_context):
    """Start an in-process Sam2sNode (+ peer) with TEST_PARAMS and extra overrides."""
    factory = NodeFactory(rclpy_context, wait_for_subscriber=True)
    yield factory
    factory.close()


def test_image_and_prompts_give_stamped_outputs_at_source_size(make_harness, shared_dir):
    frames = load_frames(shared_dir, 3)
    h, w = frames[0].shape[:2]
    node, peer = make_harness(publish_overlay=True)
    wait_until(lambda: peer.vocabulary, 10, "latched class vocabulary")
    assert list(peer.vocabulary[0].class_names) == list(ENDOVIS17_CLASSES)
    assert list(peer.vocabulary[0].class_ids) == list(range(1, 8))
    assert not peer.vocabulary[0].semantic_head_trained

    peer.publish_until_processed(image_msg(frames[0], 10.0), WAIT)
    assert peer.masks_with_stamp(10.0)[0].instruments == []

    # class given by id -> name from the vocabulary; a zero stamp applies to the next frame
    reply = add_prompt(peer, click_prompt(1, 430.0, 300.0, class_id=6))
    assert reply.accepted
    assert reply.reason == ""
    # class given by name only (not in the vocabulary), through the prompts topic
    peer.prompt_pub.publish(click_prompt(2, 120.5, 80.0, class_name="suction_irrigator"))
    wait_until(lambda: peer.latest_diag().get("prompts_waiting") == "2", 10, "both prompts queued")
    peer.image_pub.publish(image_msg(frames[1], 10.04))
    t = 10.04
    wait_until(
        lambda: (
            peer.masks_with_stamp(t)
            and with_stamp(peer.classes, t)
            and with_stamp(peer.labels, t)
            and with_stamp(peer.overlays, t)
        ),
        WAIT,
        "masks, classes, label image and overlay of the prompted frame",
    )

    masks = peer.masks_with_stamp(t)[0]
    assert masks.header.frame_id == "endoscope"
    assert masks.latency > 0
    by_id = {m.instrument_id: m for m in masks.instruments}
    assert sorted(by_id) == [1, 2]
    assert (by_id[1].class_id, by_id[1].class_name, by_id[1].class_source) == (
        6,
        "monopolar_curved_scissors",
        InstrumentMask.CLASS_SOURCE_PROMPT,
    )
    assert (by_id[2].class_id, by_id[2].class_name, by_id[2].class_source) == (
        -1,
        "suction_irrigator",
        InstrumentMask.CLASS_SOURCE_PROMPT,
    )
    assert (masks.image_width, masks.image_height) == (w, h)
    for m in masks.instruments:
        # default mask_format cropped: the mono8 mask covers exactly the roi, at its offset
        assert (m.mask_x_offset, m.mask_y_offset) == (m.roi.x_offset, m.roi.y_offset)
        assert (m.mask.width, m.mask.height, m.mask.encoding) == (m.roi.width, m.roi.height, "mono8")
        assert m.mask.header.stamp == masks.header.stamp
        assert m.mask.header.frame_id == "endoscope"
        mask = codec.instrument_mask(m, (h, w))
        if mask.any():
            ys, xs = np.nonzero(mask)
            roi = (m.roi.x_offset, m.roi.y_offset, m.roi.width, m.roi.height)
            assert roi == (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())

    classes = with_stamp(peer.classes, t)[0]
    assert classes.header.frame_id == "endoscope"
    assert [(c.instrument_id, c.class_name, c.class_source) for c in classes.instruments] == [
        (1, "monopolar_curved_scissors", 1),
        (2, "suction_irrigator", 1),
    ]

    label_msg = with_stamp(peer.labels, t)[0]
    assert (label_msg.width, label_msg.height, label_msg.encoding, label_msg.header.frame_id) == (
        w,
        h,
        "mono8",
        "endoscope",
    )
    label = pixels(label_msg)
    any_mask = np.zeros((h, w), bool)
    for m in masks.instruments:
        mask = codec.instrument_mask(m, (h, w))
        any_mask |= mask
        assert np.all(mask[label == m.instrument_id])  # a labelled pixel lies inside that instrument's mask
    np.testing.assert_array_equal(label > 0, any_mask)  # background exactly where no mask is
    assert set(np.unique(label)) <= {0, 1, 2}

    overlay = with_stamp(peer.overlays, t)[0]
    assert (overlay.width, overlay.height, overlay.encoding) == (w, h, "rgb8")


def test_prompt_stamped_with_a_held_frame_applies_to_that_frame(make_harness, shared_dir):
    frames = load_frames(shared_dir, 4)
    node, peer = make_harness()
    stamps = [20.0, 20.04, 20.08]
    peer.publish_until_processed(image_msg(frames[0], stamps[0]), WAIT)
    for frame, t in zip(frames[1:3], stamps[1:], strict=True):
        peer.image_pub.publish(image_msg(frame, t))
    wait_until(lambda: peer.masks_with_stamp(stamps[-1]), WAIT, "the last frame processed")
    assert all(m.instruments == [] for m in list(peer.masks))

    reply = add_prompt(peer, click_prompt(1, 430.0, 300.0, stamp=stamps[0]))
    assert reply.accepted, reply.reason
    wait_until(
        lambda: any(m.instruments for m in peer.masks_with_stamp(stamps[0])),
        WAIT,
        "the held frame re-tracked with the prompt",
    )
    first_with_instrument = next(m for m in list(peer.masks) if m.instruments)
    assert stamp_s(first_with_instrument.header) == stamps[0]
    assert first_with_instrument.header.frame_id == "endoscope"
    assert [m.instrument_id for m in first_with_instrument.instruments] == [1]
    assert node.tracker.memory_sizes()[1]["cond"] == 1  # that frame became its conditioning frame

    # a stamp that is not held (here: never seen) applies to the next processed frame
    reply = add_prompt(peer, click_prompt(2, 100.0, 100.0, stamp=99.0))
    assert reply.accepted, reply.reason
    peer.image_pub.publish(image_msg(frames[3], 20.12))
    wait_until(lambda: peer.masks_with_stamp(20.12), WAIT, "the next frame")
    assert [m.instrument_id for m in peer.masks_with_stamp(20.12)[0].instruments] == [1, 2]
    assert not peer.masks_with_stamp(99.0)
    assert node.tracker.memory_sizes()[2]["cond"] == 1


def test_services_remove_reset_save_load(make_harness, tmp_path):
    node, peer = make_harness(label_image_encoding="mono16", state_dir=str(tmp_path / "states"))
    frame = synthetic_frame()
    peer.publish_until_processed(image_msg(frame, 30.0), WAIT)
    for iid in (1, 300):  # 300 fits the mono16 label image
        assert add_prompt(peer, click_prompt(iid, 80.0, 50.0)).accepted
    peer.image_pub.publish(image_msg(frame, 30.1))
    wait_until(lambda: peer.masks_with_stamp(30.1), WAIT, "prompted frame")
    assert [m.instrument_id for m in peer.masks_with_stamp(30.1)[0].instruments] == [1, 300]
    wait_until(lambda: with_stamp(peer.labels, 30.1), 10, "mono16 label image")
    label = with_stamp(peer.labels, 30.1)[0]
    assert label.encoding == "mono16"
    assert set(np.unique(pixels(label, np.uint16))) <= {0, 1, 300}

    state = tmp_path / "states" / "state.pt"  # state_dir is created on the first save
    reply = peer.call(SaveState, "save_state", SaveState.Request(name="state.pt"))
    assert reply.success, reply.reason
    assert reply.path == str(state)
    assert state.is_file()
    reply = peer.call(SaveState, "save_state", SaveState.Request(name="state.pt"))
    assert not reply.success
    assert "overwrite" in reply.reason
    assert peer.call(SaveState, "save_state", SaveState.Request(name="state.pt", overwrite=True)).success
    reply = peer.call(SaveState, "save_state", SaveState.Request(name=str(tmp_path / "elsewhere.pt")))
    assert not reply.success
    assert "invalid state file name" in reply.reason

    reply = peer.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=300))
    assert reply.success
    reply = peer.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=300))
    assert not reply.success
    assert "300" in reply.reason

    reply = peer.call(Trigger, "reset", Trigger.Request())
    assert reply.success
    assert "forgotten" in reply.message
    peer.image_pub.publish(image_msg(frame, 30.2))
    wait_until(lambda: peer.masks_with_stamp(30.2), WAIT, "frame after reset")
    after = peer.masks_with_stamp(30.2)[0]
    assert after.instruments == []
    assert after.frame_index == 0

    reply = peer.call(LoadState, "load_state", LoadState.Request(name="state.pt"))
    assert reply.success, reply.reason
    assert list(reply.instrument_ids) == [1, 300]
    reply = peer.call(LoadState, "load_state", LoadState.Request(name="missing.pt"))
    assert not reply.success
    assert "missing.pt" in reply.reason
    peer.image_pub.publish(image_msg(frame, 30.3))
    wait_until(lambda: peer.masks_with_stamp(30.3), WAIT, "frame after load")
    assert [m.instrument_id for m in peer.masks_with_stamp(30.3)[0].instruments] == [1, 300]


# ---- parameters, config file, launch file (no tracker) -------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_inference_threads_leave_one_core_for_ros_io():
    assert inference_threads(3, usable_cores=16) == 3  # an explicit value is kept
    assert inference_threads(0, usable_cores=16) == 15
    assert inference_threads(0, usable_cores=2) == 1
    assert inference_threads(0, usable_cores=1) == 1  # never 0
    assert inference_threads(0) == max(1, len(os.sched_getaffinity(0)) - 1)


def test_config_file_lists_every_parameter_with_its_default(repo_root):
    tree = yaml.safe_load((repo_root / "config" / "sam2s.yaml").read_text())
    assert list(tree) == ["/**"]
    values = _flatten(tree["/**"]["ros__parameters"])
    defaults = {spec.name: spec.default for spec in ALL_PARAMS}
    assert set(values) == set(defaults)
    for name, default in defaults.items():
        assert values[name] == default, name
        assert type(values[name]) is type(default), name


def test_docs_list_every_parameter(repo_root):
    text = (repo_root / "docs" / "node_interface.md").read_text()
    missing = [spec.name for spec in ALL_PARAMS if f"`{spec.name}`" not in text]
    assert not missing


@pytest.mark.parametrize("key", ["/**", "sam2s_node"])
def test_params_file_key_variants(repo_root, tmp_path, ros_domain_id, key):
    text = (repo_root / "config" / "sam2s.yaml").read_text().replace("/**:", f"{key}:", 1)
    text = text.replace("image_size: 1024", "image_size: 512")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    context = Context()
    rclpy.init(
        args=["--ros-args", "--params-file", str(path), "-p", "allow_random_weights:=true"],
        context=context,
        domain_id=ros_domain_id,
    )
    try:
        node = Node("sam2s_node", context=context)
        declare_parameters(node)
        cfg, settings = read_parameters(node)
        assert cfg.image_size == 512
        assert cfg.allow_random_weights
        assert cfg.divemem.num_maskmem == 7
        assert settings.image_qos == "sensor_data"
        node.destroy_node()
    finally:
        context.try_shutdown()


@pytest.mark.parametrize(
    "override,message",
    [
        (("image_size", 100), "image_size"),
        (("image_size", 500), "steps of 32"),
        (("backend", "caffe"), "backend"),
        (("image_qos", "fast"), "image_qos"),
        (("mask_threshold", "high"), "mask_threshold"),
        (("allow_random_weights", False), "models/README.md"),
    ],
)
def test_invalid_parameters_raise_config_error(rclpy_context, override, message):
    params = {**TEST_PARAMS, override[0]: override[1]}
    node = Node(
        "sam2s_node", context=rclpy_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
    )
    try:
        with pytest.raises(ConfigError, match=message):
            declare_parameters(node)
            read_parameters(node)
    finally:
        node.destroy_node()


def test_launch_file_is_valid_python_with_documented_arguments(repo_root):
    """The launch file compiles and declares its arguments from sam2s_ros/launch_args.py
    (test_launch.py runs it against stand-ins for launch / launch_ros)."""
    path = repo_root / "launch" / "sam2s.launch.py"
    py_compile.compile(str(path), doraise=True)
    tree = ast.parse(path.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    literal_declarations = [
        call
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", None) == "DeclareLaunchArgument"
        and call.args
        and isinstance(call.args[0], ast.Constant)
    ]
    assert literal_declarations == [], "declare arguments from LAUNCH_ARGS, not by hand"
    assert "LAUNCH_ARGS" in path.read_text()

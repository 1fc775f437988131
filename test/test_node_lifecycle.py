"""sam2s_node as a managed (lifecycle) node, and its dynamic parameters, over real DDS.

A peer node drives the node with lifecycle_msgs ChangeState / GetState and rcl_interfaces
SetParameters service calls (no ros2 CLI here). The node runs in this process (its own
executor threads, real DDS between it and the peer), with the reference model on random
weights at 256 px and real CholecSeg8k frames. Two nodes in all: one started with
``autostart:=false`` and walked through every transition, one started the default way
(``autostart``) whose parameters are changed while it tracks.
"""

from __future__ import annotations

import gc
import math
import threading
import time
import weakref

import pytest
import rclpy
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
from rclpy.context import Context
from rclpy.parameter import Parameter, parameter_value_to_python
from std_srvs.srv import Trigger

from sam2s_ros.errors import CheckpointError
from sam2s_ros.node.node import Sam2sNode
from sam2s_ros.node.parameters import ALL_PARAMS, DYNAMIC_PARAMS, READ_ONLY_REASON, change_refusal
from sam2s_ros.srv import RemoveInstrument, SaveState

from node_fixtures import TEST_PARAMS, NodeFactory, Peer, add_prompt, click_prompt, image_msg, pixels, wait_until
from tracker_fixtures import load_frames

pytestmark = pytest.mark.shared_data

WAIT = 60.0
QUIET_S = 3.0  # how long "publishes nothing" is watched
CLICKS = {1: (430.0, 300.0), 2: (200.0, 150.0)}


@pytest.fixture
def make_node(rclpy_context):
    """An in-process Sam2sNode with TEST_PARAMS + overrides, and a peer spinning both."""
    factory = NodeFactory(rclpy_context, wait_for_subscriber=False)
    yield factory
    factory.close()


def get_state(peer: Peer) -> str:
    return peer.call(GetState, "sam2s_node/get_state", GetState.Request()).current_state.label


def change_state(peer: Peer, transition_id: int = 0, label: str = "") -> bool:
    request = ChangeState.Request(transition=Transition(id=transition_id, label=label))
    return peer.call(ChangeState, "sam2s_node/change_state", request, timeout=WAIT).success


def prompt_instruments(peer: Peer, frames, t0: float) -> float:
    """Track frames[0], prompt CLICKS, track frames[1]; returns its stamp."""
    peer.publish_until_processed(image_msg(frames[0], t0), WAIT)
    for iid, (x, y) in CLICKS.items():
        reply = add_prompt(peer, click_prompt(iid, x, y))
        assert reply.accepted, reply.reason
    peer.publish_until_processed(image_msg(frames[1], t0 + 1), WAIT)
    return t0 + 1


def instrument_ids(peer: Peer, t: float) -> list[int]:
    return [m.instrument_id for m in peer.masks_with_stamp(t)[0].instruments]


def outputs_count(peer: Peer) -> int:
    return len(peer.masks) + len(peer.labels) + len(peer.classes) + len(peer.overlays)


def assert_quiet(peer: Peer, frame, t: float) -> None:
    """Publish a frame for QUIET_S seconds: nothing may come out."""
    before = outputs_count(peer)
    deadline = time.monotonic() + QUIET_S
    while time.monotonic() < deadline:
        peer.image_pub.publish(image_msg(frame, t))
        time.sleep(0.2)
    assert outputs_count(peer) == before
    assert not peer.masks_with_stamp(t)


def test_lifecycle_transitions_over_dds(make_node, shared_dir):
    frames = load_frames(shared_dir, 3)
    node, peer = make_node(autostart=False)

    # ---- unconfigured: no model, no subscriptions, no outputs; services refuse -------------
    assert get_state(peer) == "unconfigured"
    assert node.tracker is None
    wait_until(lambda: peer.latest_diag().get("lifecycle_state") == "unconfigured", 15, "diagnostics in unconfigured")
    status = [s for m in list(peer.diagnostics) for s in m.status if "sam2s" in s.name][-1]
    assert "not tracking" in status.message
    assert peer.image_pub.get_subscription_count() == 0
    assert_quiet(peer, frames[0], 1.0)
    assert not peer.vocabulary
    reply = add_prompt(peer, click_prompt(1, 10.0, 10.0))
    assert not reply.accepted
    assert "configure it first" in reply.reason
    reply = peer.call(Trigger, "reset", Trigger.Request())
    assert (reply.success, "unconfigured" in reply.message) == (False, True)
    assert not peer.call(SaveState, "save_state", SaveState.Request(name="x.pt")).success

    # ---- transitions that are not possible now, or do not exist: refused, nothing ends -------
    assert not change_state(peer, Transition.TRANSITION_ACTIVATE)  # not from unconfigured
    assert not change_state(peer, 255)  # no such transition
    assert not change_state(peer, label="warp_drive")
    assert not change_state(peer, label="x" * 10000)
    assert get_state(peer) == "unconfigured"

    # ---- a configure that fails: FAILURE (expected error) or ERROR (unexpected), logged ----
    real_configure = node._configure

    def failing_configure(error):
        def configure():
            raise error

        return configure

    node._configure = failing_configure(CheckpointError("checkpoint /nowhere.pt not found"))
    assert not change_state(peer, Transition.TRANSITION_CONFIGURE)
    assert get_state(peer) == "unconfigured"
    wait_until(
        lambda: any("configure failed" in line and "/nowhere.pt" in line for line in peer.log_lines()),
        10,
        "the FAILURE reason logged",
    )
    node._configure = failing_configure(RuntimeError("configure exploded"))
    assert not change_state(peer, Transition.TRANSITION_CONFIGURE)
    assert get_state(peer) == "unconfigured"  # ERROR -> on_error -> unconfigured
    wait_until(lambda: "configure exploded" in peer.latest_diag().get("internal_errors.last", ""), 15, "counted")
    node._configure = real_configure

    # ---- configure: model loaded, still not tracking -----------------------------------------
    assert change_state(peer, Transition.TRANSITION_CONFIGURE)
    assert get_state(peer) == "inactive"
    assert node.tracker is not None
    assert peer.image_pub.get_subscription_count() == 0
    assert_quiet(peer, frames[0], 2.0)

    # ---- activate: tracks -------------------------------------------------------------------
    assert change_state(peer, label="activate")
    assert get_state(peer) == "active"
    peer.wait_for_subscriber()
    wait_until(lambda: peer.vocabulary, 10, "latched class vocabulary after activate")
    t = prompt_instruments(peer, frames, 10.0)
    assert instrument_ids(peer, t) == [1, 2]
    wait_until(lambda: peer.latest_diag().get("lifecycle_state") == "active", 15, "diagnostics in active")

    # ---- deactivate: outputs stop, the instruments stay -------------------------------------
    assert change_state(peer, Transition.TRANSITION_DEACTIVATE)
    assert get_state(peer) == "inactive"
    wait_until(lambda: peer.image_pub.get_subscription_count() == 0, 10, "image subscription removed")
    assert_quiet(peer, frames[2], 20.0)
    # the last frame tracked before (a repeat of the last frame may have been in flight, and
    # deactivate lets the frame being tracked finish)
    index_before = max(m.frame_index for m in list(peer.masks))
    assert node.tracker.instrument_ids == [1, 2]
    assert node.tracker.memory_sizes()[1]["cond"] == 1
    wait_until(lambda: peer.latest_diag().get("lifecycle_state") == "inactive", 15, "diagnostics in inactive")
    assert peer.latest_diag()["instrument_ids"] == "1,2"

    # ---- activate again: the same instruments, tracking goes on from where it stopped -------
    assert change_state(peer, Transition.TRANSITION_ACTIVATE)
    peer.wait_for_subscriber()
    peer.publish_until_processed(image_msg(frames[2], 30.0), WAIT)
    resumed = peer.masks_with_stamp(30.0)[0]
    assert [m.instrument_id for m in resumed.instruments] == [1, 2]
    assert resumed.frame_index == index_before + 1  # the frames sent while inactive were not tracked

    # ---- deactivate / activate while a camera streams at 30 Hz: nothing breaks ---------------
    streaming = threading.Event()

    def stream() -> None:
        k = 0
        while not streaming.is_set():
            k += 1
            peer.image_pub.publish(image_msg(frames[k % 3], 40.0 + k / 30))
            time.sleep(1 / 30)

    camera = threading.Thread(target=stream, daemon=True)
    camera.start()
    try:
        for _ in range(2):
            assert change_state(peer, Transition.TRANSITION_DEACTIVATE)
            assert change_state(peer, Transition.TRANSITION_ACTIVATE)
            received = len(peer.masks)
            wait_until(lambda: len(peer.masks) > received, WAIT, "outputs again after activate")
    finally:
        streaming.set()
        camera.join(timeout=5)
    assert peer._thread.is_alive(), "the executor spinning the node died"
    assert [m.instrument_id for m in list(peer.masks)[-1].instruments] == [1, 2]

    # ---- deactivate + cleanup: the model is freed --------------------------------------------
    assert change_state(peer, Transition.TRANSITION_DEACTIVATE)
    tracker_ref = weakref.ref(node.tracker)
    assert change_state(peer, Transition.TRANSITION_CLEANUP)
    assert get_state(peer) == "unconfigured"
    assert node.tracker is None
    gc.collect()
    assert tracker_ref() is None, "the tracker (and its model) is still referenced after cleanup"
    reply = peer.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=1))
    assert not reply.success
    assert "configure it first" in reply.reason

    # ---- the lifecycle services are guarded like every other callback ------------------------
    machine = node._state_machine

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("state machine exploded")

    node._state_machine = Broken()
    try:
        assert not change_state(peer, Transition.TRANSITION_CONFIGURE)
        peer.call(GetAvailableTransitions, "sam2s_node/get_available_transitions", GetAvailableTransitions.Request())
    finally:
        node._state_machine = machine
    wait_until(lambda: "state machine exploded" in peer.latest_diag().get("internal_errors.last", ""), 15, "counted")
    assert get_state(peer) == "unconfigured"

    # ---- shutdown from unconfigured ----------------------------------------------------------
    assert change_state(peer, label="shutdown")
    reply = peer.call(GetState, "sam2s_node/get_state", GetState.Request())
    assert (reply.current_state.id, reply.current_state.label) == (State.PRIMARY_STATE_FINALIZED, "finalized")


def _set(peer: Peer, **values) -> list:
    params = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return list(peer.call(SetParameters, "sam2s_node/set_parameters", SetParameters.Request(parameters=params)).results)


def _get(peer: Peer, name: str):
    reply = peer.call(GetParameters, "sam2s_node/get_parameters", GetParameters.Request(names=[name]))
    return parameter_value_to_python(reply.values[0])


def _mask_area(peer: Peer, t: float, iid: int) -> float:
    msg = next(m for m in peer.masks_with_stamp(t)[0].instruments if m.instrument_id == iid)
    return float((pixels(msg.mask) > 0).mean())


def test_dynamic_parameters_apply_on_the_next_frame_and_keep_tracking(make_node, shared_dir):
    frames = load_frames(shared_dir, 3)
    node, peer = make_node(mask_format="full")  # autostart (default): configured and active at once
    assert get_state(peer) == "active"
    peer.wait_for_subscriber()
    t = prompt_instruments(peer, frames, 50.0)
    tracker = node.tracker
    area = _mask_area(peer, t, 1)
    assert 0.0 < area < 1.0  # random weights: logits within about +-0.4, threshold 0.0

    # mask_threshold: every logit lies below 5.0 and above -5.0 -> empty, then full masks
    assert [r.successful for r in _set(peer, mask_threshold=5.0)] == [True]
    peer.publish_until_processed(image_msg(frames[2], 60.0), WAIT)
    assert _mask_area(peer, 60.0, 1) == 0.0
    assert [r.successful for r in _set(peer, mask_threshold=-5.0, publish_overlay=True)] == [True, True]
    peer.publish_until_processed(image_msg(frames[2], 61.0), WAIT)
    assert _mask_area(peer, 61.0, 1) == 1.0
    wait_until(
        lambda: any(abs(m.header.stamp.sec - 61) < 1 for m in list(peer.overlays)), 10, "the overlay switched on"
    )
    masks = peer.masks_with_stamp(61.0)[0]
    assert [m.instrument_id for m in masks.instruments] == [1, 2]  # tracking state kept
    assert node.tracker is tracker
    assert _get(peer, "mask_threshold") == -5.0

    # DiveMem thresholds reach the memory banks of the running instruments
    assert all(r.successful for r in _set(peer, **{"divemem.iou_threshold": 0.5, "divemem.long_term_enabled": False}))
    assert tracker.cfg.divemem.iou_threshold == 0.5
    assert not tracker._instruments[1].memory.cfg.long_term_enabled

    # refusals: read-only, wrong type, out of range, not finite; the value stays
    for values, fragment in (
        ({"image_size": 512}, READ_ONLY_REASON),
        ({"backend": "onnxruntime"}, READ_ONLY_REASON),
        ({"image_topic": "/other"}, READ_ONLY_REASON),
        ({"autostart": False}, READ_ONLY_REASON),
        ({"mask_threshold": "high"}, "wrong type"),
        ({"mask_threshold": 1}, "wrong type"),  # an integer for a double
        ({"mask_threshold": 100.0}, "out of range"),
        ({"mask_threshold": math.nan}, "not a finite number"),
        ({"divemem.iou_threshold": 1.5}, "out of range"),
        ({"publish_overlay": "yes"}, "wrong type"),
        ({"max_image_width": 0}, "out of range"),
    ):
        (result,) = _set(peer, **values)
        assert not result.successful, values
        assert fragment in result.reason, (values, result.reason)
        assert next(iter(values)) in result.reason
    atomic = SetParametersAtomically.Request(
        parameters=[
            Parameter("mask_threshold", value=2.0).to_parameter_msg(),
            Parameter("device", value="cuda").to_parameter_msg(),
        ]
    )
    result = peer.call(SetParametersAtomically, "sam2s_node/set_parameters_atomically", atomic).result
    assert not result.successful
    assert READ_ONLY_REASON in result.reason
    assert _get(peer, "mask_threshold") == -5.0  # all or nothing
    assert tracker.cfg.mask_threshold == -5.0
    wait_until(lambda: int(peer.latest_diag().get("bad_input.invalid_parameter", 0)) >= 12, 15, "refusals counted")

    peer.publish_until_processed(image_msg(frames[0], 62.0), WAIT)
    masks = peer.masks_with_stamp(62.0)[0]
    assert [m.instrument_id for m in masks.instruments] == [1, 2]
    assert _mask_area(peer, 62.0, 1) == 1.0

    # mask_format: from full-frame masks to masks cropped to their roi on the next frame
    assert [r.successful for r in _set(peer, mask_threshold=0.0, mask_format="cropped")] == [True, True]
    peer.publish_until_processed(image_msg(frames[2], 63.0), WAIT)
    for m in peer.masks_with_stamp(63.0)[0].instruments:
        assert (m.mask.width, m.mask.height) == (m.roi.width, m.roi.height)
        assert (m.mask_x_offset, m.mask_y_offset) == (m.roi.x_offset, m.roi.y_offset)
    (result,) = _set(peer, mask_format="jpeg")
    assert "not one of cropped, full" in result.reason


def test_docs_and_config_mark_exactly_the_dynamic_parameters(repo_root):
    rows = [line for line in (repo_root / "docs" / "node_interface.md").read_text().splitlines() if line[:3] == "| `"]
    marked_rows = {row.split("`")[1] for row in rows if "**(dynamic)**" in row}
    assert marked_rows == DYNAMIC_PARAMS
    config = (repo_root / "config" / "sam2s.yaml").read_text().splitlines()
    marked_config = {line.split(":")[0].strip() for line in config if "# (dynamic)" in line}
    assert marked_config == {name.split(".")[-1] for name in DYNAMIC_PARAMS}


def test_each_parameter_is_dynamic_or_read_only_once():
    """The table decides; model, backend, device, image_size, topics and QoS stay read-only."""
    specs = {spec.name: spec for spec in ALL_PARAMS}
    for name in ("model_size", "checkpoint", "backend", "device", "image_size", "onnx_dir", "autostart", "state_dir"):
        assert not specs[name].dynamic, name
    for name, spec in specs.items():
        if name.endswith("_topic") or "qos" in name or name.startswith("divemem.num") or name == "image_transport":
            assert not spec.dynamic, name
        assert spec.descriptor().read_only == (name not in DYNAMIC_PARAMS)
    assert {"mask_threshold", "publish_overlay", "divemem.iou_threshold"} <= DYNAMIC_PARAMS
    assert change_refusal("mask_threshold", 0.5) is None
    assert change_refusal("publish_overlay", True) is None
    assert change_refusal("fill_hole_area", 8) is None
    assert "wrong type" in change_refusal("fill_hole_area", True)  # a bool is no integer
    assert change_refusal("no_such_parameter", 1) is None  # rclpy refuses undeclared names itself
    assert change_refusal("image_size", 512) == f"parameter 'image_size' is {READ_ONLY_REASON}"


def test_a_destroyed_node_leaves_logging_to_the_next_one(ros_domain_id):
    """destroy_node finalises the rcl node at once (rclpy's LifecycleNode alone would leave it
    to garbage collection, after its context is gone, which ended logging for later nodes)."""
    params = [Parameter(k, value=v) for k, v in {**TEST_PARAMS, "autostart": False}.items()]
    first_context = Context()
    rclpy.init(context=first_context, domain_id=ros_domain_id)
    first = Sam2sNode(context=first_context, parameter_overrides=params)
    first.destroy_node()
    first_context.try_shutdown()

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = Sam2sNode(context=context, parameter_overrides=params)
    peer = Peer(context, extra_nodes=[node])
    del first  # collected only now, while the next node runs (as between two tests)
    gc.collect()
    try:
        wait_until(lambda: peer.latest_diag().get("lifecycle_state") == "unconfigured", 15, "diagnostics")
        node.get_logger().warning("still logging after the first node went")
        wait_until(lambda: any("still logging" in line for line in peer.log_lines()), 10, "the line on /rosout")
    finally:
        peer.close()
        node.destroy_node()
        context.try_shutdown()

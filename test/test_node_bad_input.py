"""Bad input never stops sam2s_node.

Each case is refused with a reason, logged (identical messages throttled), counted by kind
in /diagnostics, and a good frame afterwards is still tracked. Real node, real DDS, real
tracker (random weights, 256 px); synthetic images.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Point
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from sam2s_ros.msg import Prompt
from sam2s_ros.node import node as node_module
from sam2s_ros.node.diagnostics import BAD_INPUT_KINDS
from sam2s_ros.node.guard import failure_response, run_supervised
from sam2s_ros.node.node import Sam2sNode
from sam2s_ros.srv import AddPrompt, RemoveInstrument

from node_fixtures import TEST_PARAMS, Peer, header, image_msg, synthetic_frame, wait_until

WAIT = 60.0
LIMITS = {"max_image_width": 320, "max_image_height": 240, "max_instruments": 2}


@pytest.fixture
def harness(rclpy_context, request):
    overrides = getattr(request, "param", {})
    params = {**TEST_PARAMS, **LIMITS, **overrides}
    node = Sam2sNode(context=rclpy_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    peer = Peer(rclpy_context, extra_nodes=[node])
    if overrides.get("image_transport") == "compressed":
        peer.compressed_pub = peer.node.create_publisher(CompressedImage, "image_raw/compressed", 10)
        wait_until(lambda: peer.compressed_pub.get_subscription_count() > 0, 20, "compressed subscription")
    else:
        peer.wait_for_subscriber()
    yield node, peer
    peer.close()
    assert node.stop(timeout=30)
    node.destroy_node()


def click(instrument_id: int, x: float, y: float, mode: int = Prompt.MODE_NEW) -> Prompt:
    return Prompt(
        header=header(0.0, ""), instrument_id=instrument_id, mode=mode, points=[Point(x=x, y=y)], point_labels=[1]
    )


def add(peer: Peer, prompt: Prompt):
    return peer.call(AddPrompt, "add_prompt", AddPrompt.Request(prompt=prompt))


def counts_reach(peer: Peer, expected: dict[str, int]) -> bool:
    diag = peer.latest_diag()
    return bool(diag) and all(int(diag.get(f"bad_input.{k}", 0)) >= n for k, n in expected.items())


def logged(peer: Peer, *fragments: str) -> bool:
    return any(all(f in line for f in fragments) for line in peer.log_lines())


def test_prompt_before_any_image_is_refused(harness):
    node, peer = harness
    reply = add(peer, click(1, 10.0, 10.0))
    assert not reply.accepted
    assert reply.reason == "no image received yet"
    peer.prompt_pub.publish(click(2, 10.0, 10.0))  # same on the topic: logged + counted
    wait_until(lambda: counts_reach(peer, {"prompt_before_image": 2}), 15, "prompt_before_image counted twice")
    wait_until(lambda: logged(peer, "prompt_before_image", "no image received yet"), 10, "the refusal logged")
    diag = peer.latest_diag()
    assert diag["bad_input.prompt_before_image.last_reason"] == "no image received yet"
    assert all(f"bad_input.{k}" in diag for k in BAD_INPUT_KINDS)


def test_bad_images_are_refused_counted_and_logged_once(harness):
    node, peer = harness
    peer.publish_until_processed(image_msg(synthetic_frame(), 0.5), WAIT)  # connection settled
    depth = Image(header=header(1.0), height=4, width=4, encoding="32FC1", step=16, data=bytes(64))
    short = image_msg(synthetic_frame(), 4.0)
    short.data = bytes(short.data)[:-10]
    bad = [depth] * 5 + [
        Image(header=header(2.0), height=0, width=0, encoding="rgb8"),
        image_msg(synthetic_frame(241, 100), 3.0),  # taller than max_image_height 240
        short,
    ]
    for msg in bad:  # paced: the image subscription is best effort with depth 5
        peer.image_pub.publish(msg)
        time.sleep(0.05)
    expected = {"unsupported_encoding": 5, "zero_size_image": 1, "image_too_large": 1, "malformed_image": 1}
    wait_until(lambda: counts_reach(peer, expected), 15, f"bad image counts {expected}")
    wait_until(
        lambda: (
            logged(peer, "unsupported_encoding", "32FC1")
            and logged(peer, "zero_size_image", "zero size")
            and logged(peer, "image_too_large", "100x241")
            and logged(peer, "malformed_image", "bytes")
        ),
        10,
        "each bad image logged",
    )
    assert sum("32FC1" in line for line in peer.log_lines()) == 1  # 5 identical inputs, one log line
    assert int(peer.latest_diag()["frames_received"]) >= 9
    assert not any(peer.masks_with_stamp(t) for t in (1.0, 2.0, 3.0, 4.0))  # no output for bad frames

    peer.image_pub.publish(image_msg(synthetic_frame(), 5.0))  # the node still serves
    wait_until(lambda: peer.masks_with_stamp(5.0), WAIT, "output for a good frame after the bad ones")


# Prompts AddPrompt refuses on a 160 x 120 frame before any instrument is tracked:
# (case, prompt builder, fragment of the reason). One node serves them all, in order.
PROMPT_REFUSALS = [
    ("nan_point", lambda: click(1, math.nan, 10.0), "NaN"),
    ("point_outside_frame", lambda: click(1, 500.0, 10.0), "outside"),
    ("refine_unknown_instrument", lambda: click(1, 10.0, 10.0, mode=Prompt.MODE_REFINE), "not tracked"),
    (
        "points_without_labels",
        lambda: Prompt(header=header(0.0, ""), instrument_id=1, points=[Point()], point_labels=[]),
        "labels",
    ),
    ("id_above_mono8_label_image", lambda: click(256, 10.0, 10.0), "mono8"),
]


def test_bad_prompts_and_service_calls_are_refused_with_reasons(harness):
    node, peer = harness
    frame = synthetic_frame()  # 160 x 120
    peer.publish_until_processed(image_msg(frame, 1.0), WAIT)

    for case, make, reason in PROMPT_REFUSALS:
        reply = add(peer, make())
        assert not reply.accepted, case
        assert reason in reply.reason, case
    reply = peer.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=42))
    assert not reply.success
    assert "42" in reply.reason
    peer.prompt_pub.publish(click(1, math.inf, 10.0))  # invalid on the topic: logged + counted

    assert add(peer, click(1, 40.0, 40.0)).accepted
    assert add(peer, click(2, 80.0, 50.0)).accepted
    reply = add(peer, click(1, 40.0, 40.0))
    assert not reply.accepted
    assert "already waiting" in reply.reason
    reply = add(peer, click(3, 60.0, 60.0))
    assert not reply.accepted
    assert "max_instruments" in reply.reason

    expected = {"invalid_prompt": 5, "unknown_instrument": 2, "too_many_instruments": 1}
    wait_until(lambda: counts_reach(peer, expected), 15, f"bad prompt counts {expected}")
    wait_until(
        lambda: (
            logged(peer, "invalid_prompt", "NaN")
            and logged(peer, "invalid_prompt", "outside")
            and logged(peer, "unknown_instrument", "42")
            and logged(peer, "too_many_instruments", "max_instruments")
        ),
        10,
        "each bad prompt logged with its reason",
    )

    peer.image_pub.publish(image_msg(frame, 2.0))  # the two good prompts apply here
    wait_until(lambda: peer.masks_with_stamp(2.0), WAIT, "output after the bad prompts")
    assert [m.instrument_id for m in peer.masks_with_stamp(2.0)[0].instruments] == [1, 2]
    reply = add(peer, click(3, 60.0, 60.0))  # tracked now: still over the limit
    assert not reply.accepted
    assert "max_instruments" in reply.reason
    assert peer.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=2)).success
    assert add(peer, click(3, 60.0, 60.0)).accepted


@pytest.mark.parametrize("harness", [{"image_transport": "compressed"}], indirect=True)
def test_compressed_transport_bad_and_good_data(harness):
    node, peer = harness
    ok, png = cv2.imencode(".png", synthetic_frame()[..., ::-1])
    assert ok
    good = CompressedImage(header=header(0.5), format="png", data=png.tobytes())
    peer.publish_until_processed(good, WAIT, publisher=peer.compressed_pub)
    peer.compressed_pub.publish(CompressedImage(header=header(1.0), format="jpeg", data=b"\xff\xd8 not really a jpeg"))
    time.sleep(0.05)
    peer.compressed_pub.publish(CompressedImage(header=header(1.5), format="png", data=b""))
    wait_until(
        lambda: counts_reach(peer, {"unsupported_encoding": 1, "zero_size_image": 1}),
        15,
        "bad compressed images counted",
    )
    peer.compressed_pub.publish(CompressedImage(header=header(2.0), format="png", data=png.tobytes()))
    wait_until(lambda: peer.masks_with_stamp(2.0), WAIT, "output for a good compressed frame")
    assert peer.masks_with_stamp(2.0)[0].header.frame_id == "endoscope"
    wait_until(lambda: peer.labels, 10, "label image")
    assert np.frombuffer(peer.labels[-1].data, np.uint8).size == 160 * 120


# ---- the reporting pieces on their own ----------------------------------------------------


def test_unexpected_errors_are_contained_counted_and_the_worker_restarts(harness, monkeypatch):
    node, peer = harness
    frame = synthetic_frame()
    peer.publish_until_processed(image_msg(frame, 1.0), WAIT)
    assert add(peer, click(1, 40.0, 40.0)).accepted
    peer.image_pub.publish(image_msg(frame, 1.5))
    wait_until(lambda: peer.masks_with_stamp(1.5), WAIT, "the prompted frame")
    assert [m.instrument_id for m in peer.masks_with_stamp(1.5)[0].instruments] == [1]

    # a subscription callback raising something nobody expected
    def broken_conversion(*args, **kwargs):
        raise RuntimeError("conversion exploded")

    monkeypatch.setattr(node_module, "image_msg_to_rgb", broken_conversion)
    peer.image_pub.publish(image_msg(frame, 2.0))
    wait_until(lambda: int(peer.latest_diag().get("internal_errors", 0)) >= 1, 15, "internal error counted")
    assert "conversion exploded" in peer.latest_diag()["internal_errors.last"]
    wait_until(lambda: logged(peer, "internal error in subscription", "conversion exploded"), 10, "logged")
    monkeypatch.undo()

    # a service callback raising: a failure reply, not a dead executor
    def broken_remove(instrument_id):
        raise RuntimeError("remove exploded")

    monkeypatch.setattr(node.tracker, "remove_instrument", broken_remove)
    reply = peer.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=1))
    assert not reply.success
    assert "internal error in service remove_instrument" in reply.reason
    assert "remove exploded" in reply.reason
    monkeypatch.undo()

    # the worker raising: reported, restarted, tracking goes on
    real_track, calls = node.tracker.track, []

    def track_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("tracker exploded")
        return real_track(*args, **kwargs)

    monkeypatch.setattr(node.tracker, "track", track_failing_once)
    peer.image_pub.publish(image_msg(frame, 3.0))
    wait_until(lambda: peer.latest_diag().get("worker_restarts") == "1", 20, "worker restart in diagnostics")
    status = [s for m in list(peer.diagnostics) for s in m.status if "sam2s" in s.name][-1]
    assert status.level == DiagnosticStatus.WARN
    assert "restarted 1 time" in status.message
    assert logged(peer, "inference worker restarting", "tracker exploded")
    peer.publish_until_processed(image_msg(frame, 4.0), WAIT)
    assert [m.instrument_id for m in peer.masks_with_stamp(4.0)[0].instruments] == [1]


def test_failure_response_fits_every_service_type():
    reason = "internal error in service x: ValueError: bad"
    reply = failure_response(RemoveInstrument, RemoveInstrument.Request(), reason)
    assert (reply.success, reply.reason) == (False, reason)
    assert not failure_response(AddPrompt, AddPrompt.Request(), reason).accepted
    request = SetParameters.Request(parameters=[ParameterMsg(name="a"), ParameterMsg(name="b")])
    results = failure_response(SetParameters, request, reason).results
    assert [(r.successful, r.reason) for r in results] == [(False, reason)] * 2
    atomic = failure_response(SetParametersAtomically, SetParametersAtomically.Request(), reason)
    assert (atomic.result.successful, atomic.result.reason) == (False, reason)


def test_supervised_worker_restarts_a_bounded_number_of_times():
    runs, errors = [], []

    def loop():
        runs.append(1)
        raise RuntimeError(f"run {len(runs)}")

    def on_error(exc, restarts):
        errors.append((str(exc), restarts))
        return restarts < 2

    run_supervised(loop, lambda: False, on_error, backoff_s=0.0)
    assert len(runs) == 3
    assert errors == [("run 1", 0), ("run 2", 1), ("run 3", 2)]


def test_supervised_worker_counts_restarts_in_a_window_only():
    """Rare errors over a long procedure never stop the worker; a burst within the window does."""
    now = [0.0]
    runs, counts = [], []

    def loop():
        runs.append(1)
        now[0] += 100.0 if len(runs) <= 4 else 1.0  # 4 errors 100 s apart, then a burst 1 s apart
        if len(runs) == 12:
            return
        raise RuntimeError(f"run {len(runs)}")

    def on_error(exc, restarts):
        counts.append(restarts)
        return restarts < 2

    run_supervised(loop, lambda: False, on_error, backoff_s=0.0, window_s=60.0, clock=lambda: now[0])
    assert counts == [0, 0, 0, 0, 1, 2]  # spread-out errors count 0 each; the burst reaches the limit
    assert len(runs) == 6

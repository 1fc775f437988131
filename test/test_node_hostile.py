"""A hostile client against one sam2s_node process tracking three instruments.

One node process for the whole module (python -m sam2s_ros.node, real DDS, the reference
model on random weights at 256 px, real CholecSeg8k frames). It tracks three instruments;
their state is saved as ``golden.pt`` and the masks of a reference frame tracked from it
are recorded. Each test loads ``golden.pt``, throws a batch of hostile inputs at the node
(state files, file names, special files, parameter and lifecycle requests, images, prompts) and checks
that every one is refused with a clear reason, the process is alive, and tracking the
reference frame again gives exactly the recorded masks for all three instruments (so the
refused inputs changed nothing). docs/hostile_inputs.md lists every input with its test.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import rclpy
import torch
from geometry_msgs.msg import Point
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import (
    DescribeParameters,
    GetParameters,
    GetParameterTypes,
    ListParameters,
    SetParameters,
    SetParametersAtomically,
)
from rclpy.context import Context
from sensor_msgs.msg import Image

from sam2s_ros.msg import Prompt
from sam2s_ros.srv import LoadState, RemoveInstrument, SaveState

from hostile_states import state_file_cases
from node_fixtures import (
    TEST_PARAMS,
    NodeProcess,
    Peer,
    add_prompt,
    click_prompt,
    header,
    image_msg,
    ros_args,
    wait_until,
)
from tracker_fixtures import load_frames

pytestmark = pytest.mark.shared_data

NS = "/hostile"
START_WAIT = 90.0  # s: imports + model build on 2 busy cores
WAIT = 60.0
MAX_INSTRUMENTS = 4
PARAMS = {**TEST_PARAMS, "max_instruments": MAX_INSTRUMENTS, "max_image_width": 1024, "max_image_height": 1024}
CLICKS = {1: (430.0, 300.0), 2: (200.0, 150.0), 3: (650.0, 380.0)}
GOLDEN = "golden.pt"


@dataclass
class Hostile:
    """The node process, a peer talking to it, its state_dir and the reference masks."""

    proc: NodeProcess
    peer: Peer
    frames: list
    state_dir: object
    reference: dict = field(default_factory=dict)  # instrument id -> mask bytes on the reference frame
    next_stamp: float = 100.0

    def stamp(self) -> float:
        self.next_stamp += 1.0
        return self.next_stamp

    def call(self, srv_type, name: str, request):
        return self.peer.call(srv_type, name, request)

    def restore(self) -> None:
        """Load golden.pt: the three instruments as they were saved."""
        reply = self.call(LoadState, "load_state", LoadState.Request(name=GOLDEN))
        assert reply.success, reply.reason
        assert list(reply.instrument_ids) == [1, 2, 3]

    def track_reference(self) -> dict:
        """Track the reference frame once; instrument id -> mono8 mask bytes."""
        t = self.stamp()
        # No early repeat: a second copy tracked after the next restore() would move the state on.
        self.peer.publish_until_processed(image_msg(self.frames[2], t), WAIT, resend_s=WAIT / 3)
        masks = self.peer.masks_with_stamp(t)[0]
        return {m.instrument_id: bytes(m.mask.data) for m in masks.instruments}

    def assert_still_tracking(self) -> None:
        """Alive, and the state untouched since restore(): identical masks for 1, 2, 3."""
        assert self.proc.proc.poll() is None, self.proc.output()
        got = self.track_reference()
        assert sorted(got) == [1, 2, 3]
        for iid, mask in self.reference.items():
            assert got[iid] == mask, f"instrument {iid}: mask differs from the one tracked from golden.pt"
        assert self.proc.proc.poll() is None

    def refused(self, srv_type, name: str, request, *fragments: str) -> str:
        reply = self.call(srv_type, name, request)
        ok = reply.accepted if hasattr(reply, "accepted") else reply.success
        assert not ok, f"{name} {request} was not refused"
        for fragment in fragments:
            assert fragment in reply.reason, (fragment, reply.reason)
        return reply.reason


def wait_for_node(peer: Peer, proc: NodeProcess) -> None:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            pytest.fail(f"node exited with {proc.proc.returncode}: {proc.output()}")
        if peer.connected():
            return
        time.sleep(0.05)
    pytest.fail(f"node did not subscribe within {START_WAIT} s: {proc.output()}")


@pytest.fixture(scope="module")
def hostile(ros_env, ros_domain_id, shared_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    state_dir = tmp / "states"
    proc = NodeProcess(ros_args({**PARAMS, "state_dir": str(state_dir)}) + ["-r", f"__ns:={NS}"], ros_env, tmp)
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    peer = Peer(context, namespace=NS)
    try:
        wait_for_node(peer, proc)
        h = Hostile(proc, peer, load_frames(shared_dir, 3), state_dir)
        h.peer.publish_until_processed(image_msg(h.frames[0], 1.0), WAIT)
        for iid, (x, y) in CLICKS.items():
            reply = add_prompt(peer, click_prompt(iid, x, y))
            assert reply.accepted, reply.reason
        h.peer.publish_until_processed(image_msg(h.frames[1], 2.0), WAIT)
        assert [m.instrument_id for m in peer.masks_with_stamp(2.0)[0].instruments] == [1, 2, 3]
        reply = h.call(SaveState, "save_state", SaveState.Request(name=GOLDEN))
        assert reply.success, reply.reason
        h.restore()
        h.reference = h.track_reference()
        assert sorted(h.reference) == [1, 2, 3]
        yield h
    finally:
        peer.close()
        rc = proc.interrupt(timeout=20.0)
        proc.kill()
        context.try_shutdown()
    out, err = proc.output()
    assert rc == 0, (rc, out[-3000:], err[-3000:])


# ---- state files --------------------------------------------------------------------------


def test_hostile_state_files_are_refused_and_the_old_state_stays(hostile):
    valid = torch.load(hostile.state_dir / GOLDEN, map_location="cpu", weights_only=True)
    cases = state_file_cases(MAX_INSTRUMENTS, max_cond_frames=4)
    hostile.restore()
    for name, build, fragment in cases:
        (hostile.state_dir / f"{name}.pt").write_bytes(build(valid))
        reason = hostile.refused(LoadState, "load_state", LoadState.Request(name=f"{name}.pt"), fragment)
        assert "the running state is unchanged" in reason, reason
    assert not os.path.exists("/tmp/sam2s_pwned")  # the pickled code never ran
    wait_until(
        lambda: int(hostile.peer.latest_diag().get("bad_input.state_file", 0)) >= len(cases),
        15,
        "every refused state file counted",
    )
    hostile.assert_still_tracking()


def test_load_refuses_special_files_missing_files_and_bad_names_without_blocking(hostile):
    d = hostile.state_dir
    os.mkfifo(d / "fifo.pt")
    (d / "folder.pt").mkdir()
    (d / "link.pt").symlink_to(d / GOLDEN)
    (d / "dev_link.pt").symlink_to("/dev/zero")
    with open(d / "huge.pt", "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse: larger than any state of this tracker
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "socket.pt"))
    hostile.restore()
    try:
        t0 = time.monotonic()
        hostile.refused(LoadState, "load_state", LoadState.Request(name="fifo.pt"), "is a FIFO, not a regular file")
        assert time.monotonic() - t0 < 10.0  # refused at once, never opened for a blocking read
        for name, fragment in (
            ("folder.pt", "is a directory"),
            ("link.pt", "is a symbolic link"),
            ("dev_link.pt", "is a symbolic link"),
            ("socket.pt", "is a socket"),
            ("missing.pt", "does not exist"),
            ("huge.pt", "more than a state of this tracker can have"),
        ):
            hostile.refused(LoadState, "load_state", LoadState.Request(name=name), fragment)
        for name in ("../states/golden.pt", "/etc/shadow", "/proc/self/environ", ".hidden.pt", "", "..", "a" * 129):
            hostile.refused(LoadState, "load_state", LoadState.Request(name=name), "state file name")
    finally:
        sock.close()
    hostile.assert_still_tracking()


def test_save_refuses_overwrite_special_files_bad_names_and_unwritable_state_dir(hostile):
    d = hostile.state_dir
    golden_bytes = (d / GOLDEN).read_bytes()
    os.mkfifo(d / "save_fifo.pt")
    (d / "save_folder.pt").mkdir()
    outside = d.parent / "outside.txt"
    outside.write_text("must stay")
    (d / "save_link.pt").symlink_to(outside)
    hostile.restore()
    save = SaveState.Request
    hostile.refused(SaveState, "save_state", save(name=GOLDEN), "exists; set overwrite")
    assert (d / GOLDEN).read_bytes() == golden_bytes
    for name, fragment in (
        ("save_fifo.pt", "is a FIFO"),
        ("save_folder.pt", "is a directory"),
        ("save_link.pt", "is a symbolic link"),
    ):
        hostile.refused(SaveState, "save_state", save(name=name, overwrite=True), fragment)
    assert outside.read_text() == "must stay"
    for name in (
        "/sys/kernel/sam2s.pt",
        "/proc/self/mem",
        "../outside.txt",
        "no_such_folder/x.pt",
        ".bashrc",
        "ümlaut.pt",
        "new\nline.pt",
        "x" * 500,
    ):
        hostile.refused(SaveState, "save_state", save(name=name, overwrite=True), "state file name")
    # state_dir itself replaced by a regular file: cannot write there
    aside = d.parent / "states_aside"
    d.rename(aside)
    d.write_bytes(b"not a folder")
    try:
        hostile.refused(SaveState, "save_state", save(name="x.pt"), "not a folder")
    finally:
        d.unlink()
        aside.rename(d)
    assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    reply = hostile.call(SaveState, "save_state", save(name=GOLDEN, overwrite=True))  # allowed: same state
    assert reply.success, reply.reason
    hostile.assert_still_tracking()


# ---- rclpy's parameter services ----------------------------------------------------------


def _param(name: str, type_: int, **value) -> ParameterMsg:
    return ParameterMsg(name=name, value=ParameterValue(type=type_, **value))


def test_parameter_requests_never_end_the_process(hostile):
    hostile.restore()
    srv = "sam2s_node/set_parameters"
    reply = hostile.call(SetParameters, srv, SetParameters.Request(parameters=[_param("image_size", 200)]))
    assert [r.successful for r in reply.results] == [False]
    assert "internal error" in reply.results[0].reason
    assert "200" in reply.results[0].reason
    reply = hostile.call(
        SetParametersAtomically,
        "sam2s_node/set_parameters_atomically",
        SetParametersAtomically.Request(
            parameters=[_param("seed", 99), _param("state_dir", ParameterType.PARAMETER_STRING)]
        ),
    )
    assert not reply.result.successful
    for param, fragment in (
        (_param("image_size", ParameterType.PARAMETER_INTEGER, integer_value=512), "read-only"),
        (_param("state_dir", ParameterType.PARAMETER_STRING, string_value="/"), "read-only"),
        (_param("no_such_parameter", ParameterType.PARAMETER_BOOL, bool_value=True), "undeclared"),
        (_param("image_size", ParameterType.PARAMETER_STRING, string_value="huge"), ""),
        (_param("mask_threshold", ParameterType.PARAMETER_DOUBLE, double_value=math.nan), ""),
    ):
        reply = hostile.call(SetParameters, srv, SetParameters.Request(parameters=[param]))
        assert [r.successful for r in reply.results] == [False], (param, reply)
        assert fragment in reply.results[0].reason
    names = ["", "no.such", "\x7f" * 300, "image_size"]
    assert len(hostile.call(GetParameters, "sam2s_node/get_parameters", GetParameters.Request(names=names)).values) in (
        0,
        4,
    )
    hostile.call(DescribeParameters, "sam2s_node/describe_parameters", DescribeParameters.Request(names=names))
    hostile.call(GetParameterTypes, "sam2s_node/get_parameter_types", GetParameterTypes.Request(names=names))
    hostile.call(
        ListParameters,
        "sam2s_node/list_parameters",
        ListParameters.Request(prefixes=["", "divemem", "x" * 1000], depth=2**64 - 1),
    )
    wait_until(lambda: int(hostile.peer.latest_diag().get("internal_errors", 0)) >= 2, 15, "contained errors counted")
    assert "ValueError" in hostile.peer.latest_diag()["internal_errors.last"]
    hostile.assert_still_tracking()


# ---- rclpy's lifecycle services ----------------------------------------------------------


def test_lifecycle_requests_never_end_the_process(hostile):
    """Transitions that do not exist or are not possible now are refused; the node stays active."""
    hostile.restore()
    change = "sam2s_node/change_state"
    for transition in (
        Transition(id=255),  # no such transition
        Transition(id=Transition.TRANSITION_CONFIGURE),  # not from active
        Transition(id=Transition.TRANSITION_CLEANUP),  # not from active
        Transition(label="configure"),  # label not available from active
        Transition(label="no_such_transition"),
        Transition(label="x" * 100_000),
        Transition(id=Transition.TRANSITION_ON_CONFIGURE_SUCCESS),  # an internal (callback result) transition
        Transition(id=Transition.TRANSITION_ACTIVATE, label="nonsense"),  # the label wins and is unknown
    ):
        reply = hostile.call(ChangeState, change, ChangeState.Request(transition=transition))
        assert not reply.success, transition
    for srv_type, name in (
        (GetAvailableStates, "get_available_states"),
        (GetAvailableTransitions, "get_available_transitions"),
        (GetAvailableTransitions, "get_transition_graph"),
    ):
        hostile.call(srv_type, f"sam2s_node/{name}", srv_type.Request())
    state = hostile.call(GetState, "sam2s_node/get_state", GetState.Request()).current_state
    assert (state.id, state.label) == (State.PRIMARY_STATE_ACTIVE, "active")
    hostile.assert_still_tracking()


# ---- images and prompts ------------------------------------------------------------------


def _bad_images(t: float) -> list[tuple[str, Image]]:
    good = image_msg(np.zeros((120, 160, 3), np.uint8), t)
    short = image_msg(np.zeros((120, 160, 3), np.uint8), t)
    short.data = bytes(short.data)[:-10]
    narrow_step = image_msg(np.zeros((120, 160, 3), np.uint8), t)
    narrow_step.step = 10
    return [
        ("float_encoding", Image(header=header(t), height=4, width=4, encoding="32FC1", step=16, data=bytes(64))),
        ("unknown_encoding", Image(header=header(t), height=4, width=4, encoding="rgb9", step=12, data=bytes(48))),
        ("zero_size", Image(header=header(t), height=0, width=0, encoding="rgb8")),
        ("too_wide", Image(header=header(t), height=2, width=2000, encoding="mono8", step=2000, data=bytes(4000))),
        ("huge_claimed_size", Image(header=header(t), height=60000, width=60000, encoding="rgb8", step=180000)),
        ("short_data", short),
        ("step_smaller_than_row", narrow_step),
        ("odd_width_yuv422", Image(header=header(t), height=2, width=3, encoding="yuv422", step=6, data=bytes(12))),
        ("empty_data", Image(header=header(t), height=10, width=10, encoding="rgb8", step=30, data=b"")),
        ("control", good),  # not hostile: must be tracked (no prompt, so the state only advances)
    ]


def _prompt(iid: int, **fields) -> Prompt:
    msg = Prompt(header=header(0.0, ""), instrument_id=iid, mode=Prompt.MODE_NEW)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def _bad_prompts() -> list[tuple[str, Prompt, str]]:
    pts = lambda *xy: [Point(x=float(x), y=float(y)) for x, y in xy]  # noqa: E731
    mask = Image(header=header(0.0), height=2, width=2, encoding="mono8", step=2, data=bytes([255] * 4))
    return [
        ("nan_point", _prompt(7, points=pts((math.nan, 1)), point_labels=[1]), "NaN"),
        ("inf_point", _prompt(7, points=pts((math.inf, 1)), point_labels=[1]), "NaN or infinite"),
        ("negative_point", _prompt(7, points=pts((-5, 10)), point_labels=[1]), "outside"),
        ("point_outside_frame", _prompt(7, points=pts((5000, 10)), point_labels=[1]), "outside"),
        ("label_not_0_1", _prompt(7, points=pts((10, 10)), point_labels=[5]), "point_labels"),
        ("labels_missing", _prompt(7, points=pts((10, 10), (20, 20)), point_labels=[1]), "point_labels"),
        ("too_many_points", _prompt(7, points=pts(*[(10, 10)] * 5000), point_labels=[1] * 5000), "at most"),
        ("unknown_mode", _prompt(7, mode=9, points=pts((10, 10)), point_labels=[1]), "unknown prompt mode"),
        ("inverted_box", _prompt(7, has_box=True, box=[300.0, 300.0, 100.0, 100.0]), "inverted box"),
        ("nan_box", _prompt(7, has_box=True, box=[math.nan, 0.0, 10.0, 10.0]), "finite"),
        ("box_outside_frame", _prompt(7, has_box=True, box=[0.0, 0.0, 9000.0, 10.0]), "outside"),
        ("mask_wrong_size", _prompt(7, mask=mask), "mask"),
        ("no_input", _prompt(7), "no points, box or mask"),
        ("class_id_not_in_vocabulary", _prompt(7, points=pts((10, 10)), point_labels=[1], class_id=99), "class_id"),
        ("id_zero", _prompt(0, points=pts((10, 10)), point_labels=[1]), "instrument_id"),
        ("id_above_mono8", _prompt(300, points=pts((10, 10)), point_labels=[1]), "mono8"),
        ("new_of_tracked_id", _prompt(1, points=pts((10, 10)), point_labels=[1]), "already tracked"),
        (
            "refine_unknown_id",
            _prompt(77, mode=Prompt.MODE_REFINE, points=pts((10, 10)), point_labels=[1]),
            "not tracked",
        ),
    ]


def test_bad_images_and_prompts_are_refused(hostile):
    hostile.restore()
    for case, prompt, fragment in _bad_prompts():
        reply = add_prompt(hostile.peer, prompt)
        assert not reply.accepted, case
        assert fragment in reply.reason, (case, reply.reason)
    reply = hostile.call(RemoveInstrument, "remove_instrument", RemoveInstrument.Request(instrument_id=999))
    assert not reply.success
    assert "999" in reply.reason
    before = int(hostile.peer.latest_diag().get("frames_received", 0))
    images = _bad_images(50.0)
    for _, msg in images[:-1]:
        hostile.peer.image_pub.publish(msg)
        time.sleep(0.1)  # paced: best-effort subscription of depth 5
    wait_until(
        lambda: int(hostile.peer.latest_diag().get("frames_received", 0)) >= before + len(images) - 1,
        20,
        "the bad images received",
    )
    assert not hostile.peer.masks_with_stamp(50.0)  # no output for a refused image
    diag = hostile.peer.latest_diag()
    refused = sum(
        int(diag[f"bad_input.{k}"])
        for k in ("unsupported_encoding", "zero_size_image", "image_too_large", "malformed_image")
    )
    assert refused >= len(images) - 1, diag
    hostile.assert_still_tracking()  # the state is still golden.pt's: no bad image was tracked
    hostile.peer.publish_until_processed(images[-1][1], WAIT)  # control: a good image is tracked
    assert [m.instrument_id for m in hostile.peer.masks_with_stamp(50.0)[0].instruments] == [1, 2, 3]

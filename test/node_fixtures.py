"""Helpers for the node tests.

Real frames, a peer node that talks to sam2s_node over DDS, bounded waits, and starting
the node as a separate process. Every wait here has a time limit; nothing spins without one.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point
from rcl_interfaces.msg import Log
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from sam2s_ros import codec
from sam2s_ros.msg import ClassVocabulary, InstrumentClassArray, InstrumentMaskArray, Prompt
from sam2s_ros.srv import AddPrompt

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Small model settings for tests: random weights (no checkpoint exists on these machines).
TEST_PARAMS = {"model_size": "tiny", "image_size": 256, "allow_random_weights": True, "diagnostics_period": 0.5}


def synthetic_frame(h: int = 120, w: int = 160) -> np.ndarray:
    """A plain test image (a bright bar on a dark background), uint8 RGB."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[h // 3 : h // 2, w // 4 : 3 * w // 4] = (220, 200, 180)
    return img


def header(stamp_s: float, frame_id: str = "endoscope") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec = int(stamp_s)
    h.stamp.nanosec = int(round((stamp_s - int(stamp_s)) * 1e9))
    return h


def image_msg(rgb: np.ndarray, stamp_s: float, frame_id: str = "endoscope") -> Image:
    return codec.image_msg(rgb, "rgb8", header(stamp_s, frame_id))


def stamp_s(h: Header) -> float:
    return h.stamp.sec + h.stamp.nanosec * 1e-9


def diag_values(msg: DiagnosticArray) -> dict[str, str]:
    """KeyValues of the sam2s status in a DiagnosticArray ({} when absent)."""
    for status in msg.status:
        if "sam2s" in status.name:
            return {kv.key: kv.value for kv in status.values}
    return {}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 20 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Peer:
    """A test node that feeds sam2s_node and records everything it publishes.

    Args:
        context: rclpy context (its own DDS participant).
        namespace: namespace of the sam2s_node under test ("" = root).
        extra_nodes: nodes spun by the same executor (e.g. an in-process Sam2sNode).
    """

    def __init__(self, context, namespace: str = "", extra_nodes=()) -> None:
        ns = namespace.rstrip("/")
        self.node = Node("sam2s_test_peer", context=context)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        rosout_qos = QoSProfile(
            depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.masks: list[InstrumentMaskArray] = []
        self.classes: list[InstrumentClassArray] = []
        self.labels: list[Image] = []
        self.overlays: list[Image] = []
        self.vocabulary: list[ClassVocabulary] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.logs: list[Log] = []
        self.masks_sub = self.node.create_subscription(InstrumentMaskArray, f"{ns}/masks", self.masks.append, 50)
        self.node.create_subscription(InstrumentClassArray, f"{ns}/instrument_classes", self.classes.append, 50)
        self.node.create_subscription(Image, f"{ns}/label_image", self.labels.append, 50)
        self.node.create_subscription(Image, f"{ns}/overlay", self.overlays.append, 50)
        self.node.create_subscription(ClassVocabulary, f"{ns}/class_vocabulary", self.vocabulary.append, latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.node.create_subscription(Log, "/rosout", self.logs.append, rosout_qos)
        self.image_pub = self.node.create_publisher(Image, f"{ns}/image_raw", QoSProfile(depth=10))
        self.prompt_pub = self.node.create_publisher(Prompt, f"{ns}/prompts", QoSProfile(depth=10))
        self.namespace = ns
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        for n in (self.node, *extra_nodes):
            self.executor.add_node(n)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        """Call a service of sam2s_node and return the response (bounded waits)."""
        client = self.node.create_client(srv_type, f"{self.namespace}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                pytest.fail(f"service {name} not available after {timeout} s")
            future = client.call_async(request)
            wait_until(future.done, timeout, f"reply of {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def connected(self) -> bool:
        """True once sam2s_node's image/prompt subscriptions and masks publisher match ours."""
        return (
            self.image_pub.get_subscription_count() > 0
            and self.prompt_pub.get_subscription_count() > 0
            and self.masks_sub.get_publisher_count() > 0
        )

    def wait_for_subscriber(self, timeout: float = 20.0) -> None:
        """Wait until sam2s_node and this peer are connected both ways."""
        wait_until(self.connected, timeout, "sam2s_node to match image_raw, prompts and masks")

    def publish_until_processed(self, msg, timeout: float, publisher=None, resend_s: float = 2.0) -> None:
        """Publish ``msg`` (again every ``resend_s`` s) until masks with its stamp arrive.

        The image subscription is best effort: a frame sent while discovery is still
        settling on the node's side can be lost, so the first frame of a test is repeated.
        A repeat that arrives while the first copy is being tracked is tracked too (the
        tracker state moves on by one more frame): tests that compare exact states use a
        long ``resend_s``.
        """
        t, deadline = stamp_s(msg.header), time.monotonic() + timeout
        while time.monotonic() < deadline:
            (publisher or self.image_pub).publish(msg)
            resend = time.monotonic() + resend_s
            while time.monotonic() < min(resend, deadline):
                if self.masks_with_stamp(t):
                    return
                time.sleep(0.02)
        pytest.fail(f"no output for the frame stamped {t} within {timeout:.0f} s")

    def masks_with_stamp(self, t: float) -> list[InstrumentMaskArray]:
        return [m for m in list(self.masks) if abs(stamp_s(m.header) - t) < 1e-6]

    def latest_diag(self) -> dict[str, str]:
        for msg in reversed(list(self.diagnostics)):
            values = diag_values(msg)
            if values:
                return values
        return {}

    def log_lines(self, node_name: str = "sam2s_node") -> list[str]:
        return [entry.msg for entry in list(self.logs) if entry.name.endswith(node_name)]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(timeout=5)
        self.node.destroy_node()


def click_prompt(instrument_id: int, x: float, y: float, stamp: float = 0.0, **fields) -> Prompt:
    msg = Prompt(
        header=header(stamp) if stamp else header(0.0, ""),
        instrument_id=instrument_id,
        points=[Point(x=x, y=y)],
        point_labels=[1],
    )
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def add_prompt(peer: Peer, prompt: Prompt):
    return peer.call(AddPrompt, "add_prompt", AddPrompt.Request(prompt=prompt))


def pixels(img_msg: Image, dtype=np.uint8) -> np.ndarray:
    """Packed mono8/mono16 -> [H, W], rgb8 -> [H, W, 3] array."""
    channels = 3 if img_msg.encoding == "rgb8" else 1
    array = np.frombuffer(img_msg.data, dtype).reshape(img_msg.height, img_msg.width, channels)
    return array[..., 0] if channels == 1 else array


def with_stamp(msgs, t: float) -> list:
    return [m for m in list(msgs) if abs(stamp_s(m.header) - t) < 1e-6]


def ros_args(params: dict) -> list[str]:
    """``--ros-args -p k:=v ...`` for a subprocess (YAML-style values)."""
    args = ["--ros-args"]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return args


class NodeProcess:
    """sam2s_node started as ``python -m sam2s_ros.node`` (or ``command``) in its own process.

    Output goes to files (no pipe can fill up and block the node); read with .output().
    """

    _started = 0  # numbers the output files of the processes of one test

    def __init__(self, args: list[str], env: dict, tmp_path: pathlib.Path, command: Optional[list[str]] = None) -> None:
        NodeProcess._started += 1
        self.stdout_path = tmp_path / f"node{NodeProcess._started}_stdout.txt"
        self.stderr_path = tmp_path / f"node{NodeProcess._started}_stderr.txt"
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            command = command or [sys.executable, "-m", "sam2s_ros.node"]
            self.proc = subprocess.Popen(
                [*command, *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> tuple[str, str]:
        return self.stdout_path.read_text(errors="replace"), self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> Optional[int]:
        """Exit code, or None when still running after ``timeout`` s."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def interrupt(self, timeout: float = 15.0) -> Optional[int]:
        """SIGINT (Ctrl-C) and wait; exit code or None."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class NodeFactory:
    """Starts in-process Sam2sNodes (TEST_PARAMS + overrides), each with a Peer spinning it; close() ends all.

    Args:
        context: the rclpy context of the test.
        wait_for_subscriber: wait until each node subscribes to the images (an active node);
            False for nodes that may be unconfigured or inactive (lifecycle tests).
    """

    def __init__(self, context, wait_for_subscriber: bool = True):
        self._context = context
        self._wait = wait_for_subscriber
        self._made: list = []

    def __call__(self, **overrides):
        from rclpy.parameter import Parameter

        from sam2s_ros.node.node import Sam2sNode

        params = {**TEST_PARAMS, **overrides}
        node = Sam2sNode(context=self._context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        peer = Peer(self._context, extra_nodes=[node])
        self._made.append((node, peer))
        if self._wait:
            peer.wait_for_subscriber()
        return node, peer

    def close(self) -> None:
        for node, peer in self._made:
            peer.close()
            assert node.stop(timeout=30)
            node.destroy_node()

"""Cross-process peer for test_interfaces.py (run by it with the venv's python).

For every sam2s_ros message type T it subscribes to ``/sam2s_test/T/ping`` and publishes
each message it receives, unchanged, on ``/sam2s_test/T/pong`` (so the message crosses the
process boundary twice: deserialised here, serialised again). For every service type S it
serves ``/sam2s_test/S``: when the request equals interface_samples.sample_request(S) it
answers sample_response(S), otherwise a response whose ``reason`` lists the differences.

Prints ``READY`` once everything is created. Exits when its stdin closes (the test ended
or died), on SIGTERM/SIGINT, or after --max-seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

import interface_samples as samples  # noqa: E402


def _serve(name: str):
    def handle(request, response):
        diff = samples.differences(samples.to_plain(samples.sample_request(name)), samples.to_plain(request))
        if diff:
            print(f"interface_echo: {name} request mismatch: {diff}", file=sys.stderr, flush=True)
            response.reason = "request mismatch: " + "; ".join(diff)
            return response
        return samples.sample_response(name)

    return handle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    stop = threading.Event()

    def watch_stdin() -> None:
        try:
            while sys.stdin.read(4096):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    rclpy.init()
    node = Node("sam2s_interface_echo")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    keep = []
    for name in samples.MSG_TYPES:
        cls = samples.msg_class(name)
        pub = node.create_publisher(cls, f"{samples.TOPIC_PREFIX}/{name}/pong", qos)
        keep.append(pub)
        keep.append(node.create_subscription(cls, f"{samples.TOPIC_PREFIX}/{name}/ping", pub.publish, qos))
    for name in samples.SRV_TYPES:
        keep.append(node.create_service(samples.srv_class(name), f"{samples.TOPIC_PREFIX}/{name}", _serve(name)))

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

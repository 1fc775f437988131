"""Shared pytest set-up for sam2s_ros.

DDS isolation (done at import time, i.e. before any test module imports rclpy):
  * ROS_DOMAIN_ID: one domain per pytest session, derived from the pid (1..101), so that
    concurrent test runs on one host (developers, CI jobs) do not see each other's topics.
    Override with SAM2S_TEST_ROS_DOMAIN_ID=<n>.
  * ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: discovery stays on this host.
  * FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_localhost.xml: shared memory + loopback UDP
    (the profile the node is meant to run with; needed for large images between processes).
    Fast DDS reads it once per process, so it is set for the whole session and handed to
    helper subprocesses through ``ros_env``.

Fixtures: repo_root, shared_dir, ros_domain_id, ros_env, rclpy_context.
Markers (pytest.ini): slow, gpu (auto-skipped without CUDA), shared_data (auto-skipped
without ../shared).
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = pathlib.Path(os.environ.get("SAM2S_SHARED_DIR", REPO_ROOT.parent / "shared"))
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_localhost.xml"
SHARED_MISSING_REASON = (
    f"../shared not present: real data tests need the shared folder beside the repo (looked for {SHARED_DIR})"
)


def _session_domain_id() -> int:
    explicit = os.environ.get("SAM2S_TEST_ROS_DOMAIN_ID")
    if explicit:
        return int(explicit)
    return os.getpid() % 101 + 1


ROS_DOMAIN_ID = _session_domain_id()
os.environ["ROS_DOMAIN_ID"] = str(ROS_DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
if FASTDDS_PROFILE.is_file():
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)


def pytest_report_header(config):
    shared = SHARED_DIR if SHARED_DIR.is_dir() else "absent (shared_data tests skip)"
    return [
        f"sam2s_ros: ROS_DOMAIN_ID={ROS_DOMAIN_ID}, discovery LOCALHOST, "
        f"FASTDDS_DEFAULT_PROFILES_FILE={os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE', '-')}",
        f"sam2s_ros: shared folder: {shared}",
    ]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA-enabled torch")
        for item in gpu_items:
            item.add_marker(skip_gpu)
    if not SHARED_DIR.is_dir():
        skip_shared = pytest.mark.skip(reason=SHARED_MISSING_REASON)
        for item in items:
            if item.get_closest_marker("shared_data"):
                item.add_marker(skip_shared)


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    """The repository checkout (the folder holding package.xml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """``<repo>/../shared`` (real data, notes); skips the test when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(SHARED_MISSING_REASON)
    return SHARED_DIR


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """This session's ROS_DOMAIN_ID (already exported to os.environ)."""
    return ROS_DOMAIN_ID


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for helper processes that must talk DDS with this test session.

    Same domain, localhost discovery and Fast DDS profile as the tests; unbuffered Python
    output so that readiness lines arrive at once.
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def rclpy_context():
    """A fresh, initialised rclpy Context for one test (its own DDS participant).

    Create nodes with ``Node(name, context=rclpy_context)`` and executors with
    ``SingleThreadedExecutor(context=rclpy_context)``; shut down after the test.
    """
    import rclpy  # installed by scripts/setup.sh: a missing rclpy fails here, it never skips
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ROS_DOMAIN_ID)
    try:
        yield context
    finally:
        context.try_shutdown()

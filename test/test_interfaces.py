"""The sam2s_ros interfaces are real ROS 2 types: every message and service round-trips

(a) over DDS within one process (publisher -> subscriber; service server -> client),
(b) between two processes (interface_echo.py as the peer, Fast DDS localhost profile),
(c) through a rosbag2 MCAP bag written and read with rosbags, whose CDR is byte-compatible
    with rclpy's serialisation, with type hashes and definitions in the bag.

Sample values: interface_samples.py (every field non-default, arrays non-empty).
"""

from __future__ import annotations

import json
import pathlib
import queue
import subprocess
import sys
import threading
import time

import pytest
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

import interface_samples as samples
from interface_samples import MSG_TYPES, SRV_TYPES, assert_same, spin_until

REPO = pathlib.Path(__file__).resolve().parent.parent
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
DISCOVERY_TIMEOUT_S = 20.0
ECHO_START_TIMEOUT_S = 60.0


def _interface_files(kind: str) -> set[str]:
    return {p.stem for p in (REPO / kind).glob(f"*.{kind}")}


def test_every_interface_has_a_sample():
    """A new .msg/.srv must get a sample here, so that it is covered by all tests below."""
    assert _interface_files("msg") == set(MSG_TYPES)
    assert _interface_files("srv") == set(SRV_TYPES)


@pytest.mark.parametrize("name", MSG_TYPES)
def test_message_sample_sets_every_field(name):
    sample = samples.sample_message(name)
    default = samples.msg_class(name)()
    sample_plain, default_plain = samples.to_plain(sample), samples.to_plain(default)
    same = [field for field in sample_plain if sample_plain[field] == default_plain[field]]
    assert not same, f"{name} sample leaves fields at their defaults: {same}"


@pytest.mark.parametrize("name", SRV_TYPES)
def test_service_samples_set_every_field(name):
    for sample, cls in (
        (samples.sample_request(name), samples.srv_class(name).Request),
        (samples.sample_response(name), samples.srv_class(name).Response),
    ):
        sample_plain, default_plain = samples.to_plain(sample), samples.to_plain(cls())
        same = [field for field in sample_plain if sample_plain[field] == default_plain[field]]
        assert not same, f"{cls.__name__} sample leaves fields at their defaults: {same}"


# --------------------------------------------------------------------------------------
# Helpers: publish until received, call a service, with deadlines
# --------------------------------------------------------------------------------------
class _Spinner:
    def __init__(self, context, *nodes):
        self.executor = SingleThreadedExecutor(context=context)
        self.nodes = nodes
        for node in nodes:
            self.executor.add_node(node)

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        for node in self.nodes:
            node.destroy_node()


def _publish_until_received(spinner, pub, received, sample, what):
    assert spin_until(spinner.executor, lambda: pub.get_subscription_count() > 0, DISCOVERY_TIMEOUT_S), (
        f"{what}: no subscriber matched within {DISCOVERY_TIMEOUT_S} s"
    )
    # Re-publish every second until something arrives (a reliable writer that matched the
    # reader delivers the first one; the repeats only guard against discovery races).
    ok = spin_until(
        spinner.executor, lambda: bool(received), samples.RECEIVE_TIMEOUT_S, every=lambda: pub.publish(sample)
    )
    assert ok, f"{what}: nothing received within {samples.RECEIVE_TIMEOUT_S} s"
    return received[0]


def _call(spinner, client, request, what):
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while not client.service_is_ready():
        assert time.monotonic() < deadline, f"{what}: service not available within {DISCOVERY_TIMEOUT_S} s"
        spinner.executor.spin_once(timeout_sec=0.1)
    future = client.call_async(request)
    ok = spin_until(spinner.executor, future.done, samples.RECEIVE_TIMEOUT_S)
    assert ok, f"{what}: no response within {samples.RECEIVE_TIMEOUT_S} s"
    return future.result()


# --------------------------------------------------------------------------------------
# (a) one process, real DDS
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MSG_TYPES)
def test_message_over_dds_in_process(name, rclpy_context):
    cls = samples.msg_class(name)
    sample = samples.sample_message(name)
    topic = f"{samples.TOPIC_PREFIX}/in_process/{name}"
    pub_node = Node("sam2s_test_publisher", context=rclpy_context)
    sub_node = Node("sam2s_test_subscriber", context=rclpy_context)
    spinner = _Spinner(rclpy_context, pub_node, sub_node)
    try:
        received = []
        sub_node.create_subscription(cls, topic, received.append, QOS)
        pub = pub_node.create_publisher(cls, topic, QOS)
        got = _publish_until_received(spinner, pub, received, sample, name)
        assert isinstance(got, cls)
        assert_same(sample, got, f"{name} received in-process")
    finally:
        spinner.close()


@pytest.mark.parametrize("name", SRV_TYPES)
def test_service_over_dds_in_process(name, rclpy_context):
    srv = samples.srv_class(name)
    request, response = samples.sample_request(name), samples.sample_response(name)
    service_name = f"{samples.TOPIC_PREFIX}/in_process/{name}"
    server_node = Node("sam2s_test_server", context=rclpy_context)
    client_node = Node("sam2s_test_client", context=rclpy_context)
    spinner = _Spinner(rclpy_context, server_node, client_node)
    try:
        requests_seen = []

        def handle(req, _resp):
            requests_seen.append(req)
            return samples.sample_response(name)

        server_node.create_service(srv, service_name, handle)
        client = client_node.create_client(srv, service_name)
        got = _call(spinner, client, request, name)
        assert len(requests_seen) == 1
        assert_same(request, requests_seen[0], f"{name} request seen by the server")
        assert isinstance(got, srv.Response)
        assert_same(response, got, f"{name} response seen by the client")
    finally:
        spinner.close()


# --------------------------------------------------------------------------------------
# (b) two processes
# --------------------------------------------------------------------------------------
class _EchoProcess:
    def __init__(self, env, log_path: pathlib.Path):
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).with_name("interface_echo.py")), "--max-seconds", "900"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.strip())

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self._lines.get(timeout=0.2) == "READY":
                    return
            except queue.Empty:
                pass
            if self.proc.poll() is not None:
                break
        raise AssertionError(
            f"interface_echo.py not ready within {timeout_s} s (exit code {self.proc.poll()}):\n" + self.stderr()
        )

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the peer exits when its stdin closes
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture(scope="module")
def echo_peer(ros_env, tmp_path_factory):
    """interface_echo.py running in a second process (same domain and Fast DDS profile)."""
    assert ros_env.get("FASTDDS_DEFAULT_PROFILES_FILE"), "conftest.py sets the Fast DDS profile"
    peer = _EchoProcess(ros_env, tmp_path_factory.mktemp("echo") / "interface_echo.stderr")
    try:
        peer.wait_ready(ECHO_START_TIMEOUT_S)
        yield peer
    finally:
        peer.stop()


@pytest.mark.parametrize("name", MSG_TYPES)
def test_message_between_processes(name, echo_peer, rclpy_context):
    cls = samples.msg_class(name)
    sample = samples.sample_message(name)
    node = Node("sam2s_test_cross_process", context=rclpy_context)
    spinner = _Spinner(rclpy_context, node)
    try:
        received = []
        node.create_subscription(cls, f"{samples.TOPIC_PREFIX}/{name}/pong", received.append, QOS)
        pub = node.create_publisher(cls, f"{samples.TOPIC_PREFIX}/{name}/ping", QOS)
        # The peer's pong publisher must be matched too, or the echo could be missed.
        assert spin_until(
            spinner.executor,
            lambda: node.count_publishers(f"{samples.TOPIC_PREFIX}/{name}/pong") > 0,
            DISCOVERY_TIMEOUT_S,
        ), f"{name}: echo peer's publisher not discovered\n{echo_peer.stderr()}"
        got = _publish_until_received(spinner, pub, received, sample, f"{name} (echo peer)")
        assert isinstance(got, cls)
        assert_same(sample, got, f"{name} echoed by the other process")
    finally:
        spinner.close()
    assert echo_peer.proc.poll() is None, f"echo peer died:\n{echo_peer.stderr()}"


@pytest.mark.parametrize("name", SRV_TYPES)
def test_service_between_processes(name, echo_peer, rclpy_context):
    srv = samples.srv_class(name)
    node = Node("sam2s_test_cross_process_client", context=rclpy_context)
    spinner = _Spinner(rclpy_context, node)
    try:
        client = node.create_client(srv, f"{samples.TOPIC_PREFIX}/{name}")
        got = _call(spinner, client, samples.sample_request(name), f"{name} (echo peer)")
        assert isinstance(got, srv.Response)
        # The peer answers the sample response only if the request arrived intact.
        assert_same(samples.sample_response(name), got, f"{name} response from the other process")
    finally:
        spinner.close()


# --------------------------------------------------------------------------------------
# (c) rosbag2 MCAP via rosbags
# --------------------------------------------------------------------------------------
def _rosbags_typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted((REPO / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"sam2s_ros/msg/{path.stem}"))
    store.register(types)
    return store


def _to_rosbags(msg, store):
    """rclpy message -> rosbags message object of the same type and values."""
    import array

    import numpy as np

    cls = store.types[samples.ros_type_name(type(msg))]
    kwargs = {}
    for field in msg.get_fields_and_field_types():
        value = getattr(msg, field)
        if hasattr(type(value), "get_fields_and_field_types"):
            value = _to_rosbags(value, store)
        elif isinstance(value, array.array):
            value = np.array(value, dtype=np.dtype(value.typecode))
        elif isinstance(value, np.ndarray):
            value = value.copy()
        elif isinstance(value, list):
            value = [_to_rosbags(v, store) if hasattr(type(v), "get_fields_and_field_types") else v for v in value]
        kwargs[field] = value
    return cls(**kwargs)


def _built_type_hash(name: str) -> str:
    """RIHS01 hash the ROS build (rosidl_generator_type_description) computed for ``name``."""
    import sam2s_ros.msg

    # <prefix>/lib/pythonX.Y/site-packages/sam2s_ros/msg/__init__.py -> <prefix>/share/...
    prefix = pathlib.Path(sam2s_ros.msg.__file__).resolve().parents[5]
    description = json.loads((prefix / "share" / "sam2s_ros" / "msg" / f"{name}.json").read_text())
    hashes = {h["type_name"]: h["hash_string"] for h in description["type_hashes"]}
    return hashes[f"sam2s_ros/msg/{name}"]


@pytest.fixture(scope="module")
def mcap_bag(tmp_path_factory):
    """An MCAP bag with every sample twice: serialised by rosbags and by rclpy."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = _rosbags_typestore()
    path = tmp_path_factory.mktemp("bag") / "interfaces"
    writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        for i, name in enumerate(MSG_TYPES):
            sample = samples.sample_message(name)
            typename = f"sam2s_ros/msg/{name}"
            conn = writer.add_connection(f"/rosbags/{name}", typename, typestore=store)
            writer.write(conn, 1_000 + i, bytes(store.serialize_cdr(_to_rosbags(sample, store), typename)))
            conn = writer.add_connection(f"/rclpy/{name}", typename, typestore=store)
            writer.write(conn, 2_000 + i, serialize_message(sample))
    finally:
        writer.close()
    return path, store


def test_mcap_bag_metadata(mcap_bag):
    import yaml

    path, store = mcap_bag
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"]
    assert all(p.endswith(".mcap") for p in info["relative_file_paths"])
    assert (path / info["relative_file_paths"][0]).is_file()
    assert info["message_count"] == 2 * len(MSG_TYPES)
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert set(topics) == {f"/{src}/{n}" for src in ("rosbags", "rclpy") for n in MSG_TYPES}
    for topic, entry in topics.items():
        meta = entry["topic_metadata"]
        name = topic.rsplit("/", 1)[1]
        assert entry["message_count"] == 1
        assert meta["type"] == f"sam2s_ros/msg/{name}"
        assert meta["serialization_format"] == "cdr"
        # rosbags' hash of the .msg text == the hash the ROS build generated for the type
        assert meta["type_description_hash"].startswith("RIHS01_")
        assert meta["type_description_hash"] == _built_type_hash(name), f"{topic}: type hash differs from the build"


def test_mcap_bag_definitions(mcap_bag):
    """The MCAP schemas carry full definitions that re-parse to the same types and hashes."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    path, _ = mcap_bag
    with Reader(path) as reader:
        assert len(reader.connections) == 2 * len(MSG_TYPES)
        for conn in reader.connections:
            name = conn.msgtype.rsplit("/", 1)[1]
            assert conn.msgdef.format == MessageDefinitionFormat.MSG
            text = conn.msgdef.data
            for field in samples.msg_class(name).get_fields_and_field_types():
                assert field in text, f"{conn.topic}: field {field} not in the stored definition"
            if name == "Prompt":
                for dependency in ("MSG: std_msgs/Header", "MSG: geometry_msgs/Point", "MSG: sensor_msgs/Image"):
                    assert dependency in text
            fresh = get_typestore(Stores.EMPTY)
            fresh.register(get_types_from_msg(text, conn.msgtype))
            assert fresh.hash_rihs01(conn.msgtype) == conn.digest == _built_type_hash(name)


def test_mcap_bag_roundtrip(mcap_bag):
    """rosbags' CDR -> rclpy message and rclpy's CDR -> rosbags message, all fields equal."""
    from rosbags.rosbag2 import Reader

    path, store = mcap_bag
    seen = set()
    with Reader(path) as reader:
        for conn, _timestamp, raw in reader.messages():
            name = conn.msgtype.rsplit("/", 1)[1]
            sample = samples.sample_message(name)
            source = conn.topic.split("/")[1]
            # rclpy reads every record (the rosbags-written ones prove byte compatibility)
            from_rclpy = deserialize_message(bytes(raw), samples.msg_class(name))
            assert_same(sample, from_rclpy, f"{conn.topic} deserialised by rclpy")
            # rosbags reads every record (the rclpy-written ones prove the other direction)
            from_rosbags = store.deserialize_cdr(raw, conn.msgtype)
            assert_same(sample, from_rosbags, f"{conn.topic} deserialised by rosbags")
            seen.add((source, name))
    assert seen == {(src, n) for src in ("rosbags", "rclpy") for n in MSG_TYPES}

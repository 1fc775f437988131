"""rosbag2 helpers on the pure-Python ``rosbags`` library (no rclpy, no ``ros2 bag``).

* :func:`make_typestore`: the ROS 2 Kilted standard types (std/sensor/geometry msgs, ...)
  plus this package's own messages, registered from the ``msg/*.msg`` texts so that the
  type hashes (RIHS01) written to ``metadata.yaml`` equal those of the rosidl build.
* :class:`BagWriter` / :func:`read_messages`: write and read rosbag2 in MCAP (default)
  or sqlite3 storage; the CDR bytes are interchangeable with ``rclpy.serialization``.
* Small message builders (:func:`make_header`, :func:`image_msg`) and
  :func:`image_to_array`.

Stamps are integer nanoseconds since the epoch everywhere in this module.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Sequence

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from sam2s_ros.errors import BagError
from sam2s_ros.tracking.types import PromptInput

PACKAGE = "sam2s_ros"
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
Storage = Literal["mcap", "sqlite3"]
DEFAULT_STORAGE: Storage = "mcap"
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_BAG_FILE_SUFFIXES = (".mcap", ".db3", ".yaml", ".json", ".zstd")

IMAGE_TYPE = "sensor_msgs/msg/Image"
PROMPT_TYPE = f"{PACKAGE}/msg/Prompt"
MASK_ARRAY_TYPE = f"{PACKAGE}/msg/InstrumentMaskArray"

NS_PER_S = 1_000_000_000


def msg_dir_candidates() -> list[Path]:
    """Folders that may hold this package's ``.msg`` files, most specific first.

    Order: the source tree (``<repo>/msg`` beside the ``sam2s_ros`` folder), the install
    prefix that holds this module (``<prefix>/lib/pythonX.Y/site-packages/sam2s_ros`` ->
    ``<prefix>/share/sam2s_ros/msg``), ``$VIRTUAL_ENV``, ``sys.prefix`` and every entry of
    ``$AMENT_PREFIX_PATH`` (each ``<prefix>/share/sam2s_ros/msg``).

    Returns:
        Candidate folders (not checked for existence).
    """
    here = Path(__file__).resolve().parent
    share = Path("share") / PACKAGE / "msg"
    candidates = [here.parent / "msg"]
    if len(here.parents) > 3:
        candidates.append(here.parents[3] / share)
    prefixes = [os.environ.get("VIRTUAL_ENV", ""), sys.prefix]
    prefixes += os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    candidates += [Path(p) / share for p in prefixes if p]
    return candidates


def find_msg_dir() -> Path:
    """The first folder of :func:`msg_dir_candidates` that holds ``Prompt.msg``.

    Returns:
        Folder holding this package's ``.msg`` files.

    Raises:
        BagError: none of the candidates holds them.
    """
    for cand in msg_dir_candidates():
        if (cand / "Prompt.msg").is_file():
            return cand
    tried = ", ".join(str(c) for c in msg_dir_candidates())
    raise BagError(f"cannot find the {PACKAGE} .msg files (tried {tried})")


@functools.lru_cache(maxsize=4)
def make_typestore(msg_dir: Optional[Path] = None) -> Typestore:
    """A ``rosbags`` typestore with ROS 2 Kilted types plus the ``sam2s_ros/msg/*`` types.

    Args:
        msg_dir: folder of ``*.msg`` files; default :func:`find_msg_dir`. Each file
            ``Name.msg`` is registered as ``sam2s_ros/msg/Name``.

    Returns:
        The typestore (cached per ``msg_dir``; do not register further types into it).

    Raises:
        BagError: no ``.msg`` files found, or one does not parse.
    """
    folder = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    files = sorted(folder.glob("*.msg"))
    if not files:
        raise BagError(f"no .msg files in {folder}")
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    try:
        for path in files:
            types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
        store.register(types)
    except TypesysError as err:
        raise BagError(f"cannot register the message types of {folder}: {err}") from err
    return store


def ns_to_stamp(store: Typestore, stamp_ns: int) -> Any:
    """``builtin_interfaces/msg/Time`` for a stamp.

    Args:
        store: typestore from :func:`make_typestore`.
        stamp_ns: stamp in nanoseconds since the epoch, >= 0.

    Returns:
        A rosbags ``builtin_interfaces__msg__Time`` (sec, nanosec).
    """
    time_cls = store.types["builtin_interfaces/msg/Time"]
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return time_cls(sec=sec, nanosec=nanosec)


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds since the epoch of a ``builtin_interfaces/msg/Time`` (rosbags or rclpy).

    Args:
        stamp: object with ``sec`` and ``nanosec`` attributes.

    Returns:
        Stamp in nanoseconds.
    """
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def make_header(store: Typestore, stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/msg/Header``.

    Args:
        store: typestore from :func:`make_typestore`.
        stamp_ns: stamp in nanoseconds since the epoch.
        frame_id: coordinate frame of the data (e.g. an optical frame).

    Returns:
        A rosbags ``std_msgs__msg__Header``.
    """
    header_cls = store.types["std_msgs/msg/Header"]
    return header_cls(stamp=ns_to_stamp(store, stamp_ns), frame_id=frame_id)


_ENCODINGS = {  # encoding -> (numpy dtype, channels)
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
}


def image_msg(store: Typestore, array: np.ndarray, encoding: str, header: Any) -> Any:
    """``sensor_msgs/msg/Image`` from a numpy image (little-endian, no row padding).

    Args:
        store: typestore from :func:`make_typestore`.
        array: [H, W, 3] uint8 for ``rgb8``/``bgr8``; [H, W] uint8 for ``mono8``;
            [H, W] uint16 for ``mono16``.
        encoding: one of ``rgb8``, ``bgr8``, ``mono8``, ``8UC1``, ``mono16``, ``16UC1``.
        header: ``std_msgs/msg/Header`` (see :func:`make_header`).

    Returns:
        A rosbags ``sensor_msgs__msg__Image``.

    Raises:
        BagError: the array's shape or dtype does not fit ``encoding``.
    """
    if encoding not in _ENCODINGS:
        raise BagError(f"unsupported image encoding {encoding!r}")
    dtype, channels = _ENCODINGS[encoding]
    expected_ndim = 3 if channels > 1 else 2
    if array.dtype != dtype or array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise BagError(f"{encoding} needs a {expected_ndim}-D {np.dtype(dtype)} array, got {array.shape} {array.dtype}")
    height, width = array.shape[:2]
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).view(np.uint8).reshape(-1)
    image_cls = store.types[IMAGE_TYPE]
    return image_cls(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * np.dtype(dtype).itemsize,
        data=data,
    )


def image_to_array(msg: Any) -> np.ndarray:
    """Convert a ``sensor_msgs/msg/Image`` (rosbags or rclpy message).

    Args:
        msg: image with encoding ``rgb8``, ``bgr8``, ``mono8``, ``8UC1``, ``mono16`` or
            ``16UC1``; row padding (``step``) and big-endian data are handled.

    Returns:
        [H, W, 3] uint8 (channel order as encoded) or [H, W] uint8/uint16; [0, 0] when
        the image is empty (width or height 0).

    Raises:
        BagError: unsupported encoding or a data buffer shorter than ``step * height``.
    """
    if msg.encoding not in _ENCODINGS:
        raise BagError(f"unsupported image encoding {msg.encoding!r}")
    dtype, channels = _ENCODINGS[msg.encoding]
    if msg.width == 0 or msg.height == 0:
        return np.zeros((0, 0), dtype)
    itemsize = np.dtype(dtype).itemsize
    raw = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8)
    if raw.size < msg.step * msg.height or msg.step < msg.width * channels * itemsize:
        raise BagError(f"image data of {raw.size} bytes does not fit {msg.height} rows of step {msg.step}")
    rows = raw[: msg.step * msg.height].reshape(msg.height, msg.step)[:, : msg.width * channels * itemsize]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order)).astype(dtype)
    return arr.reshape(msg.height, msg.width, channels) if channels > 1 else arr.reshape(msg.height, msg.width)


def remove_bag(path: Path) -> None:
    """Delete a rosbag2 folder or a single bag file written earlier.

    Only deletes a file, or a folder whose entries are all bag files (``*.mcap``,
    ``*.db3``, ``metadata.yaml``, ...), so that ``--force`` can never wipe an unrelated
    folder.

    Args:
        path: bag folder or file.

    Raises:
        BagError: ``path`` is a folder holding anything else.
    """
    path = Path(path)
    if path.is_file() or path.is_symlink():
        path.unlink()
        return
    entries = list(path.iterdir())
    foreign = [e.name for e in entries if not (e.is_file() and e.suffix in _BAG_FILE_SUFFIXES)]
    if foreign:
        raise BagError(f"refusing to delete {path}: it holds non-bag entries ({', '.join(sorted(foreign)[:5])})")
    for entry in entries:
        entry.unlink()
    path.rmdir()


class BagWriter:
    """Write messages to a new rosbag2 folder; use as a context manager.

    On an exception inside the ``with`` block the partly written folder is removed.

    Example:
        >>> with BagWriter(out, storage="mcap") as bag:
        ...     bag.add_topic("/image", IMAGE_TYPE)
        ...     bag.write("/image", stamp_ns, image)
    """

    def __init__(self, path: Path, storage: Storage = DEFAULT_STORAGE, store: Optional[Typestore] = None) -> None:
        """Prepare a writer (nothing is created before ``__enter__``).

        Args:
            path: folder of the new bag; must not exist.
            storage: ``"mcap"`` or ``"sqlite3"``.
            store: typestore; default :func:`make_typestore`.

        Raises:
            BagError: unknown storage, or ``path`` exists.
        """
        if storage not in _PLUGINS:
            raise BagError(f"unknown storage {storage!r} (choose from {', '.join(STORAGES)})")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already")
        self.storage = storage
        self.store = store if store is not None else make_typestore()
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=_PLUGINS[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagWriter":
        try:
            self._writer.open()
        except WriterError as err:
            raise BagError(f"cannot create bag {self.path}: {err}") from err
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self._writer.close()
            except WriterError as err:
                raise BagError(f"cannot finish bag {self.path}: {err}") from err
            return
        self._writer.abort()
        if self.path.exists():
            # keep the original exception; on failure a half-written folder stays behind
            with contextlib.suppress(BagError, OSError):
                remove_bag(self.path)

    def set_custom_data(self, key: str, value: str) -> None:
        """Store a string in ``metadata.yaml``'s ``custom_data`` (e.g. provenance JSON)."""
        self._writer.set_custom_data(key, value)

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register a topic.

        Args:
            topic: topic name, e.g. ``/endoscope/left/image_raw``.
            msgtype: full type name, e.g. ``sensor_msgs/msg/Image``.

        Raises:
            BagError: the type is unknown to the typestore or the topic exists.
        """
        if msgtype not in self.store.types:
            raise BagError(f"message type {msgtype} is not in the typestore")
        if topic in self._connections:
            raise BagError(f"topic {topic} added twice")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        """Serialize (CDR) and write one message.

        Args:
            topic: a topic registered with :meth:`add_topic`.
            log_time_ns: bag (receive) time in nanoseconds since the epoch.
            msg: a rosbags message object of the topic's type.
        """
        conn = self._connections[topic]
        self.write_raw(topic, log_time_ns, self.store.serialize_cdr(msg, conn.msgtype))

    def write_raw(self, topic: str, log_time_ns: int, raw: bytes) -> None:
        """Write one message given as CDR bytes (e.g. received by rclpy with ``raw=True``).

        Args:
            topic: a topic registered with :meth:`add_topic`.
            log_time_ns: bag (receive) time in nanoseconds since the epoch.
            raw: serialized message of the topic's type (rclpy's and rosbags' CDR agree).
        """
        self._writer.write(self._connections[topic], int(log_time_ns), bytes(raw))
        self.counts[topic] += 1


@dataclass(frozen=True)
class BagMessage:
    """One message read from a bag.

    Attributes:
        topic: topic name.
        msgtype: full type name (``pkg/msg/Name``).
        log_time_ns: bag (receive) time in nanoseconds since the epoch.
        raw: CDR bytes as stored.
        msg: the deserialized rosbags message, or None when read with ``deserialize=False``.
    """

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    msg: Any


def bag_topics(path: Path) -> dict[str, str]:
    """Topics of a bag and their types.

    Args:
        path: rosbag2 folder (mcap or sqlite3), or a single ``.mcap``/``.db3`` file.

    Returns:
        ``{topic: msgtype}``.

    Raises:
        BagError: the bag cannot be opened.
    """
    with _open_reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


@contextlib.contextmanager
def _open_reader(path: Path) -> Iterator[Reader]:
    try:
        reader = Reader(Path(path))
        reader.open()
    except (ReaderError, FileNotFoundError, OSError) as err:
        raise BagError(f"cannot open bag {path}: {err}") from err
    try:
        yield reader
    finally:
        reader.close()


def read_messages(
    path: Path,
    topics: Optional[Sequence[str]] = None,
    store: Optional[Typestore] = None,
    deserialize: bool = True,
) -> Iterator[BagMessage]:
    """Messages of a bag in log-time order.

    Args:
        path: rosbag2 folder (mcap or sqlite3; detected from ``metadata.yaml``) or a single
            ``.mcap``/``.db3`` file.
        topics: only these topics (all when None). A topic that is not in the bag is an
            error.
        store: typestore; default :func:`make_typestore`.
        deserialize: set False to get only raw CDR bytes (``msg`` is None).

    Yields:
        :class:`BagMessage` per message.

    Raises:
        BagError: the bag cannot be read, a requested topic is absent, or a message type
            in the bag differs from the typestore's definition (type hash mismatch).
    """
    store = store if store is not None else make_typestore()
    with _open_reader(path) as reader:
        conns = _select_connections(reader.connections, topics, path)
        if deserialize:
            _check_types(conns, store)
        try:
            for conn, log_time, raw in reader.messages(connections=conns):
                msg = store.deserialize_cdr(raw, conn.msgtype) if deserialize else None
                yield BagMessage(conn.topic, conn.msgtype, int(log_time), bytes(raw), msg)
        except ReaderError as err:
            raise BagError(f"cannot read bag {path}: {err}") from err


def _select_connections(conns: Iterable[Any], topics: Optional[Sequence[str]], path: Path) -> list[Any]:
    conns = list(conns)
    if topics is None:
        return conns
    present = {c.topic for c in conns}
    missing = [t for t in topics if t not in present]
    if missing:
        raise BagError(f"bag {path} has no topic {', '.join(missing)} (topics: {', '.join(sorted(present)) or 'none'})")
    return [c for c in conns if c.topic in topics]


def _check_types(conns: Iterable[Any], store: Typestore) -> None:
    for conn in conns:
        if conn.msgtype not in store.types:
            raise BagError(f"topic {conn.topic}: message type {conn.msgtype} is unknown")
        digest = conn.digest or ""
        if digest.startswith("RIHS01_") and digest != store.hash_rihs01(conn.msgtype):
            raise BagError(
                f"topic {conn.topic}: {conn.msgtype} in the bag has another definition than this "
                f"package's (type hash {digest} != {store.hash_rihs01(conn.msgtype)})"
            )


def prompt_msg(store: Typestore, prompt: PromptInput, header: Any) -> Any:
    """``sam2s_ros/msg/Prompt`` from a :class:`~sam2s_ros.tracking.types.PromptInput`.

    Args:
        store: typestore from :func:`make_typestore`.
        prompt: the prompt; ``points`` [N, 2] float32 (x, y) source pixels, ``labels`` [N]
            (1 positive, 0 negative), optional ``box`` [4] (x0, y0, x1, y1) source pixels,
            optional ``mask`` [H, W] bool (sent as mono8, 255 = instrument).
        header: header of the image the prompt refers to (see :func:`make_header`).

    Returns:
        A rosbags ``sam2s_ros__msg__Prompt``.

    Raises:
        BagError: more points than labels (or the reverse).
    """
    points = np.asarray(prompt.points, np.float64).reshape(-1, 2)
    labels = np.asarray(prompt.labels).reshape(-1)
    if len(points) != len(labels):
        raise BagError(f"{len(points)} points but {len(labels)} point labels")
    point_cls = store.types["geometry_msgs/msg/Point"]
    if prompt.mask is not None:
        mask = image_msg(store, np.where(np.asarray(prompt.mask, bool), 255, 0).astype(np.uint8), "mono8", header)
    else:
        mask = image_msg(store, np.zeros((0, 0), np.uint8), "mono8", header)
    prompt_cls = store.types[PROMPT_TYPE]
    return prompt_cls(
        header=header,
        instrument_id=int(prompt.instrument_id),
        mode=int(prompt.mode),
        class_id=-1 if prompt.class_id is None else int(prompt.class_id),
        class_name=prompt.class_name,
        points=[point_cls(x=float(x), y=float(y), z=0.0) for x, y in points],
        point_labels=labels.astype(np.uint8),
        has_box=prompt.box is not None,
        box=np.asarray(prompt.box if prompt.box is not None else np.zeros(4), np.float32).reshape(4),
        mask=mask,
    )


def mask_array_msg(
    store: Typestore,
    header: Any,
    masks: dict[int, np.ndarray],
    latency_s: float = 0.0,
    frame_index: int = 0,
) -> Any:
    """``sam2s_ros/msg/InstrumentMaskArray`` with binary masks only (no classes, no scores).

    Meant for tools and tests that write tracking output without the node (the node fills
    scores and classes itself). Every instrument is marked visible when its mask is
    non-empty; ``predicted_iou`` is 1 and ``object_score`` +/-1 accordingly.

    Args:
        store: typestore from :func:`make_typestore`.
        header: header of the source image (see :func:`make_header`).
        masks: ``{instrument_id: [H, W] bool mask}`` at source resolution.
        latency_s: processing latency in seconds.
        frame_index: processed-frame counter.

    Returns:
        A rosbags ``sam2s_ros__msg__InstrumentMaskArray``.
    """
    mask_cls = store.types[f"{PACKAGE}/msg/InstrumentMask"]
    instruments = []
    for inst_id, mask in sorted(masks.items()):
        mask = np.asarray(mask, bool)
        ys, xs = np.nonzero(mask)
        visible = xs.size > 0
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if visible else (0, 0, 0, 0)
        instruments.append(
            mask_cls(
                instrument_id=int(inst_id),
                class_id=-1,
                class_name="",
                class_score=0.0,
                class_source=0,
                predicted_iou=1.0,
                object_score=1.0 if visible else -1.0,
                visible=visible,
                bbox_x0=bbox[0],
                bbox_y0=bbox[1],
                bbox_x1=bbox[2],
                bbox_y1=bbox[3],
                mask=image_msg(store, np.where(mask, 255, 0).astype(np.uint8), "mono8", header),
            )
        )
    array_cls = store.types[MASK_ARRAY_TYPE]
    return array_cls(header=header, instruments=instruments, latency=float(latency_s), frame_index=int(frame_index))

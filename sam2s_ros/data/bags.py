"""rosbag2 I/O on the pure-Python ``rosbags`` library (no rclpy, no ``ros2 bag``).

* :func:`make_typestore`: the ROS 2 Kilted standard types (std/sensor/geometry msgs, ...)
  plus this package's own messages, registered from the ``msg/*.msg`` texts so that the
  type hashes (RIHS01) written to ``metadata.yaml`` equal those of the rosidl build.
* :class:`BagWriter` / :func:`read_messages`: write and read rosbag2 in MCAP (default)
  or sqlite3 storage; the CDR bytes are interchangeable with ``rclpy.serialization``.
* :func:`is_bag`, :func:`remove_bag`, :func:`bag_topics`.

Messages are built and decoded by :mod:`sam2s_ros.codec` (``BagWriter.types`` is the
typestore's flavour). Stamps are integer nanoseconds since the epoch everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Sequence

from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from sam2s_ros.codec import PACKAGE, MessageTypes, rosbags_types
from sam2s_ros.errors import BagError

STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
Storage = Literal["mcap", "sqlite3"]
DEFAULT_STORAGE: Storage = "mcap"
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_BAG_FILE_SUFFIXES = (".mcap", ".db3", ".yaml", ".json", ".zstd")
_BAG_FILE_EXTS = (".mcap", ".db3")  # a single-file bag


def msg_dir_candidates() -> list[Path]:
    """Folders that may hold this package's ``.msg`` files, most specific first.

    Order: the source tree (``<repo>/msg`` beside the ``sam2s_ros`` folder), the install
    prefix that holds this module (``<prefix>/lib/pythonX.Y/site-packages/sam2s_ros`` ->
    ``<prefix>/share/sam2s_ros/msg``), ``$VIRTUAL_ENV``, ``sys.prefix`` and every entry of
    ``$AMENT_PREFIX_PATH`` (each ``<prefix>/share/sam2s_ros/msg``).

    Returns:
        Candidate folders (not checked for existence).
    """
    here = Path(__file__).resolve().parents[1]  # the sam2s_ros package folder
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


def is_bag(path: Path) -> bool:
    """Tell whether ``path`` is a rosbag2 folder (has ``metadata.yaml``) or a ``.mcap``/``.db3`` file."""
    path = Path(path)
    return (path / "metadata.yaml").is_file() if path.is_dir() else path.suffix in _BAG_FILE_EXTS


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
        ...     bag.add_topic("/image", codec.IMAGE_TYPE)
        ...     bag.write("/image", stamp_ns, codec.image_msg(rgb, "rgb8", header, bag.types))
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
        self.types: MessageTypes = rosbags_types(self.store)  # message flavour for sam2s_ros.codec
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

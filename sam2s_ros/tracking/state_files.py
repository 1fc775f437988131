"""Reading and writing tracker state files safely: regular files only, bounded, atomic.

Reading never blocks on a FIFO or a device: the path is checked with ``lstat`` first, then
opened with ``O_NONBLOCK | O_NOFOLLOW`` and checked again with ``fstat`` (the file cannot
be swapped in between), and at most ``max_bytes`` are read. Writing goes to a hidden
temporary file in the target's folder, is flushed to disk (``fsync``) and then renamed
over the target (``os.replace``), or hard-linked to it when the target must not be
overwritten, so a reader never sees half a file and an existing file is never clobbered
by accident. Knows nothing of the state's content (see :mod:`sam2s_ros.tracking.state`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from sam2s_ros.errors import StateFileError

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_CHUNK = 1 << 20  # bytes per read() call


def file_kind(mode: int) -> str:
    """Human name of the file type in an ``st_mode`` ("regular file", "directory", "FIFO", ...)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def check_regular_or_absent(path: str) -> bool:
    """True when ``path`` is a regular file, False when nothing is there (symlinks not followed).

    Raises:
        StateFileError: something else is there (directory, FIFO, device, socket, symbolic
            link), or it cannot be examined.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateFileError(f"cannot examine {path!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise StateFileError(f"{path!r} is a {file_kind(st.st_mode)}, not a regular file")
    return True


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The whole content of the regular file ``path``, never blocking on special files.

    Args:
        path: file to read; a symbolic link is refused, not followed.
        max_bytes: larger files are refused without being read.

    Raises:
        StateFileError: missing, not a regular file, larger than ``max_bytes``, or unreadable.
    """
    if not check_regular_or_absent(path):
        raise StateFileError(f"tracker state {path!r} does not exist")
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError(f"{path!r} is a symbolic link, not a regular file") from exc
        raise StateFileError(f"cannot open {path!r}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between lstat and open
            raise StateFileError(f"{path!r} is a {file_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise StateFileError(
                f"{path!r} has {st.st_size} bytes, more than a state of this tracker can have ({max_bytes})"
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise StateFileError(f"{path!r} grew beyond {max_bytes} bytes while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise StateFileError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Args:
        path: target file; its folder must exist.
        data: the complete content.
        overwrite: replace an existing regular file; when False an existing file is refused
            (checked atomically with a hard link where the file system has them).

    Raises:
        StateFileError: the target exists and ``overwrite`` is False, the target is not a
            regular file, or the file cannot be written (the target is then unchanged).
    """
    folder, base = os.path.split(path)
    if check_regular_or_absent(path) and not overwrite:
        raise StateFileError(f"{path!r} exists; set overwrite to replace it")
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path, overwrite)
        _fsync_folder(folder)
    except OSError as exc:
        raise StateFileError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):  # gone after a rename; else best effort
            os.unlink(tmp)


def _publish(tmp: str, path: str, overwrite: bool) -> None:
    """Move the finished temporary file to ``path`` (no overwrite: hard link, fails if it exists)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StateFileError(f"{path!r} exists; set overwrite to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(path):  # no hard links here: check, then rename
            raise StateFileError(f"{path!r} exists; set overwrite to replace it") from None
        os.replace(tmp, path)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some platforms cannot open folders; the rename itself is still atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)

"""Fetching the official SAM 2.1 checkpoints (``sam2s download``): verified, atomic, offline-aware.

:data:`CHECKPOINTS` is the one table of sources: Meta's public URL per model size and the
file's sha256 where a published value is known. Meta's download script and release notes
publish no hashes, and none were found elsewhere from an authoritative source, so every
entry has ``sha256=None`` today: the file's hash is then computed and printed (compare it
with your source's), never invented. A download is streamed into a temporary file in the
destination folder and renamed into place only when it is complete (``Content-Length``
bytes) and its hash matches, so an interrupted or corrupt download never leaves a file
under the checkpoint's name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from sam2s_ros.errors import Sam2sError

SAM2P1_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 15.0  # no answer within this time counts as offline


class DownloadError(Sam2sError):
    """A checkpoint could not be downloaded or verified (offline, truncated, wrong hash)."""


@dataclass(frozen=True)
class CheckpointSource:
    """Where one checkpoint comes from.

    Attributes:
        model_size: the ``model_size`` parameter value that fits the file.
        filename: file name to save it under.
        url: public download URL.
        sha256: expected hex digest, or None when no published value is known.
        approx_mb: approximate size in MB (for messages only).
    """

    model_size: str
    filename: str
    url: str
    sha256: Optional[str]
    approx_mb: int


def _sam2p1(size: str, approx_mb: int) -> CheckpointSource:
    name = f"sam2.1_hiera_{size}.pt"
    return CheckpointSource(size, name, f"{SAM2P1_BASE_URL}/{name}", None, approx_mb)


#: model_size -> source; sha256 None = Meta publishes none (the download's hash is printed)
CHECKPOINTS: dict[str, CheckpointSource] = {
    "tiny": _sam2p1("tiny", 156),
    "small": _sam2p1("small", 184),
    "base_plus": _sam2p1("base_plus", 324),
    "large": _sam2p1("large", 898),
}


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of :func:`download_checkpoint`.

    Attributes:
        path: the checkpoint file.
        sha256: its hex digest.
        verified: True when it was checked against a known hash.
        downloaded: False when the file was already there (and, with a known hash, matched).
        size_bytes: file size.
    """

    path: Path
    sha256: str
    verified: bool
    downloaded: bool
    size_bytes: int


def manual_instructions(source: CheckpointSource, dest: Path) -> str:
    """How to get the file by hand (printed when the download fails)."""
    return (
        f"download it on a machine with internet access (curl -fL -o {source.filename} {source.url}), "
        f"copy it to {dest}, then start the node with -p checkpoint:={dest} -p model_size:={source.model_size}"
        + (f"; its sha256 must be {source.sha256}" if source.sha256 else "")
    )


def download_checkpoint(
    model_size: str,
    dest_dir: Path,
    *,
    sources: Mapping[str, CheckpointSource] = CHECKPOINTS,
    force: bool = False,
    timeout_s: float = CONNECT_TIMEOUT_S,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
) -> DownloadResult:
    """Download one checkpoint into ``dest_dir`` (atomically) and verify it.

    Args:
        model_size: key of ``sources`` (tiny, small, base_plus, large).
        dest_dir: folder to save into (created if missing).
        sources: the source table (tests and mirrors pass their own).
        force: download again even when the file exists.
        timeout_s: socket timeout in seconds (connect and each read).
        progress: called with (bytes so far, total bytes or None) after every chunk.

    Returns:
        :class:`DownloadResult`.

    Raises:
        DownloadError: unknown size, unreachable URL (offline), HTTP error, truncated
            download, hash mismatch, or an existing file whose hash does not match.
    """
    if model_size not in sources:
        raise DownloadError(f"unknown checkpoint {model_size!r}; one of: {', '.join(sources)}")
    source = sources[model_size]
    dest_dir = Path(dest_dir)
    dest = dest_dir / source.filename
    if dest.exists() and not force:
        return _existing(source, dest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{source.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _fetch(source, dest, out, timeout_s, progress)
            out.flush()
            os.fsync(out.fileno())
        if source.sha256 and digest != source.sha256.lower():
            raise DownloadError(
                f"{source.url}: sha256 {digest} does not match the expected {source.sha256}; "
                f"the file was not saved. Retry, or {manual_instructions(source, dest)}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return DownloadResult(dest, digest, bool(source.sha256), True, size)


def _existing(source: CheckpointSource, dest: Path) -> DownloadResult:
    from sam2s_ros.model.checkpoint import file_sha256  # imports torch: only when a file is there

    digest = file_sha256(str(dest))
    if source.sha256 and digest != source.sha256.lower():
        raise DownloadError(
            f"{dest} exists but its sha256 {digest} is not the expected {source.sha256} "
            "(a different or damaged file): pass --force to download it again"
        )
    return DownloadResult(dest, digest, bool(source.sha256), False, dest.stat().st_size)


def _fetch(source: CheckpointSource, dest: Path, out, timeout_s: float, progress) -> tuple[str, int]:
    """Stream ``source.url`` into ``out``; (hex sha256, bytes). Raises DownloadError."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(source.url, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(size, total)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"{source.url}: HTTP {err.code} {err.reason}. {manual_instructions(source, dest)}"
        ) from None
    except urllib.error.URLError as err:
        raise DownloadError(
            f"cannot reach {source.url} ({err.reason}): offline? To install the checkpoint without this "
            f"machine reaching the network, {manual_instructions(source, dest)}"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead
        raise DownloadError(
            f"{source.url}: download interrupted after {size} bytes ({type(err).__name__}: {err}); "
            f"nothing was saved. Retry, or {manual_instructions(source, dest)}"
        ) from None
    if total is not None and size != total:
        raise DownloadError(
            f"{source.url}: download truncated: {size} of {total} bytes; nothing was saved. "
            f"Retry, or {manual_instructions(source, dest)}"
        )
    return digest.hexdigest(), size

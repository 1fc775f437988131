"""Frames and labels on disk: frame folders, videos and label images (DAVIS-style clips).

A DAVIS-style clip is a folder with ``frames/`` (``00000.png``, ...) and a folder of label
images with the same stems (``masks_instruments/`` in the CholecSeg8k clip): 0 background,
k = instrument k. :func:`read_davis_sequence` reads both; tests and benchmarks use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
from PIL import Image

from sam2s_ros.errors import BagError

FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


LABEL_EXTS = (".png", ".tif", ".tiff")


def list_image_files(folder: Path, exts: tuple[str, ...] = FRAME_EXTS) -> list[Path]:
    """Image files of a folder, sorted by name (not recursive).

    Args:
        folder: the folder.
        exts: accepted suffixes (lower case; matched case-insensitively).

    Returns:
        Sorted paths.
    """
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in exts)


def read_label_image(path: Path) -> np.ndarray:
    """Read a single-channel label image (0 = background, k = instrument/object k).

    Palette PNGs (as DAVIS 2017's) give their palette indices, 16-bit PNGs their values.

    Args:
        path: label image file.

    Returns:
        [H, W] uint8, or uint16 for 16-bit files.

    Raises:
        BagError: unreadable file, or a colour (RGB) image.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.array(img)
    except (OSError, ValueError) as err:
        raise BagError(f"cannot read label image {path}: {err}") from err
    if arr.ndim != 2:
        raise BagError(f"{path} is not a single-channel label image (mode {mode}, shape {arr.shape})")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.uint16)
    raise BagError(f"{path}: unsupported label image type {arr.dtype} (mode {mode})")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) in pixels of an image file, read from its header only.

    Raises:
        BagError: unreadable file.
    """
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as err:
        raise BagError(f"cannot read image {path}: {err}") from err


def read_rgb(path: Path) -> np.ndarray:
    """Read a frame file as [H, W, 3] uint8 RGB.

    Raises:
        BagError: unreadable file.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BagError(f"cannot read frame {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_video(path: Path, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Frames of a video file (``cv2.VideoCapture``).

    Args:
        path: video file.
        max_frames: stop after this many frames (all when None).

    Yields:
        [H, W, 3] uint8 RGB frames.

    Raises:
        BagError: the video cannot be opened or holds no frame.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BagError(f"cannot open video {path}")
    try:
        count = 0
        while max_frames is None or count < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if count == 0:
            raise BagError(f"video {path} holds no readable frame")
    finally:
        cap.release()


@dataclass
class Clip:
    """A clip read by :func:`read_davis_sequence`.

    Attributes:
        frames: [H, W, 3] uint8 RGB frames in name order.
        labels: [H, W] uint8/uint16 label image per frame (same order), or None per frame
            without a label file; empty when the clip has no label folder.
        names: file stems of the frames.
    """

    frames: list[np.ndarray]
    labels: list[Optional[np.ndarray]]
    names: list[str]


def read_davis_sequence(
    clip: Path,
    max_frames: Optional[int] = None,
    frames_dir: str = "frames",
    labels_dir: Optional[str] = "masks_instruments",
) -> Clip:
    """Read a DAVIS-style clip: ``clip/frames/*`` and the label images ``clip/<labels_dir>/<stem>.png``.

    Args:
        clip: the clip folder.
        max_frames: read at most this many frames (all when None).
        frames_dir: sub-folder of the frames.
        labels_dir: sub-folder of the label images (same stems, ``.png``/``.tif``/``.tiff``),
            or None to read frames only.

    Returns:
        :class:`Clip`.

    Raises:
        BagError: no frames in the folder, or an unreadable file.
    """
    folder = Path(clip) / frames_dir
    if not folder.is_dir():
        raise BagError(f"no frame folder {folder}")
    files = list_image_files(folder)[:max_frames]
    if not files:
        raise BagError(f"no frames ({', '.join(FRAME_EXTS)}) in {folder}")
    frames = [read_rgb(p) for p in files]
    labels: list[Optional[np.ndarray]] = []
    label_folder = Path(clip) / labels_dir if labels_dir is not None else None
    if label_folder is not None and label_folder.is_dir():
        by_stem = {p.stem: p for p in list_image_files(label_folder, LABEL_EXTS)}
        labels = [read_label_image(by_stem[p.stem]) if p.stem in by_stem else None for p in files]
    return Clip(frames, labels, [p.stem for p in files])

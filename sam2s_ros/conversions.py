"""Conversions between ROS messages and the tracker's numpy data.

Images in: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> [H, W, 3] uint8 RGB
(colour conversion by rosbags-image). Images out: [H, W] uint8/uint16 or [H, W, 3] uint8 ->
``sensor_msgs/Image`` (mono8, mono16, rgb8). Prompts: ``sam2s_ros/Prompt`` ->
:class:`PromptInput`. Results: :class:`FrameResult` -> InstrumentMaskArray,
InstrumentClassArray, label image. Nothing here knows of nodes, topics or threads.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Optional, Sequence, Union

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from rosbags.image import ImageError, image_to_cvimage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2s_ros.errors import FrameError, PromptError
from sam2s_ros.msg import (
    ClassVocabulary,
    InstrumentClass,
    InstrumentClassArray,
    InstrumentMask,
    InstrumentMaskArray,
    Prompt,
)
from sam2s_ros.tracking.types import FrameResult, PromptInput, PromptMode

# Input encodings we convert to RGB: (numpy dtype, channels). rosbags-image does the colour
# conversion; generic "8UC3"-style encodings are refused because their channel order is unknown.
INPUT_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("uint8", 3),
    "bgr8": ("uint8", 3),
    "rgba8": ("uint8", 4),
    "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1),
    "mono16": ("uint16", 1),
    "rgb16": ("uint16", 3),
    "bgr16": ("uint16", 3),
    "rgba16": ("uint16", 4),
    "bgra16": ("uint16", 4),
    "bayer_rggb8": ("uint8", 1),
    "bayer_bggr8": ("uint8", 1),
    "bayer_gbrg8": ("uint8", 1),
    "bayer_grbg8": ("uint8", 1),
    "uyvy": ("uint8", 2),
    "yuv422": ("uint8", 2),
    "yuyv": ("uint8", 2),
    "yuv422_yuy2": ("uint8", 2),
}
# Mask-prompt encodings (single channel; non-zero = instrument).
MASK_ENCODINGS: dict[str, str] = {"mono8": "uint8", "8UC1": "uint8", "mono16": "uint16", "16UC1": "uint16"}
# Output encodings: (numpy dtype, channels).
OUTPUT_ENCODINGS: dict[str, tuple[type, int]] = {
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "rgb8": (np.uint8, 3),
}

AnyImage = Union[Image, CompressedImage]


class UnsupportedEncodingError(FrameError):
    """The image encoding (or compressed format) cannot be converted to RGB."""


class EmptyImageError(FrameError):
    """The image has zero width or height (or no data)."""


class ImageTooLargeError(FrameError):
    """The image is larger than the configured maximum size."""


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (0 for a zero stamp)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def image_msg_to_rgb(msg: AnyImage, max_hw: tuple[int, int]) -> np.ndarray:
    """Convert an Image or CompressedImage message to [H, W, 3] uint8 RGB.

    Args:
        msg: the message; Image rows may be padded (``step`` > packed row size).
        max_hw: (max height, max width) in pixels; larger images are refused.

    Returns:
        [H, W, 3] uint8 RGB array (a new array, not a view of the message buffer).

    Raises:
        UnsupportedEncodingError: unknown encoding / undecodable compressed data.
        EmptyImageError: zero width, height or data.
        ImageTooLargeError: height or width above max_hw.
        FrameError: data shorter than the header says, bad step.
    """
    if isinstance(msg, CompressedImage):
        rgb = _compressed_to_rgb(msg)
    else:
        rgb = _raw_to_rgb(msg, max_hw)
    _check_size(rgb.shape[0], rgb.shape[1], max_hw)
    return rgb


def _check_size(height: int, width: int, max_hw: tuple[int, int]) -> None:
    if height == 0 or width == 0:
        raise EmptyImageError(f"image has zero size ({width}x{height})")
    if height > max_hw[0] or width > max_hw[1]:
        raise ImageTooLargeError(f"image {width}x{height} is above max_image_width/height {max_hw[1]}x{max_hw[0]}")


def _raw_to_rgb(msg: Image, max_hw: tuple[int, int]) -> np.ndarray:
    enc = msg.encoding
    if enc not in INPUT_ENCODINGS:
        raise UnsupportedEncodingError(f"unsupported image encoding {enc!r} (supported: {', '.join(INPUT_ENCODINGS)})")
    _check_size(msg.height, msg.width, max_hw)
    dtype, channels = INPUT_ENCODINGS[enc]
    try:
        rgb = image_to_cvimage(_packed(msg, channels * np.dtype(dtype).itemsize), "rgb8")
    except (ImageError, cv2.error) as err:
        raise UnsupportedEncodingError(f"cannot convert {enc!r} to rgb8: {err}") from None
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)  # own memory, not the message's


def _packed(msg: Image, pixel_bytes: int) -> Union[Image, SimpleNamespace]:
    """The message itself when rows are packed, else a stand-in with the padding removed.

    Raises:
        FrameError: step smaller than a row, or data shorter than height * step.
    """
    h, w = int(msg.height), int(msg.width)
    row_bytes = w * pixel_bytes
    step = int(msg.step) or row_bytes
    if step < row_bytes:
        raise FrameError(f"image step {msg.step} is smaller than width * pixel size ({row_bytes})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * (h - 1) + row_bytes:
        raise FrameError(
            f"image data has {data.size} bytes, header says {step * h} ({w}x{h} {msg.encoding}, step {step})"
        )
    if step == row_bytes and data.size == h * row_bytes:
        return msg
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, row_bytes), strides=(step, 1))
    return SimpleNamespace(
        height=h,
        width=w,
        encoding=msg.encoding,
        is_bigendian=msg.is_bigendian,
        data=np.ascontiguousarray(rows).reshape(-1),
    )


def _compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise EmptyImageError("compressed image has no data")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # [H, W, 3] uint8 BGR, or None
    if img is None:
        raise UnsupportedEncodingError(f"cannot decode compressed image (format {msg.format!r})")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """[H, W] uint8 (mono8), [H, W] uint16 (mono16) or [H, W, 3] uint8 (rgb8) -> Image.

    Raises:
        ValueError: encoding not in OUTPUT_ENCODINGS, or array dtype/shape not matching it.
    """
    if encoding not in OUTPUT_ENCODINGS:
        raise ValueError(f"cannot publish encoding {encoding!r}")
    dtype, channels = OUTPUT_ENCODINGS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if array.dtype != dtype or array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ValueError(
            f"{encoding} needs a {dtype.__name__} array with {channels} channel(s), got {array.dtype} {array.shape}"
        )
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = int(array.shape[1] * channels * array.dtype.itemsize)
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def prompt_from_msg(msg: Prompt) -> PromptInput:
    """Map a Prompt message to a PromptInput (z of points ignored, class_id < 0 -> None).

    Values are checked against the image (NaN, out of frame, mask size) by
    ``InstrumentTracker.check_prompt``; this only refuses what cannot be mapped.

    Raises:
        PromptError: unknown mode, points/labels length mismatch, a point label other than
            0/1, unsupported mask encoding or mask data of the wrong size.
    """
    try:
        mode = PromptMode(msg.mode)
    except ValueError:
        raise PromptError(f"unknown prompt mode {msg.mode} (0 NEW, 1 REFINE, 2 REPLACE)") from None
    points = np.array([[p.x, p.y] for p in msg.points], dtype=np.float32).reshape(-1, 2)
    labels = np.frombuffer(bytes(msg.point_labels), dtype=np.uint8).astype(np.int32)
    if len(points) != len(labels):
        raise PromptError(f"{len(points)} points but {len(labels)} point_labels")
    if np.any(labels > 1):
        raise PromptError("point_labels must be 1 (positive) or 0 (negative)")
    box = np.asarray(msg.box, dtype=np.float32).copy() if msg.has_box else None
    return PromptInput(
        instrument_id=int(msg.instrument_id),
        mode=mode,
        points=points,
        labels=labels,
        box=box,
        mask=mask_from_msg(msg.mask),
        class_id=int(msg.class_id) if msg.class_id >= 0 else None,
        class_name=msg.class_name,
    )


def mask_from_msg(msg: Image) -> Optional[np.ndarray]:
    """Mask prompt Image -> [H, W] bool (non-zero = instrument); None for an empty image.

    Raises:
        PromptError: unsupported encoding or data of the wrong size.
    """
    if msg.width == 0 or msg.height == 0:
        return None
    if msg.encoding not in MASK_ENCODINGS:
        raise PromptError(f"mask prompt encoding {msg.encoding!r} unsupported (use mono8)")
    try:
        pixels = image_to_cvimage(_packed(msg, np.dtype(MASK_ENCODINGS[msg.encoding]).itemsize))
    except FrameError as err:
        raise PromptError(f"mask prompt: {err}") from None
    return np.asarray(pixels) != 0


def masks_msg(result: FrameResult, header: Header, latency: float, with_mask_images: bool) -> InstrumentMaskArray:
    """FrameResult -> InstrumentMaskArray (masks at source size; mono8 255/0 when wanted)."""
    out = InstrumentMaskArray(header=header, latency=float(latency), frame_index=int(result.frame_index))
    for r in result.instruments:
        item = InstrumentMask(
            instrument_id=int(r.instrument_id),
            class_id=int(r.class_id),
            class_name=r.class_name,
            class_score=float(r.class_score),
            class_source=int(r.class_source),
            predicted_iou=float(r.predicted_iou),
            object_score=float(r.object_score),
            visible=bool(r.visible),
        )
        item.bbox_x0, item.bbox_y0, item.bbox_x1, item.bbox_y1 = (int(v) for v in r.bbox)
        if with_mask_images:
            item.mask = array_to_image_msg(r.mask.astype(np.uint8) * np.uint8(255), "mono8", header)
        else:
            item.mask = Image(header=header)
        out.instruments.append(item)
    return out


def classes_msg(result: FrameResult, header: Header) -> InstrumentClassArray:
    """FrameResult -> InstrumentClassArray."""
    out = InstrumentClassArray(header=header)
    for r in result.instruments:
        out.instruments.append(
            InstrumentClass(
                instrument_id=int(r.instrument_id),
                class_id=int(r.class_id),
                class_name=r.class_name,
                class_score=float(r.class_score),
                class_source=int(r.class_source),
                visible=bool(r.visible),
            )
        )
    return out


def label_image_msg(result: FrameResult, header: Header, encoding: str) -> Image:
    """FrameResult -> label Image (mono8/mono16; 0 background, pixel = instrument id).

    Raises:
        ValueError: an instrument id above 255 with mono8.
    """
    dtype = np.uint8 if encoding == "mono8" else np.uint16
    return array_to_image_msg(result.label_image(dtype), encoding, header)


def vocabulary_msg(
    vocabulary: Sequence[tuple[int, str]], semantic_head_trained: bool, header: Header
) -> ClassVocabulary:
    """(class_id, name) pairs -> ClassVocabulary."""
    return ClassVocabulary(
        header=header,
        class_ids=[int(i) for i, _ in vocabulary],
        class_names=[str(n) for _, n in vocabulary],
        semantic_head_trained=bool(semantic_head_trained),
    )

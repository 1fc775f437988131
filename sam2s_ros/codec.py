"""The one message codec: ROS messages <-> the tracker's numpy data, for rclpy and rosbags.

Every conversion between ``sensor_msgs``/``sam2s_ros`` messages and numpy arrays or
tracker types lives here; the node, the bag tools (make-bag, eval, replay) and the tests
all use it. It builds messages of either flavour:

* rclpy message classes (:func:`rclpy_types`, the default), for the node and DDS tools;
* a rosbags typestore's dataclasses (:func:`rosbags_types`), for bags written without rclpy.

Readers are flavour-agnostic (they only read attributes), so a message deserialized by
rclpy or by rosbags decodes the same way.

Images in: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> [H, W, 3] uint8 RGB
(colour conversion by rosbags-image), or -> the raw array (:func:`image_to_array`). Images
out: numpy -> ``sensor_msgs/Image`` (little-endian, no row padding). Prompts:
``sam2s_ros/Prompt`` <-> :class:`PromptInput`. Results: :class:`FrameResult` <->
InstrumentMaskArray, InstrumentClassArray, label image. Nothing here knows of nodes,
topics or threads.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
from rosbags.image import ImageError, image_to_cvimage

from sam2s_ros.errors import FrameError, PromptError
from sam2s_ros.tracking.types import ClassSource, FrameResult, InstrumentResult, PromptInput, PromptMode, mask_bbox

PACKAGE = "sam2s_ros"
NS_PER_S = 1_000_000_000

# Full type names (``pkg/msg/Name``), as rosbag2 and the rosbags typestore spell them.
TIME_TYPE = "builtin_interfaces/msg/Time"
HEADER_TYPE = "std_msgs/msg/Header"
POINT_TYPE = "geometry_msgs/msg/Point"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
ROI_TYPE = "sensor_msgs/msg/RegionOfInterest"
PROMPT_TYPE = f"{PACKAGE}/msg/Prompt"
MASK_TYPE = f"{PACKAGE}/msg/InstrumentMask"
MASK_ARRAY_TYPE = f"{PACKAGE}/msg/InstrumentMaskArray"
CLASS_TYPE = f"{PACKAGE}/msg/InstrumentClass"
CLASS_ARRAY_TYPE = f"{PACKAGE}/msg/InstrumentClassArray"
VOCABULARY_TYPE = f"{PACKAGE}/msg/ClassVocabulary"

# Every image encoding the codec knows: encoding -> (numpy dtype, channels).
ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "rgb16": (np.uint16, 3),
    "bgr16": (np.uint16, 3),
    "rgba16": (np.uint16, 4),
    "bgra16": (np.uint16, 4),
    "bayer_rggb8": (np.uint8, 1),
    "bayer_bggr8": (np.uint8, 1),
    "bayer_gbrg8": (np.uint8, 1),
    "bayer_grbg8": (np.uint8, 1),
    "uyvy": (np.uint8, 2),
    "yuv422": (np.uint8, 2),
    "yuyv": (np.uint8, 2),
    "yuv422_yuy2": (np.uint8, 2),
    "8UC1": (np.uint8, 1),
    "16UC1": (np.uint16, 1),
}
# Input encodings converted to RGB (rosbags-image does the colour conversion); generic
# "8UC3"-style encodings are refused because their channel order is unknown.
INPUT_ENCODINGS: tuple[str, ...] = tuple(e for e in ENCODINGS if e not in ("8UC1", "16UC1"))
# Encodings read and written as plain arrays (:func:`image_msg`, :func:`image_to_array`).
ARRAY_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8", "8UC1", "mono16", "16UC1")
# Mask-prompt encodings (single channel; non-zero = instrument).
MASK_ENCODINGS: tuple[str, ...] = tuple(e for e in ARRAY_ENCODINGS if ENCODINGS[e][1] == 1)
# Label image encodings the node can publish (0 background, pixel = instrument id).
LABEL_ENCODINGS: tuple[str, ...] = ("mono8", "mono16")
# How InstrumentMask.mask is published: cropped to the instrument's box (with its offset in
# the source image) or at the full source size. See msg/InstrumentMask.msg.
MASK_FORMAT_CROPPED = "cropped"
MASK_FORMAT_FULL = "full"
MASK_FORMATS: tuple[str, ...] = (MASK_FORMAT_CROPPED, MASK_FORMAT_FULL)


class UnsupportedEncodingError(FrameError):
    """The image encoding (or compressed format) cannot be converted."""


class EmptyImageError(FrameError):
    """The image has zero width or height (or no data)."""


class ImageTooLargeError(FrameError):
    """The image is larger than the configured maximum size."""


# ---- message flavours ------------------------------------------------------------------
class MessageTypes:
    """The message classes the codec builds: rclpy's or a rosbags typestore's.

    Args:
        classes: ``{full type name: class}``.
        byte_field: turns a uint8 numpy array into the value of a ``uint8[]`` data field
            (bytes for rclpy, which copies them fast; the array itself for rosbags).
        name: "rclpy" or "rosbags" (for messages).
    """

    def __init__(self, classes: Mapping[str, Any], byte_field: Callable[[np.ndarray], Any], name: str) -> None:
        self._classes = classes
        self.byte_field = byte_field
        self.name = name

    def new(self, type_name: str, **fields: Any) -> Any:
        """A message of ``type_name`` with the given fields."""
        return self._classes[type_name](**fields)


@functools.lru_cache(maxsize=1)
def rclpy_types() -> MessageTypes:
    """The rclpy message classes (imported on first use)."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
    from std_msgs.msg import Header

    from sam2s_ros import msg

    classes = {
        TIME_TYPE: Time,
        HEADER_TYPE: Header,
        POINT_TYPE: Point,
        IMAGE_TYPE: Image,
        COMPRESSED_IMAGE_TYPE: CompressedImage,
        ROI_TYPE: RegionOfInterest,
        PROMPT_TYPE: msg.Prompt,
        MASK_TYPE: msg.InstrumentMask,
        MASK_ARRAY_TYPE: msg.InstrumentMaskArray,
        CLASS_TYPE: msg.InstrumentClass,
        CLASS_ARRAY_TYPE: msg.InstrumentClassArray,
        VOCABULARY_TYPE: msg.ClassVocabulary,
    }
    return MessageTypes(classes, lambda a: a.tobytes(), "rclpy")


def rosbags_types(store: Any) -> MessageTypes:
    """The dataclasses of a rosbags typestore (see :func:`sam2s_ros.data.bags.make_typestore`)."""
    return MessageTypes(store.types, lambda a: a, "rosbags")


def _types(types: Optional[MessageTypes]) -> MessageTypes:
    return rclpy_types() if types is None else types


# ---- stamps and headers ----------------------------------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds since the epoch of a ``builtin_interfaces/msg/Time`` (0 for a zero stamp)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int, types: Optional[MessageTypes] = None) -> Any:
    """``builtin_interfaces/msg/Time`` for a stamp in nanoseconds since the epoch (>= 0)."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return _types(types).new(TIME_TYPE, sec=sec, nanosec=nanosec)


def make_header(stamp_ns: int, frame_id: str, types: Optional[MessageTypes] = None) -> Any:
    """``std_msgs/msg/Header`` with a stamp in nanoseconds and a frame id."""
    return _types(types).new(HEADER_TYPE, stamp=ns_to_stamp(stamp_ns, types), frame_id=frame_id)


def copy_header(header: Any, types: Optional[MessageTypes] = None) -> Any:
    """A header of the given flavour with the stamp and frame id of ``header`` (either flavour)."""
    return make_header(stamp_to_ns(header.stamp), header.frame_id, types)


# ---- images ----------------------------------------------------------------------------
def image_msg(array: np.ndarray, encoding: str, header: Any, types: Optional[MessageTypes] = None) -> Any:
    """``sensor_msgs/msg/Image`` from a numpy image (little-endian, no row padding).

    Args:
        array: [H, W, 3] uint8 for ``rgb8``/``bgr8``; [H, W] uint8 for ``mono8``/``8UC1``;
            [H, W] uint16 for ``mono16``/``16UC1``.
        encoding: one of :data:`ARRAY_ENCODINGS`.
        header: ``std_msgs/msg/Header`` of the same flavour.
        types: message flavour (default rclpy).

    Raises:
        UnsupportedEncodingError: encoding not in :data:`ARRAY_ENCODINGS`.
        FrameError: the array's dtype or shape does not fit the encoding.
    """
    if encoding not in ARRAY_ENCODINGS:
        raise UnsupportedEncodingError(f"cannot write image encoding {encoding!r}")
    dtype, channels = ENCODINGS[encoding]
    expected_ndim = 3 if channels > 1 else 2
    if array.dtype != dtype or array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise FrameError(
            f"{encoding} needs a {expected_ndim}-D {np.dtype(dtype)} array with {channels} channel(s), "
            f"got {array.dtype} {array.shape}"
        )
    height, width = int(array.shape[0]), int(array.shape[1])
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).view(np.uint8).reshape(-1)
    t = _types(types)
    return t.new(
        IMAGE_TYPE,
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * np.dtype(dtype).itemsize,
        data=t.byte_field(data),
    )


def empty_image_msg(header: Any, types: Optional[MessageTypes] = None) -> Any:
    """A 0x0 mono8 ``sensor_msgs/msg/Image`` (an absent mask)."""
    return image_msg(np.zeros((0, 0), np.uint8), "mono8", header, types)


def _no_image_msg(header: Any, t: MessageTypes) -> Any:
    """An Image with every field at its default but the header (no encoding): mask not published."""
    empty = t.byte_field(np.zeros(0, np.uint8))
    return t.new(IMAGE_TYPE, header=header, height=0, width=0, encoding="", is_bigendian=0, step=0, data=empty)


def image_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/msg/Image`` of :data:`ARRAY_ENCODINGS` (either flavour).

    Row padding (``step``) and big-endian data are handled.

    Returns:
        [H, W, 3] uint8 (channel order as encoded) or [H, W] uint8/uint16; [0, 0] when
        the image is empty (width or height 0).

    Raises:
        UnsupportedEncodingError: encoding not in :data:`ARRAY_ENCODINGS`.
        FrameError: a data buffer shorter than ``step * height``.
    """
    if msg.encoding not in ARRAY_ENCODINGS:
        raise UnsupportedEncodingError(f"unsupported image encoding {msg.encoding!r}")
    dtype, channels = ENCODINGS[msg.encoding]
    if msg.width == 0 or msg.height == 0:
        return np.zeros((0, 0), dtype)
    itemsize = np.dtype(dtype).itemsize
    raw = np.frombuffer(msg.data if isinstance(msg.data, np.ndarray) else bytes(msg.data), np.uint8)
    if raw.size < msg.step * msg.height or msg.step < msg.width * channels * itemsize:
        raise FrameError(f"image data of {raw.size} bytes does not fit {msg.height} rows of step {msg.step}")
    rows = raw[: msg.step * msg.height].reshape(msg.height, msg.step)[:, : msg.width * channels * itemsize]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order)).astype(dtype)
    return arr.reshape(msg.height, msg.width, channels) if channels > 1 else arr.reshape(msg.height, msg.width)


def image_msg_to_rgb(msg: Any, max_hw: tuple[int, int]) -> np.ndarray:
    """Convert an Image or CompressedImage message (either flavour) to [H, W, 3] uint8 RGB.

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
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
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


def _raw_to_rgb(msg: Any, max_hw: tuple[int, int]) -> np.ndarray:
    enc = msg.encoding
    if enc not in INPUT_ENCODINGS:
        raise UnsupportedEncodingError(f"unsupported image encoding {enc!r} (supported: {', '.join(INPUT_ENCODINGS)})")
    _check_size(msg.height, msg.width, max_hw)
    dtype, channels = ENCODINGS[enc]
    try:
        rgb = image_to_cvimage(_packed(msg, channels * np.dtype(dtype).itemsize), "rgb8")
    except (ImageError, cv2.error) as err:
        raise UnsupportedEncodingError(f"cannot convert {enc!r} to rgb8: {err}") from None
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)  # own memory, not the message's


def _packed(msg: Any, pixel_bytes: int) -> Union[Any, SimpleNamespace]:
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


def _compressed_to_rgb(msg: Any) -> np.ndarray:
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise EmptyImageError("compressed image has no data")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # [H, W, 3] uint8 BGR, or None
    if img is None:
        raise UnsupportedEncodingError(f"cannot decode compressed image (format {msg.format!r})")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


# ---- prompts ---------------------------------------------------------------------------
def prompt_msg(prompt: PromptInput, header: Any, types: Optional[MessageTypes] = None) -> Any:
    """``sam2s_ros/msg/Prompt`` from a :class:`~sam2s_ros.tracking.types.PromptInput`.

    Args:
        prompt: the prompt; ``points`` [N, 2] float32 (x, y) source pixels, ``labels`` [N]
            (1 positive, 0 negative), optional ``box`` [4] (x0, y0, x1, y1) source pixels,
            optional ``mask`` [H, W] bool (sent as mono8, 255 = instrument).
        header: header of the image the prompt refers to (same flavour).
        types: message flavour (default rclpy).

    Raises:
        PromptError: more points than labels (or the reverse).
    """
    t = _types(types)
    points = np.asarray(prompt.points, np.float64).reshape(-1, 2)
    labels = np.asarray(prompt.labels).reshape(-1)
    if len(points) != len(labels):
        raise PromptError(f"{len(points)} points but {len(labels)} point labels")
    if prompt.mask is not None:
        mask = image_msg(np.where(np.asarray(prompt.mask, bool), 255, 0).astype(np.uint8), "mono8", header, t)
    else:
        mask = empty_image_msg(header, t)
    return t.new(
        PROMPT_TYPE,
        header=header,
        instrument_id=int(prompt.instrument_id),
        mode=int(prompt.mode),
        class_id=-1 if prompt.class_id is None else int(prompt.class_id),
        class_name=prompt.class_name,
        points=[t.new(POINT_TYPE, x=float(x), y=float(y), z=0.0) for x, y in points],
        point_labels=labels.astype(np.uint8),
        has_box=prompt.box is not None,
        box=np.asarray(prompt.box if prompt.box is not None else np.zeros(4), np.float32).reshape(4),
        mask=mask,
    )


def prompt_from_msg(msg: Any) -> PromptInput:
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


def mask_from_msg(msg: Any) -> Optional[np.ndarray]:
    """Mask prompt Image -> [H, W] bool (non-zero = instrument); None for an empty image.

    Raises:
        PromptError: unsupported encoding or data of the wrong size.
    """
    if msg.width == 0 or msg.height == 0:
        return None
    if msg.encoding not in MASK_ENCODINGS:
        raise PromptError(f"mask prompt encoding {msg.encoding!r} unsupported (use mono8)")
    try:
        pixels = image_to_cvimage(_packed(msg, np.dtype(ENCODINGS[msg.encoding][0]).itemsize))
    except FrameError as err:
        raise PromptError(f"mask prompt: {err}") from None
    return np.asarray(pixels) != 0


# ---- results ---------------------------------------------------------------------------
def roi_msg(bbox: Sequence[int], types: Optional[MessageTypes] = None) -> Any:
    """``sensor_msgs/msg/RegionOfInterest`` of a box (x0, y0, x1, y1), inclusive-exclusive pixel indices.

    Columns x0 .. x1 - 1 and rows y0 .. y1 - 1; an all-zero box (empty mask) gives an all-zero ROI.
    """
    x0, y0, x1, y1 = (int(v) for v in bbox)
    return _types(types).new(
        ROI_TYPE, x_offset=x0, y_offset=y0, width=max(0, x1 - x0), height=max(0, y1 - y0), do_rectify=False
    )


def roi_to_bbox(roi: Any) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive-exclusive pixel indices of a RegionOfInterest (either flavour)."""
    x, y = int(roi.x_offset), int(roi.y_offset)
    return x, y, x + int(roi.width), y + int(roi.height)


def _mask_image(r: InstrumentResult, header: Any, t: MessageTypes, mask_format: str) -> tuple[Any, int, int]:
    """(mono8 Image, x offset, y offset) of one instrument's mask, cropped to its box or full."""
    if mask_format == MASK_FORMAT_FULL:
        return image_msg(r.mask.astype(np.uint8) * np.uint8(255), "mono8", header, t), 0, 0
    if mask_format != MASK_FORMAT_CROPPED:
        raise ValueError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    x0, y0, x1, y1 = (int(v) for v in r.bbox)
    crop = r.mask[y0:y1, x0:x1].astype(np.uint8) * np.uint8(255)  # [0, 0] for an empty mask
    return image_msg(np.ascontiguousarray(crop), "mono8", header, t), x0, y0


def masks_msg(
    result: FrameResult,
    header: Any,
    latency: float,
    with_mask_images: bool,
    types: Optional[MessageTypes] = None,
    mask_format: str = MASK_FORMAT_CROPPED,
) -> Any:
    """FrameResult -> InstrumentMaskArray.

    Args:
        result: the tracker's output (masks at source size, boxes inclusive-exclusive).
        header: the source image's header (same flavour).
        latency: seconds from receipt to publication.
        with_mask_images: False publishes no mask images (width 0, encoding "").
        types: message flavour (default rclpy).
        mask_format: ``cropped`` (each mono8 mask covers its ROI, offsets = ROI offset)
            or ``full`` (source size, offsets 0); see msg/InstrumentMask.msg.

    Raises:
        ValueError: unknown ``mask_format``.
    """
    t = _types(types)
    instruments = []
    for r in result.instruments:
        if with_mask_images:
            mask, x_off, y_off = _mask_image(r, header, t, mask_format)
        else:
            mask, x_off, y_off = _no_image_msg(header, t), 0, 0
        instruments.append(
            t.new(
                MASK_TYPE,
                instrument_id=int(r.instrument_id),
                class_id=int(r.class_id),
                class_name=r.class_name,
                class_score=float(r.class_score),
                class_source=int(r.class_source),
                predicted_iou=float(r.predicted_iou),
                object_score=float(r.object_score),
                visible=bool(r.visible),
                roi=roi_msg(r.bbox, t),
                mask_x_offset=x_off,
                mask_y_offset=y_off,
                mask=mask,
            )
        )
    h, w = (int(v) for v in result.image_hw)
    return t.new(
        MASK_ARRAY_TYPE,
        header=header,
        image_width=w,
        image_height=h,
        instruments=instruments,
        latency=float(latency),
        frame_index=int(result.frame_index),
    )


def mask_published(instrument: Any) -> bool:
    """False when the node published no mask image for an InstrumentMask (publish_masks_images off)."""
    return bool(instrument.mask.encoding)


def instrument_mask(instrument: Any, image_hw: tuple[int, int]) -> np.ndarray:
    """An InstrumentMask's mask pasted into the full source frame (cropped or full format).

    Args:
        instrument: ``sam2s_ros/msg/InstrumentMask`` (either flavour).
        image_hw: (H, W) of the source image in pixels (InstrumentMaskArray.image_height /
            image_width).

    Returns:
        [H, W] bool, True = instrument; all False for an empty or unpublished mask.

    Raises:
        FrameError: the mask is not mono8/8UC1, or its offset + size exceed the frame.
    """
    h, w = (int(v) for v in image_hw)
    full = np.zeros((h, w), bool)
    m = instrument.mask
    if m.width == 0 or m.height == 0:
        return full
    pixels = image_to_array(m)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise FrameError(f"instrument {instrument.instrument_id}: mask is {m.encoding}, not mono8")
    x, y = int(instrument.mask_x_offset), int(instrument.mask_y_offset)
    if x + pixels.shape[1] > w or y + pixels.shape[0] > h:
        raise FrameError(
            f"instrument {instrument.instrument_id}: {pixels.shape[1]}x{pixels.shape[0]} mask at offset "
            f"({x}, {y}) does not fit the {w}x{h} source image"
        )
    full[y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels != 0
    return full


def mask_array_msg(
    header: Any,
    masks: Mapping[int, np.ndarray],
    latency_s: float = 0.0,
    frame_index: int = 0,
    types: Optional[MessageTypes] = None,
    mask_format: str = MASK_FORMAT_CROPPED,
) -> Any:
    """``sam2s_ros/msg/InstrumentMaskArray`` with binary masks only (no classes, no scores).

    Meant for tools and tests that write tracking output without the node (the node fills
    scores and classes itself). Every instrument is marked visible when its mask is
    non-empty; ``predicted_iou`` is 1 and ``object_score`` +/-1 accordingly.

    Args:
        header: header of the source image.
        masks: ``{instrument_id: [H, W] bool mask}`` at source resolution.
        latency_s: processing latency in seconds.
        frame_index: processed-frame counter.
        types: message flavour (default rclpy).
        mask_format: ``cropped`` or ``full`` (see :func:`masks_msg`).
    """
    results = []
    hw = (0, 0)
    for inst_id, mask in sorted(masks.items()):
        mask = np.asarray(mask, bool)
        hw = mask.shape
        visible = bool(mask.any())
        results.append(InstrumentResult(int(inst_id), mask, None, 1.0, 1.0 if visible else -1.0, mask_bbox(mask)))
    return masks_msg(FrameResult(int(frame_index), hw, results), header, latency_s, True, types, mask_format)


def result_from_masks_msg(msg: Any, hw: Optional[tuple[int, int]] = None) -> FrameResult:
    """InstrumentMaskArray (either flavour) -> FrameResult with full-frame masks (e.g. for overlays).

    Args:
        msg: the message.
        hw: (H, W) of the source image; default the message's image_height / image_width.

    Raises:
        FrameError: a mask that does not fit the frame (see :func:`instrument_mask`).
    """
    hw = (int(msg.image_height), int(msg.image_width)) if hw is None else hw
    out = []
    for im in msg.instruments:
        out.append(
            InstrumentResult(
                im.instrument_id,
                instrument_mask(im, hw),
                None,
                im.predicted_iou,
                im.object_score,
                roi_to_bbox(im.roi),
                im.class_id,
                im.class_name,
                im.class_score,
                ClassSource(im.class_source),
            )
        )
    return FrameResult(int(msg.frame_index), hw, out)


def classes_msg(result: FrameResult, header: Any, types: Optional[MessageTypes] = None) -> Any:
    """FrameResult -> InstrumentClassArray."""
    t = _types(types)
    instruments = [
        t.new(
            CLASS_TYPE,
            instrument_id=int(r.instrument_id),
            class_id=int(r.class_id),
            class_name=r.class_name,
            class_score=float(r.class_score),
            class_source=int(r.class_source),
            visible=bool(r.visible),
        )
        for r in result.instruments
    ]
    return t.new(CLASS_ARRAY_TYPE, header=header, instruments=instruments)


def label_image_msg(result: FrameResult, header: Any, encoding: str, types: Optional[MessageTypes] = None) -> Any:
    """FrameResult -> label Image (mono8/mono16; 0 background, pixel = instrument id).

    Raises:
        ValueError: an instrument id above 255 with mono8.
    """
    dtype = np.uint8 if encoding == "mono8" else np.uint16
    return image_msg(result.label_image(dtype), encoding, header, types)


def vocabulary_msg(
    vocabulary: Sequence[tuple[int, str]],
    semantic_head_trained: bool,
    header: Any,
    types: Optional[MessageTypes] = None,
) -> Any:
    """(class_id, name) pairs -> ClassVocabulary."""
    return _types(types).new(
        VOCABULARY_TYPE,
        header=header,
        class_ids=np.array([int(i) for i, _ in vocabulary], np.int32),
        class_names=[str(n) for _, n in vocabulary],
        semantic_head_trained=bool(semantic_head_trained),
    )

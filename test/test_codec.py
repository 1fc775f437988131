"""sam2s_ros.codec: message <-> numpy conversions, rclpy and rosbags flavours (no node, no DDS)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import Point
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sam2s_ros import codec
from sam2s_ros.codec import (
    EmptyImageError,
    ImageTooLargeError,
    UnsupportedEncodingError,
    classes_msg,
    image_msg,
    image_msg_to_rgb,
    label_image_msg,
    mask_from_msg,
    masks_msg,
    prompt_from_msg,
    stamp_to_ns,
    vocabulary_msg,
)
from sam2s_ros.data import bags
from sam2s_ros.errors import FrameError, PromptError
from sam2s_ros.msg import InstrumentMask, Prompt
from sam2s_ros.tracking.types import ClassSource, FrameResult, InstrumentResult, PromptInput, PromptMode

MAX_HW = (4096, 4096)


def _header(sec: int = 12, nsec: int = 345, frame_id: str = "cam") -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nsec
    return h


def _raw(array: np.ndarray, encoding: str, step: int | None = None, bigendian: bool = False) -> Image:
    """Image message from an array, optionally with padded rows."""
    h, w = array.shape[:2]
    row = (
        array.reshape(h, -1).view(np.uint8)
        if not bigendian
        else array.astype(array.dtype.newbyteorder(">")).reshape(h, -1).view(np.uint8)
    )
    row_bytes = row.shape[1]
    step = step or row_bytes
    data = np.zeros((h, step), np.uint8)
    data[:, :row_bytes] = row
    return Image(
        header=_header(),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=data.tobytes(),
    )


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_stamp_to_ns():
    assert stamp_to_ns(_header(2, 5).stamp) == 2_000_000_005
    assert stamp_to_ns(Header().stamp) == 0


@pytest.mark.parametrize(
    "encoding,convert",
    [
        ("rgb8", lambda a: a),
        ("bgr8", lambda a: a[..., ::-1]),
        ("rgba8", lambda a: np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda a: np.dstack([a[..., ::-1], np.full(a.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_images_to_rgb(rgb, encoding, convert):
    out = image_msg_to_rgb(_raw(np.ascontiguousarray(convert(rgb)), encoding), MAX_HW)
    assert out.dtype == np.uint8
    assert out.shape == rgb.shape
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_padded_rows_are_unpacked(rgb):
    out = image_msg_to_rgb(_raw(rgb, "rgb8", step=53 * 3 + 13), MAX_HW)
    np.testing.assert_array_equal(out, rgb)


def test_output_does_not_alias_message_buffer(rgb):
    msg = _raw(rgb, "rgb8")
    out = image_msg_to_rgb(msg, MAX_HW)
    out[:] = 0
    assert np.frombuffer(msg.data, np.uint8).any()


def test_mono8_and_mono16(rgb):
    gray = rgb[..., 0].copy()
    out = image_msg_to_rgb(_raw(gray, "mono8"), MAX_HW)
    np.testing.assert_array_equal(out, np.dstack([gray] * 3))
    g16 = gray.astype(np.uint16) * 257  # full 16-bit range maps back to 8 bit exactly
    for big in (False, True):
        out = image_msg_to_rgb(_raw(g16, "mono16", bigendian=big), MAX_HW)
        np.testing.assert_array_equal(out[..., 1], gray)


def test_compressed_png_and_jpeg(rgb):
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    out = image_msg_to_rgb(CompressedImage(header=_header(), format="png", data=png.tobytes()), MAX_HW)
    np.testing.assert_array_equal(out, rgb)
    ok, jpg = cv2.imencode(".jpg", rgb[..., ::-1])
    out = image_msg_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes()), MAX_HW)
    assert out.shape == rgb.shape


def _png(rgb) -> bytes:
    return cv2.imencode(".png", rgb)[1].tobytes()


def _short_data(rgb) -> Image:
    msg = _raw(rgb, "rgb8")
    msg.data = msg.data[:-1]
    return msg


def _bad_step(rgb) -> Image:
    msg = _raw(rgb, "rgb8")
    msg.step = 10
    return msg


# (case, message builder from the rgb fixture, max_hw, error, match)
IMAGE_REFUSALS = [
    (
        "depth_encoding",
        lambda rgb: Image(height=2, width=2, encoding="32FC1", step=8, data=bytes(16)),
        MAX_HW,
        UnsupportedEncodingError,
        "32FC1",
    ),
    (
        "empty_encoding",
        lambda rgb: Image(height=2, width=2, encoding="", step=6, data=bytes(12)),
        MAX_HW,
        UnsupportedEncodingError,
        "unsupported image encoding",
    ),
    (
        "undecodable_jpeg",
        lambda rgb: CompressedImage(format="jpeg", data=b"not a jpeg"),
        MAX_HW,
        UnsupportedEncodingError,
        "cannot decode",
    ),
    ("zero_height", lambda rgb: Image(height=0, width=640, encoding="rgb8"), MAX_HW, EmptyImageError, "zero size"),
    ("no_compressed_data", lambda rgb: CompressedImage(format="png"), MAX_HW, EmptyImageError, None),
    ("raw_too_large", lambda rgb: _raw(rgb, "rgb8"), (36, 100), ImageTooLargeError, "above max"),
    (
        "compressed_too_large",
        lambda rgb: CompressedImage(format="png", data=_png(rgb)),
        (100, 52),
        ImageTooLargeError,
        None,
    ),
    ("short_data", _short_data, MAX_HW, FrameError, "bytes"),
    ("bad_step", _bad_step, MAX_HW, FrameError, "step"),
]


@pytest.mark.parametrize("make,max_hw,error,match", [c[1:] for c in IMAGE_REFUSALS], ids=[c[0] for c in IMAGE_REFUSALS])
def test_bad_images_are_refused(rgb, make, max_hw, error, match):
    with pytest.raises(error, match=match):
        image_msg_to_rgb(make(rgb), max_hw)


def test_image_errors_are_frame_errors():
    assert issubclass(ImageTooLargeError, FrameError)


@pytest.mark.parametrize(
    "encoding,dtype,shape", [("mono8", np.uint8, (5, 7)), ("mono16", np.uint16, (5, 7)), ("rgb8", np.uint8, (5, 7, 3))]
)
def test_array_to_image_round_trip(encoding, dtype, shape):
    rng = np.random.default_rng(1)
    array = rng.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    msg = image_msg(array, encoding, _header())
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * (3 if encoding == "rgb8" else 1) * np.dtype(dtype).itemsize
    assert msg.is_bigendian == 0  # the codec always writes little-endian data
    back = np.frombuffer(msg.data, np.dtype(dtype).newbyteorder("<")).reshape(shape)
    np.testing.assert_array_equal(back, array)
    assert msg.header.frame_id == "cam"


@pytest.mark.parametrize(
    "array,encoding",
    [
        (np.zeros((2, 2), np.uint16), "mono8"),
        (np.zeros((2, 2, 3), np.uint8), "mono8"),
        (np.zeros((2, 2), np.uint8), "32FC1"),
    ],
    ids=["dtype", "channels", "encoding"],
)
def test_image_msg_refuses_mismatch(array, encoding):
    with pytest.raises(ValueError):
        image_msg(array, encoding, Header())


def _prompt(**kw) -> Prompt:
    msg = Prompt(header=_header(), instrument_id=3)
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


def test_prompt_points_labels_class():
    msg = _prompt(
        points=[Point(x=10.5, y=20.25, z=99.0), Point(x=1.0, y=2.0)],
        point_labels=[1, 0],
        class_id=2,
        class_name="prograsp_forceps",
    )
    p = prompt_from_msg(msg)
    assert p.instrument_id == 3
    assert p.mode == PromptMode.NEW
    np.testing.assert_array_equal(p.points, np.array([[10.5, 20.25], [1.0, 2.0]], np.float32))
    assert p.points.dtype == np.float32
    assert p.labels.dtype == np.int32
    np.testing.assert_array_equal(p.labels, [1, 0])
    assert p.box is None
    assert p.mask is None
    assert p.class_id == 2
    assert p.class_name == "prograsp_forceps"


def test_prompt_defaults_and_box():
    p = prompt_from_msg(_prompt(mode=Prompt.MODE_REFINE))
    assert p.points.shape == (0, 2)
    assert p.labels.shape == (0,)
    assert p.class_id is None
    assert p.mode == PromptMode.REFINE
    p = prompt_from_msg(_prompt(has_box=True, box=[1.0, 2.0, 30.0, 40.0]))
    np.testing.assert_array_equal(p.box, [1, 2, 30, 40])
    # box values are carried through unchanged (NaN is the tracker's check_prompt to refuse)
    p = prompt_from_msg(_prompt(points=[Point(x=math.nan, y=1.0)], point_labels=[1]))
    assert np.isnan(p.points[0, 0])


def test_prompt_mask():
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 255
    p = prompt_from_msg(_prompt(mask=image_msg(mask, "mono8", Header())))
    assert p.mask.dtype == bool
    assert p.mask.shape == (4, 6)
    np.testing.assert_array_equal(p.mask, mask > 0)
    assert mask_from_msg(Image()) is None


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"points": [Point()], "point_labels": []}, "points but"),
        ({"mode": 7}, "mode"),
        ({"points": [Point()], "point_labels": [2]}, "point_labels"),
        ({"mask": "rgb8"}, "encoding"),
    ],
    ids=["labels_missing", "unknown_mode", "label_not_0_1", "colour_mask"],
)
def test_bad_prompts_are_refused(fields, match):
    if fields.get("mask") == "rgb8":
        fields = {"mask": image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8", Header())}
    with pytest.raises(PromptError, match=match):
        prompt_from_msg(_prompt(**fields))


def _result() -> FrameResult:
    h, w = 6, 8
    m1 = np.zeros((h, w), bool)
    m1[1:4, 1:3] = True
    m2 = np.zeros((h, w), bool)
    m2[2:6, 2:8] = True
    return FrameResult(
        frame_index=4,
        image_hw=(h, w),
        instruments=[
            InstrumentResult(1, m1, None, 0.9, 2.0, (1, 1, 3, 4), 2, "prograsp_forceps", 1.0, ClassSource.PROMPT, True),
            InstrumentResult(7, m2, None, 0.5, -1.0, (2, 2, 8, 6)),
        ],
    )


def test_masks_msg_cropped_by_default():
    header = _header()
    msg = masks_msg(_result(), header, 0.25, with_mask_images=True)
    assert msg.header.stamp.sec == 12
    assert msg.header.frame_id == "cam"
    assert (msg.image_width, msg.image_height) == (8, 6)
    assert msg.frame_index == 4
    assert msg.latency == pytest.approx(0.25)
    a, b = msg.instruments
    assert (a.instrument_id, a.class_id, a.class_name, a.class_source) == (
        1,
        2,
        "prograsp_forceps",
        InstrumentMask.CLASS_SOURCE_PROMPT,
    )
    assert a.visible
    assert not b.visible
    # sensor_msgs/RegionOfInterest: columns 2..7, rows 2..5
    assert (b.roi.x_offset, b.roi.y_offset, b.roi.width, b.roi.height, b.roi.do_rectify) == (2, 2, 6, 4, False)
    assert (b.class_id, b.class_source) == (-1, InstrumentMask.CLASS_SOURCE_NONE)
    # instrument 1 covers rows 1..3, columns 1..2: a 2x3 mask at offset (1, 1)
    assert (a.mask_x_offset, a.mask_y_offset, a.mask.width, a.mask.height) == (1, 1, 2, 3)
    assert (a.roi.x_offset, a.roi.y_offset, a.roi.width, a.roi.height) == (1, 1, 2, 3)
    crop = np.frombuffer(a.mask.data, np.uint8).reshape(3, 2)
    np.testing.assert_array_equal(crop, np.full((3, 2), 255, np.uint8))
    assert a.mask.encoding == "mono8"
    assert a.mask.header.frame_id == "cam"
    for inst, result in zip(msg.instruments, _result().instruments):
        np.testing.assert_array_equal(codec.instrument_mask(inst, (6, 8)), result.mask)
    without = masks_msg(_result(), header, 0.0, with_mask_images=False)
    assert without.instruments[0].mask.width == 0
    assert not codec.mask_published(without.instruments[0])
    assert codec.mask_published(msg.instruments[0])


def test_masks_msg_full_format():
    msg = masks_msg(_result(), _header(), 0.0, True, mask_format="full")
    a = msg.instruments[0]
    assert (a.mask_x_offset, a.mask_y_offset, a.mask.width, a.mask.height) == (0, 0, 8, 6)
    mask = np.frombuffer(a.mask.data, np.uint8).reshape(6, 8)
    np.testing.assert_array_equal(mask, _result().instruments[0].mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(codec.instrument_mask(a, (6, 8)), _result().instruments[0].mask)
    with pytest.raises(ValueError, match="mask_format"):
        masks_msg(_result(), _header(), 0.0, True, mask_format="tiles")


def test_empty_mask_is_an_empty_crop_and_pastes_to_nothing():
    empty = InstrumentResult(3, np.zeros((6, 8), bool), None, 0.1, -5.0, (0, 0, 0, 0))
    (inst,) = masks_msg(FrameResult(0, (6, 8), [empty]), _header(), 0.0, True).instruments
    assert (inst.roi.width, inst.roi.height, inst.mask.width, inst.mask.height) == (0, 0, 0, 0)
    assert inst.mask.encoding == "mono8"  # published, just empty
    assert codec.mask_published(inst)
    assert not codec.instrument_mask(inst, (6, 8)).any()


def test_instrument_mask_refuses_a_crop_outside_the_frame():
    msg = masks_msg(_result(), _header(), 0.0, True)
    inst = msg.instruments[1]
    inst.mask_x_offset = 5  # 6 columns from column 5 do not fit 8
    with pytest.raises(FrameError, match="does not fit the 8x6 source image"):
        codec.instrument_mask(inst, (6, 8))


def test_classes_and_label_and_vocabulary():
    result = _result()
    cls = classes_msg(result, _header())
    assert [c.instrument_id for c in cls.instruments] == [1, 7]
    assert cls.instruments[0].class_name == "prograsp_forceps"
    assert cls.instruments[0].visible
    for encoding, dtype in (("mono8", np.uint8), ("mono16", np.uint16)):
        label = label_image_msg(result, _header(), encoding)
        pixels = np.frombuffer(label.data, dtype).reshape(6, 8)
        np.testing.assert_array_equal(pixels, result.label_image(dtype))
        assert set(np.unique(pixels)) == {0, 1, 7}
    voc = vocabulary_msg([(1, "a"), (2, "b")], False, _header())
    assert list(voc.class_ids) == [1, 2]
    assert list(voc.class_names) == ["a", "b"]
    assert not voc.semantic_head_trained


def test_overlay_colours_masks_only():
    from sam2s_ros.tracking.overlay import instrument_colour, render_overlay

    image = np.full((60, 80, 3), 100, np.uint8)
    result = _result()
    result.image_hw = (60, 80)
    for r in result.instruments:
        r.mask = np.pad(r.mask, ((0, 54), (0, 72)))
    out = render_overlay(image, result)
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert np.array_equal(image, np.full((60, 80, 3), 100, np.uint8))  # source untouched
    assert np.array_equal(out[40:, 40:], image[40:, 40:])  # far from masks and labels
    assert instrument_colour(1) != instrument_colour(2)
    assert instrument_colour(1) == instrument_colour(21)
    assert not np.array_equal(out[:6, :8], image[:6, :8])


T0 = 1_700_000_000 * 10**9


def test_image_to_array_handles_row_padding_and_big_endian():
    store = bags.make_typestore()
    header = codec.make_header(T0, "f", codec.rosbags_types(store))
    img_cls = store.types[codec.IMAGE_TYPE]
    values = np.arange(6, dtype=np.uint16).reshape(2, 3) * 300
    padded = np.zeros((2, 8), np.uint8)  # step 8 bytes for 3 big-endian uint16 per row
    padded[:, :6] = values.astype(">u2").view(np.uint8).reshape(2, 6)
    msg = img_cls(header=header, height=2, width=3, encoding="16UC1", is_bigendian=1, step=8, data=padded.reshape(-1))
    np.testing.assert_array_equal(codec.image_to_array(msg), values)
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(
        codec.image_to_array(codec.image_msg(rgb, "rgb8", header, codec.rosbags_types(store))), rgb
    )


def test_rosbags_and_rclpy_flavours_build_the_same_message():
    """A prompt built as a rosbags dataclass reads back in rclpy as the rclpy-built one."""
    from rclpy.serialization import deserialize_message

    store = bags.make_typestore()
    types = codec.rosbags_types(store)
    prompt = PromptInput(4, PromptMode.NEW, box=np.array([1, 2, 30, 40], np.float32), class_id=2, class_name="x")
    ours = codec.prompt_msg(prompt, codec.make_header(T0, "f", types), types)
    theirs = codec.prompt_msg(prompt, codec.make_header(T0, "f"))
    assert deserialize_message(bytes(store.serialize_cdr(ours, codec.PROMPT_TYPE)), Prompt) == theirs


def test_mask_array_round_trips_through_the_reader():
    store = bags.make_typestore()
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    msg = codec.mask_array_msg(
        codec.make_header(T0, "f", codec.rosbags_types(store)), {3: mask}, 0.5, 7, codec.rosbags_types(store)
    )
    assert (msg.image_width, msg.image_height) == (5, 4)
    result = codec.result_from_masks_msg(msg)  # frame size from the message
    assert result.image_hw == (4, 5)
    (inst,) = result.instruments
    assert inst.instrument_id == 3
    assert inst.bbox == (2, 1, 4, 3)
    assert inst.visible
    np.testing.assert_array_equal(inst.mask, mask)
    assert result.frame_index == 7

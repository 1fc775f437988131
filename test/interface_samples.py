"""Sample values for every sam2s_ros message and service, and helpers to compare them.

Shared by test_interfaces.py and its cross-process peer interface_echo.py. Every field of
every sample differs from its default, arrays are non-empty, floats are exactly
representable in float32 (so equality is exact after any (de)serialisation).
"""

from __future__ import annotations

import array
import dataclasses
import importlib
import time
from typing import Any, Callable

import numpy as np

PACKAGE = "sam2s_ros"
MSG_TYPES = (
    "Prompt",
    "InstrumentMask",
    "InstrumentMaskArray",
    "InstrumentClass",
    "InstrumentClassArray",
    "ClassVocabulary",
)
SRV_TYPES = ("AddPrompt", "RemoveInstrument", "SaveState", "LoadState")
TOPIC_PREFIX = "/sam2s_test"
RECEIVE_TIMEOUT_S = 20.0


def msg_class(name: str):
    return getattr(importlib.import_module(f"{PACKAGE}.msg"), name)


def srv_class(name: str):
    return getattr(importlib.import_module(f"{PACKAGE}.srv"), name)


def ros_type_name(cls) -> str:
    """``sam2s_ros.msg.Prompt`` class -> ``sam2s_ros/msg/Prompt`` (rosbag2 type name)."""
    package, kind = cls.__module__.split(".")[:2]
    return f"{package}/{kind}/{cls.__name__}"


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------
def _header(sec: int = 1_700_000_123, nanosec: int = 456_789_012, frame_id: str = "endoscope_left"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _mono8(width: int, height: int, seed: int, **header_kw):
    from sensor_msgs.msg import Image

    data = [(seed + 37 * i) % 256 for i in range(width * height)]
    data[0] = 255  # at least one "instrument" pixel and one zero-free pattern
    return Image(
        header=_header(**header_kw),
        height=height,
        width=width,
        encoding="mono8",
        is_bigendian=1,
        step=width,
        data=data,
    )


def _instrument_mask(instrument_id: int, seed: int):
    from sensor_msgs.msg import RegionOfInterest

    cls = msg_class("InstrumentMask")
    return cls(
        instrument_id=instrument_id,
        class_id=2 + seed,
        class_name=f"hook-{seed}",
        class_score=0.75,
        class_source=cls.CLASS_SOURCE_MODEL,
        predicted_iou=0.875,
        object_score=-1.5 + seed,
        visible=True,
        roi=RegionOfInterest(x_offset=3, y_offset=4, width=640, height=2**32 - 1, do_rectify=True),
        mask_x_offset=3 + seed,
        mask_y_offset=2**32 - 1,
        mask=_mono8(5, 3, seed, frame_id=f"mask_{seed}"),
    )


def _instrument_class(instrument_id: int, seed: int):
    return msg_class("InstrumentClass")(
        instrument_id=instrument_id,
        class_id=4 + seed,
        class_name=f"clipper-{seed}",
        class_score=0.5,
        class_source=1,
        visible=True,
    )


def sample_message(name: str):
    """A sample of message ``name`` with every field set to a non-default value."""
    from geometry_msgs.msg import Point

    cls = msg_class(name)
    if name == "Prompt":
        return cls(
            header=_header(),
            instrument_id=7,
            mode=cls.MODE_REFINE,
            class_id=3,
            class_name="grasper",
            points=[Point(x=10.5, y=20.25, z=0.0), Point(x=300.0, y=2.75, z=-1.0)],
            point_labels=[1, 0],
            has_box=True,
            box=[1.5, 2.5, 100.25, 200.75],
            mask=_mono8(4, 3, 11),
        )
    if name == "InstrumentMask":
        return _instrument_mask(3, 0)
    if name == "InstrumentMaskArray":
        return cls(
            header=_header(frame_id="camera"),
            image_width=1920,
            image_height=2**32 - 1,
            instruments=[_instrument_mask(1, 1), _instrument_mask(65535, 2)],
            latency=0.03125,
            frame_index=2**40 + 5,
        )
    if name == "InstrumentClass":
        return _instrument_class(65535, 0)
    if name == "InstrumentClassArray":
        return cls(
            header=_header(sec=5, nanosec=6),
            instruments=[_instrument_class(1, 1), _instrument_class(2, 2)],
        )
    if name == "ClassVocabulary":
        return cls(
            header=_header(frame_id="vocabulary"),
            class_ids=[0, 1, 2, -5, 2**31 - 1],
            class_names=["background", "grasper", "hook", "pince-à-griffe", ""],
            semantic_head_trained=True,
        )
    raise KeyError(f"no sample for message {name}")


def sample_request(name: str):
    cls = srv_class(name).Request
    if name == "AddPrompt":
        return cls(prompt=sample_message("Prompt"))
    if name == "RemoveInstrument":
        return cls(instrument_id=12)
    if name == "SaveState":
        return cls(name="case_0423.pt", overwrite=True)
    if name == "LoadState":
        return cls(name="case_0423.pt")
    raise KeyError(f"no sample request for service {name}")


def sample_response(name: str):
    cls = srv_class(name).Response
    if name == "AddPrompt":
        return cls(accepted=True, reason="refined instrument 7")
    if name == "RemoveInstrument":
        return cls(success=True, reason="removed 12")
    if name == "SaveState":
        return cls(success=True, reason="saved 2 instruments", path="/root/.ros/sam2s_state/case_0423.pt")
    if name == "LoadState":
        return cls(success=True, reason="loaded", instrument_ids=[1, 2, 65535])
    raise KeyError(f"no sample response for service {name}")


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------
def to_plain(value: Any) -> Any:
    """rclpy or rosbags message -> nested dicts/lists of plain Python values."""
    if hasattr(type(value), "get_fields_and_field_types"):  # rclpy message
        return {name: to_plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # rosbags message
        # (rosbags lists constants and __msgtype__ as fields annotated "ClassVar[...]")
        return {
            f.name: to_plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not str(f.type).startswith(("ClassVar", "typing.ClassVar"))
            and not f.name.startswith("__")
            and f.name != "structure_needs_at_least_one_member"
        }
    if isinstance(value, (bytes, bytearray, memoryview)):
        return list(bytes(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, array.array):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Human-readable list of differing fields between two to_plain() values."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                out.append(f"{path}.{key}: missing")
            elif key not in expected:
                out.append(f"{path}.{key}: unexpected")
            else:
                out.extend(differences(expected[key], actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(actual)} != {len(expected)}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            out.extend(differences(e, a, f"{path}[{i}]"))
        return out
    if (
        expected != actual
        or type(expected) is not type(actual)
        and not (isinstance(expected, (int, float)) and isinstance(actual, (int, float)))
    ):
        return [f"{path or '<value>'}: {actual!r} != expected {expected!r}"]
    return []


def assert_same(expected_msg: Any, actual_msg: Any, what: str = "") -> None:
    diff = differences(to_plain(expected_msg), to_plain(actual_msg))
    assert not diff, f"{what} differs from what was sent:\n  " + "\n  ".join(diff)


# --------------------------------------------------------------------------------------
# Spinning with a deadline
# --------------------------------------------------------------------------------------
def spin_until(
    executor,
    predicate: Callable[[], bool],
    timeout_s: float,
    every: Callable[[], None] | None = None,
    every_s: float = 1.0,
) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout_s`` passed.

    ``every`` (e.g. re-publish) runs at once and then every ``every_s`` seconds.
    Returns the final value of ``predicate()``.
    """
    deadline = time.monotonic() + timeout_s
    next_every = time.monotonic()
    while not predicate():
        now = time.monotonic()
        if now >= deadline:
            return bool(predicate())
        if every is not None and now >= next_every:
            every()
            next_every = now + every_s
        executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - now)))
    return True

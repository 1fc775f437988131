"""Every ROS parameter of ``sam2s_node``: declared in one place, read and validated once.

The tracker parameters take their defaults from :class:`TrackerConfig` /
:class:`DiveMemConfig` (the only place that defines them and their SAM 2.1 values); the
node parameters are defined here. ``config/sam2s.yaml`` lists every parameter with the same
defaults (a test checks this).

Each parameter is either **dynamic** (``ParamSpec.dynamic``: may be set while the node
runs; :func:`change_refusal` says why a value is refused, the node applies accepted ones
between frames) or **read-only** (declared with ``read_only`` in its descriptor; a change
is refused with :data:`READ_ONLY_REASON`). That flag in the tables below is the only place
that decides it.

Usage::

    declare_parameters(node)
    tracker_cfg, settings = read_parameters(node)   # raises ConfigError
    reason = change_refusal("mask_threshold", 0.5)  # None = may be set now
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from sam2s_ros.codec import LABEL_ENCODINGS, MASK_FORMAT_CROPPED, MASK_FORMATS
from sam2s_ros.errors import ConfigError
from sam2s_ros.tracking.config import (
    AUTOCAST_DTYPES,
    BACKENDS,
    IMAGE_SIZE_MIN,
    IMAGE_SIZE_STEP,
    MEMORY_ATTENTION_BATCHING,
    MODEL_SIZES,
    ORT_ARENA_EXTEND_STRATEGIES,
    ORT_CUDNN_CONV_ALGO_SEARCH,
    DiveMemConfig,
    TrackerConfig,
)

IMAGE_TRANSPORTS = ("raw", "compressed")
IMAGE_QOS_CHOICES = ("sensor_data", "reliable")
MODELS_README = "models/README.md"
READ_ONLY_REASON = "read-only: restart the node to change it"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default, description and optional range / choices.

    Attributes:
        name: parameter name (DiveMem ones as ``divemem.<field>``).
        default: default value; its Python type fixes the ROS parameter type.
        description: one line for ``ros2 param describe`` and the docs.
        value_range: (min, max, step) for numbers; step 0 = any value in the range.
        choices: allowed values of a string parameter.
        dynamic: True = may be changed while the node runs (safe between two frames);
            False = read-only (read once at start-up).
    """

    name: str
    default: Any
    description: str
    value_range: Optional[tuple] = None
    choices: Optional[tuple[str, ...]] = None
    dynamic: bool = False

    def descriptor(self) -> ParameterDescriptor:
        """ParameterDescriptor with description, range, choices and read_only (= not dynamic)."""
        desc = ParameterDescriptor(name=self.name, description=self.description, read_only=not self.dynamic)
        if self.choices:
            desc.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.value_range is not None:
            low, high, step = self.value_range
            if isinstance(self.default, float):
                desc.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=float(step))
                ]
            else:
                desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=int(step))]
        return desc


@dataclass(frozen=True)
class NodeSettings:
    """Node (ROS I/O) settings read from the parameters; see NODE_PARAMS for meanings."""

    image_topic: str
    image_transport: str
    image_qos: str
    prompt_topic: str
    masks_topic: str
    classes_topic: str
    label_image_topic: str
    overlay_topic: str
    class_vocabulary_topic: str
    output_qos_depth: int
    publish_masks_images: bool
    mask_format: str
    publish_label_image: bool
    publish_overlay: bool
    publish_classes: bool
    label_image_encoding: str
    max_image_width: int
    max_image_height: int
    prompt_frame_buffer_size: int
    prompt_queue_size: int
    diagnostics_period: float
    num_threads: int
    state_dir: str
    autostart: bool

    @property
    def subscribed_image_topic(self) -> str:
        """Topic actually subscribed: ``<image_topic>/compressed`` for compressed transport."""
        if self.image_transport == "compressed":
            return self.image_topic.rstrip("/") + "/compressed"
        return self.image_topic


_T = TrackerConfig()
_M = DiveMemConfig()

TRACKER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model_size", _T.model_size, "model of the checkpoint: SAM 2.1 Hiera size or sam2s_mobile", choices=MODEL_SIZES
    ),
    ParamSpec("checkpoint", "", f"SAM 2.1 / SAM2S checkpoint (.pt/.pth/.safetensors); '' = none (see {MODELS_README})"),
    ParamSpec(
        "allow_random_weights",
        _T.allow_random_weights,
        "run with random weights when no checkpoint is given (tests/demos only: outputs are meaningless)",
    ),
    ParamSpec("seed", _T.seed, "torch seed for random weights", (0, 2**31 - 1, 0)),
    ParamSpec("backend", _T.backend, "inference runtime", choices=BACKENDS),
    ParamSpec("device", _T.device, "'cpu' or 'cuda[:N]'"),
    ParamSpec(
        "image_size",
        _T.image_size,
        "model input side in pixels, multiple of 32 [SAM 2.1: 1024]",
        (IMAGE_SIZE_MIN, 4096, IMAGE_SIZE_STEP),
    ),
    ParamSpec(
        "autocast_dtype",
        _T.autocast_dtype,
        "reduced precision: bfloat16 (torch, CPU/CUDA), float16 (CUDA), int8 (onnxruntime CPU, sam2s export --int8)",
        choices=AUTOCAST_DTYPES,
    ),
    ParamSpec("onnx_dir", "", "folder of exported ONNX graphs / engines for non-torch backends; '' = none"),
    ParamSpec("max_instruments", _T.max_instruments, "most instruments tracked at once", (1, 64, 1)),
    ParamSpec(
        "mask_threshold",
        _T.mask_threshold,
        "mask logit threshold for binary masks [SAM 2.1: 0.0]",
        (-32.0, 32.0, 0.0),
        dynamic=True,
    ),
    ParamSpec(
        "fill_hole_area",
        _T.fill_hole_area,
        "fill mask holes up to this many low-res pixels [SAM 2.1 video predictor: 8]",
        (0, 100000, 1),
        dynamic=True,
    ),
    ParamSpec(
        "class_vocabulary",
        list(_T.class_vocabulary),
        "instrument class names; class id = index + 1 [EndoVis 2017 types]",
    ),
    ParamSpec(
        "class_smoothing_frames", _T.class_smoothing_frames, "frames averaged for model class scores", (1, 1000, 1)
    ),
    ParamSpec(
        "memory_attention_batching",
        _T.memory_attention_batching,
        "instruments in one memory-attention call (batched) or one call each (per_instrument); auto = "
        "batched on CUDA, per instrument on CPU",
        choices=MEMORY_ATTENTION_BATCHING,
    ),
    ParamSpec(
        "ort_arena_extend_strategy",
        _T.ort_arena_extend_strategy,
        "onnxruntime CUDA EP arena growth [onnxruntime: kNextPowerOfTwo]",
        choices=ORT_ARENA_EXTEND_STRATEGIES,
    ),
    ParamSpec(
        "ort_gpu_mem_limit_mb",
        _T.ort_gpu_mem_limit_mb,
        "onnxruntime CUDA EP arena limit in MiB, 0 = none",
        (0, 1 << 20, 1),
    ),
    ParamSpec(
        "ort_cudnn_conv_algo_search",
        _T.ort_cudnn_conv_algo_search,
        "onnxruntime CUDA EP cuDNN algorithm search [onnxruntime: EXHAUSTIVE, re-run per input shape]",
        choices=ORT_CUDNN_CONV_ALGO_SEARCH,
    ),
    ParamSpec("divemem.num_maskmem", _M.num_maskmem, "memory frames incl. the current one [SAM 2.1: 7]", (2, 7, 1)),
    ParamSpec(
        "divemem.max_cond_frames",
        _M.max_cond_frames,
        "prompted frames kept per instrument [SAM 2.1: unlimited]",
        (1, 1000, 1),
    ),
    ParamSpec("divemem.max_obj_ptrs", _M.max_obj_ptrs, "object pointers attended to [SAM 2.1: 16]", (1, 64, 1)),
    ParamSpec(
        "divemem.long_term_enabled",
        _M.long_term_enabled,
        "DiveMem diverse long-term memory [SAM 2.1: off]",
        dynamic=True,
    ),
    ParamSpec(
        "divemem.long_term_frames", _M.long_term_frames, "diverse long-term frames K [SAM2S/ReSurgSAM2: 3]", (0, 16, 1)
    ),
    ParamSpec(
        "divemem.candidate_pool_size",
        _M.candidate_pool_size,
        "high-confidence candidates considered [ReSurgSAM2: 5]",
        (1, 64, 1),
    ),
    ParamSpec(
        "divemem.iou_threshold",
        _M.iou_threshold,
        "min predicted IoU of a long-term candidate [ReSurgSAM2: 0.95]",
        (0.0, 1.0, 0.0),
        dynamic=True,
    ),
    ParamSpec(
        "divemem.object_score_threshold",
        _M.object_score_threshold,
        "min object-score logit of a candidate [0.0 = visible]",
        (-32.0, 32.0, 0.0),
        dynamic=True,
    ),
    ParamSpec(
        "divemem.memory_dtype",
        _M.memory_dtype,
        "storage dtype of spatial memories [SAM 2.1 video predictor: bfloat16]",
        choices=("bfloat16", "float16", "float32"),
    ),
)

NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("image_topic", "image_raw", "input image topic (sensor_msgs/Image)"),
    ParamSpec(
        "image_transport",
        "raw",
        "'compressed' subscribes sensor_msgs/CompressedImage on <image_topic>/compressed",
        choices=IMAGE_TRANSPORTS,
    ),
    ParamSpec(
        "image_qos",
        "sensor_data",
        "image subscription QoS: best-effort sensor data, or reliable",
        choices=IMAGE_QOS_CHOICES,
    ),
    ParamSpec("prompt_topic", "prompts", "prompt topic (sam2s_ros/Prompt, reliable)"),
    ParamSpec("masks_topic", "masks", "output sam2s_ros/InstrumentMaskArray topic"),
    ParamSpec("classes_topic", "instrument_classes", "output sam2s_ros/InstrumentClassArray topic"),
    ParamSpec("label_image_topic", "label_image", "output label image topic (0 background, pixel = instrument id)"),
    ParamSpec("overlay_topic", "overlay", "output rgb8 overlay topic"),
    ParamSpec("class_vocabulary_topic", "class_vocabulary", "latched sam2s_ros/ClassVocabulary topic"),
    ParamSpec("output_qos_depth", 5, "history depth of the (reliable) output publishers", (1, 1000, 1)),
    ParamSpec(
        "publish_masks_images", True, "put mono8 masks inside InstrumentMask.mask (else empty images)", dynamic=True
    ),
    ParamSpec(
        "mask_format",
        MASK_FORMAT_CROPPED,
        "InstrumentMask.mask cropped to the instrument's roi (offset in mask_x/y_offset) or at full source size",
        choices=MASK_FORMATS,
        dynamic=True,
    ),
    ParamSpec("publish_label_image", True, "publish the label image", dynamic=True),
    ParamSpec("publish_overlay", False, "publish the rgb8 overlay (source image + coloured masks)", dynamic=True),
    ParamSpec("publish_classes", True, "publish instrument classes", dynamic=True),
    ParamSpec(
        "label_image_encoding", "mono8", "label image encoding (mono8 holds ids 1..255)", choices=LABEL_ENCODINGS
    ),
    ParamSpec("max_image_width", 4096, "larger input images are rejected (pixels)", (1, 65535, 1), dynamic=True),
    ParamSpec("max_image_height", 4096, "larger input images are rejected (pixels)", (1, 65535, 1), dynamic=True),
    ParamSpec("prompt_frame_buffer_size", 30, "recent frames held to apply stamped prompts to (0 = off)", (0, 1000, 1)),
    ParamSpec("prompt_queue_size", 64, "accepted prompts waiting for a frame, at most", (1, 10000, 1)),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.1, 60.0, 0.0)),
    ParamSpec(
        "num_threads",
        0,
        "CPU threads for inference (torch / onnxruntime intra-op); 0 = usable cores - 1, one left for ROS I/O",
        (0, 1024, 1),
    ),
    ParamSpec(
        "state_dir",
        "",
        "folder of save_state / load_state files (the services take a file name inside it); "
        "'' = $ROS_HOME/sam2s_state, else ~/.ros/sam2s_state",
    ),
    ParamSpec(
        "autostart",
        True,
        "configure and activate the managed (lifecycle) node at start; false = wait in 'unconfigured' "
        "for lifecycle change_state requests",
    ),
)

ALL_PARAMS: tuple[ParamSpec, ...] = TRACKER_PARAMS + NODE_PARAMS
PARAMS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in ALL_PARAMS}
DYNAMIC_PARAMS: frozenset[str] = frozenset(spec.name for spec in ALL_PARAMS if spec.dynamic)
_TRACKER_NAMES = frozenset(spec.name for spec in TRACKER_PARAMS)


def declare_parameters(node: Node) -> None:
    """Declare every parameter on ``node`` with its descriptor.

    Raises:
        ConfigError: an override (command line / params file) has the wrong type or is out
            of range.
    """
    for spec in ALL_PARAMS:
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except ParameterException as err:
            raise ConfigError(f"parameter {spec.name!r}: {err} (expected {_expected(spec)})") from None


def read_parameters(node: Node) -> tuple[TrackerConfig, NodeSettings]:
    """Read the declared parameters into a validated TrackerConfig and NodeSettings.

    Raises:
        ConfigError: a value is invalid, or there is no checkpoint and random weights are
            not allowed.
    """
    values = {spec.name: node.get_parameter(spec.name).value for spec in ALL_PARAMS}
    for spec in ALL_PARAMS:
        if spec.choices and values[spec.name] not in spec.choices:
            raise ConfigError(
                f"parameter {spec.name!r} must be one of {', '.join(spec.choices)}; got {values[spec.name]!r}"
            )
    tracker_values = {spec.name: values[spec.name] for spec in TRACKER_PARAMS}
    tracker_values["checkpoint"] = tracker_values["checkpoint"] or None
    tracker_values["onnx_dir"] = tracker_values["onnx_dir"] or None
    try:
        cfg = TrackerConfig.from_dict(tracker_values)
    except TypeError as err:  # a value of the wrong kind reaching the dataclass
        raise ConfigError(f"invalid tracker parameter: {err}") from None
    if cfg.checkpoint is None and not cfg.allow_random_weights:
        raise ConfigError(
            "no checkpoint given: set the 'checkpoint' parameter to a SAM 2.1 / SAM2S checkpoint "
            f"(how to get one: {MODELS_README}), or set allow_random_weights:=true for a test run "
            "with meaningless outputs"
        )
    settings = NodeSettings(**{f.name: values[f.name] for f in fields(NodeSettings)})
    _validate_settings(settings)
    return cfg, settings


def change_refusal(name: str, value: Any) -> Optional[str]:
    """Why setting parameter ``name`` to ``value`` while the node runs is refused; None = allowed.

    Args:
        name: a declared parameter name (unknown names return None: rclpy refuses them
            itself as undeclared).
        value: the new value as rclpy gives it (bool, int, float, str, list, or None for a
            parameter without a value).

    Returns:
        A one-line reason naming the parameter: read-only, wrong type, not finite, out of
        range or not one of the choices; None when the value may be applied.
    """
    spec = PARAMS_BY_NAME.get(name)
    if spec is None:
        return None
    if not spec.dynamic:
        return f"parameter {name!r} is {READ_ONLY_REASON}"
    kind = type(spec.default)
    if type(value) is not kind:  # exact: a bool is no int here, an int no double (ROS typing)
        got = "no value" if value is None else f"{_type_word(value)} {value!r}"
        return f"parameter {name!r}: wrong type: expected {_expected(spec)}, got {got}"
    if kind is float and not math.isfinite(value):
        return f"parameter {name!r}: {value} is not a finite number (expected {_expected(spec)})"
    if spec.value_range is not None:
        low, high, step = spec.value_range
        if not low <= value <= high or (step and (value - low) % step):
            return f"parameter {name!r}: {value} is out of range (expected {_expected(spec)})"
    if spec.choices and value not in spec.choices:
        return f"parameter {name!r}: {value!r} is not one of {', '.join(spec.choices)}"
    return None


def split_changes(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Accepted changes -> (tracker changes for TrackerConfig.update, node settings changes)."""
    tracker = {k: v for k, v in changes.items() if k in _TRACKER_NAMES}
    return tracker, {k: v for k, v in changes.items() if k not in _TRACKER_NAMES}


def updated_settings(settings: NodeSettings, changes: dict[str, Any]) -> NodeSettings:
    """A copy of ``settings`` with node-setting ``changes`` (names as in NODE_PARAMS)."""
    return replace(settings, **changes)


def _validate_settings(settings: NodeSettings) -> None:
    """Raise ConfigError on node settings that the descriptors cannot express."""
    for name in (
        "image_topic",
        "prompt_topic",
        "masks_topic",
        "classes_topic",
        "label_image_topic",
        "overlay_topic",
        "class_vocabulary_topic",
    ):
        if not getattr(settings, name).strip():
            raise ConfigError(f"parameter {name!r} must not be empty")


def inference_threads(requested: int, usable_cores: Optional[int] = None) -> int:
    """CPU threads for inference: ``requested``, or when it is 0, the usable cores minus one (at least 1).

    One core is left to the ROS executor, which deserialises and converts every incoming
    image even when inference is busy; without it DDS drops most messages of a fast camera
    before the callback sees them (measurement: benchmarks/README.md, "Inference threads").

    Args:
        requested: the ``num_threads`` parameter (>= 0).
        usable_cores: cores this process may run on; default ``len(os.sched_getaffinity(0))``
            (respects taskset / cgroup cpusets), or ``os.cpu_count()`` where that is missing.
    """
    if requested > 0:
        return requested
    if usable_cores is None:
        usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, usable_cores - 1)


def _type_word(value: Any) -> str:
    """'a bool', 'an integer', ... for a Python value of a ROS parameter."""
    return {bool: "a bool", int: "an integer", float: "a double", str: "a string", list: "an array"}.get(
        type(value), type(value).__name__
    )


def _expected(spec: ParamSpec) -> str:
    """Human description of a parameter's type and range, for error messages."""
    kind = {bool: "a bool", int: "an integer", float: "a double", str: "a string", list: "a string array"}[
        type(spec.default)
    ]
    if spec.value_range is not None:
        low, high, step = spec.value_range
        kind += f" in [{low}, {high}]" + (f" in steps of {step}" if step else "")
    if spec.choices:
        kind += " (one of " + ", ".join(spec.choices) + ")"
    return kind

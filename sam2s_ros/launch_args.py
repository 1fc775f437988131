"""The launch arguments of ``launch/sam2s.launch.py`` as data, and what they turn into.

Plain Python (no ``launch`` / ``launch_ros`` / ``rclpy`` import), so that the table, the
node plan and the argument checks are tested where launch is not installable. The launch
file declares :data:`LAUNCH_ARGS`, then builds one ``Node`` per :class:`NodePlan` of
:func:`plan_nodes`; see docs/node_interface.md ("Launch").

Values arrive as strings (``name:=value``). An empty value of an argument that maps to a
node parameter keeps the params file's value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from sam2s_ros.errors import ConfigError

PACKAGE = "sam2s_ros"
EXECUTABLE = "sam2s_node"
LAUNCH_FILE = "sam2s.launch.py"
EYES = ("left", "right")
DEFAULT_NAMESPACE = "sam2s"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
# a `name:=value` token of `ros2 launch`
ARGUMENT_TOKEN = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*):=")


class LaunchArgumentError(ConfigError):
    """A launch argument is unknown or its value is invalid."""


@dataclass(frozen=True)
class LaunchArg:
    """One launch argument.

    Attributes:
        name: argument name (``name:=value``).
        default: default value (a string, as launch passes it).
        description: shown by ``ros2 launch sam2s_ros sam2s.launch.py --show-args``.
        parameter: the sam2s_node parameter it sets, if any.
        kind: type of that parameter (``str``, ``int`` or ``bool``); the string is converted.
        mode: "mono" / "stereo" when only that mode uses it, else "".
    """

    name: str
    default: str
    description: str
    parameter: Optional[str] = None
    kind: type = str
    mode: str = ""


LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg(
        "namespace",
        DEFAULT_NAMESPACE,
        "namespace of the node's topics and services (stereo: parent of left/ and right/); '' = root",
    ),
    LaunchArg("params_file", "", "YAML file with sam2s_node parameters; '' = the installed config/sam2s.yaml"),
    LaunchArg(
        "stereo",
        "false",
        "true: one node per eye (dVRK stereo endoscope), inputs /<rig>/<eye>/<image_name>",
        kind=bool,
    ),
    LaunchArg(
        "image_topic",
        "/image_raw",
        "mono: input sensor_msgs/Image topic (a relative name resolves inside namespace)",
        parameter="image_topic",
        mode="mono",
    ),
    LaunchArg("rig", "camera", "stereo: camera rig name, the first part of each eye's topic", mode="stereo"),
    LaunchArg(
        "image_name",
        "image_raw",
        "stereo: last part of each eye's topic /<rig>/<eye>/<image_name> (dVRK pipelines: image_rect_color)",
        mode="stereo",
    ),
    LaunchArg("left_image_topic", "", "stereo: left eye input topic; '' = /<rig>/left/<image_name>", mode="stereo"),
    LaunchArg("right_image_topic", "", "stereo: right eye input topic; '' = /<rig>/right/<image_name>", mode="stereo"),
    LaunchArg(
        "checkpoint",
        "",
        "SAM 2.1 / SAM2S checkpoint path (`sam2s download tiny` fetches one); '' = params_file value",
        parameter="checkpoint",
    ),
    LaunchArg(
        "model_size",
        "",
        "tiny | small | base_plus | large | sam2s_mobile (must match the checkpoint); '' = params_file value",
        parameter="model_size",
    ),
    LaunchArg("backend", "", "torch | onnxruntime | tensorrt; '' = params_file value", parameter="backend"),
    LaunchArg("device", "", "cpu | cuda | cuda:N; '' = params_file value", parameter="device"),
    LaunchArg(
        "image_size",
        "",
        "model input side in pixels, multiple of 32 (512 is usable on CPU); '' = params_file value",
        parameter="image_size",
        kind=int,
    ),
    LaunchArg(
        "allow_random_weights",
        "",
        "true: run without a checkpoint on random weights (outputs are meaningless); '' = params_file value",
        parameter="allow_random_weights",
        kind=bool,
    ),
    LaunchArg(
        "image_qos",
        "",
        "sensor_data (best effort) | reliable: see README 'Image QoS'; '' = params_file value (sensor_data)",
        parameter="image_qos",
    ),
    LaunchArg(
        "num_threads",
        "",
        "inference CPU threads per node (stereo: per eye); '' = params_file value, in stereo half the cores each",
        parameter="num_threads",
        kind=int,
    ),
    LaunchArg(
        "autostart",
        "",
        "true: configure + activate the managed node at start; false: wait unconfigured for a lifecycle "
        "manager (change_state); '' = params_file value (true)",
        parameter="autostart",
        kind=bool,
    ),
    LaunchArg(
        "use_sim_time", "false", "true: use /clock (bag replay with --clock)", parameter="use_sim_time", kind=bool
    ),
    LaunchArg("log_level", "info", "node log level: " + " | ".join(LOG_LEVELS)),
)

ARGS_BY_NAME: dict[str, LaunchArg] = {a.name: a for a in LAUNCH_ARGS}


@dataclass
class NodePlan:
    """What one ``launch_ros.actions.Node`` gets.

    Attributes:
        namespace: node namespace, without leading/trailing slashes ('' = root).
        parameters: parameter overrides applied after the params file.
        arguments: extra command-line arguments (``--ros-args --log-level ...``).
    """

    namespace: str
    parameters: dict = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)


def convert(arg: LaunchArg, value: str):
    """The typed value of a launch argument (``str``, ``int`` or ``bool``).

    Raises:
        LaunchArgumentError: not an integer / not a truth word.
    """
    value = value.strip()
    if arg.kind is bool:
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise LaunchArgumentError(f"launch argument {arg.name}:={value!r} is not true/false")
    if arg.kind is int:
        try:
            return int(value)
        except ValueError:
            raise LaunchArgumentError(f"launch argument {arg.name}:={value!r} is not an integer") from None
    return value


def unknown_arguments(argv: Sequence[str], launch_file: str = LAUNCH_FILE) -> list[str]:
    """Names of ``name:=value`` arguments given to this launch file that it does not declare.

    ``ros2 launch`` accepts any ``name:=value`` and ignores undeclared ones, so a typo such
    as ``use_simtime:=true`` would pass silently. Only the arguments after this launch
    file's name on the command line are checked; when the file is included from another
    launch file (its name is not on the command line) nothing is checked.

    Args:
        argv: the ``ros2 launch`` process's ``sys.argv``.
        launch_file: this launch file's name.
    """
    positions = [i for i, token in enumerate(argv) if os.path.basename(token) == launch_file]
    if not positions:
        return []
    names = [m.group(1) for token in argv[positions[0] + 1 :] if (m := ARGUMENT_TOKEN.match(token))]
    return [n for n in names if n not in ARGS_BY_NAME]


def check_arguments(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Refuse unknown arguments; warnings for arguments of the other mode.

    Args:
        argv: ``sys.argv`` of the launch process (see :func:`unknown_arguments`).
        values: every declared argument's value.

    Returns:
        Warning lines (e.g. ``image_topic`` given with ``stereo:=true``).

    Raises:
        LaunchArgumentError: an undeclared argument on the command line.
    """
    unknown = unknown_arguments(argv)
    if unknown:
        raise LaunchArgumentError(
            f"unknown launch argument(s) {', '.join(unknown)} for {LAUNCH_FILE}; declared: "
            + ", ".join(ARGS_BY_NAME)
            + " (other settings: params_file)"
        )
    stereo = convert(ARGS_BY_NAME["stereo"], values["stereo"])
    other_mode = "mono" if stereo else "stereo"
    return [
        f"{a.name}:={values[a.name]} is ignored: it is a {a.mode}-only argument and stereo is {str(stereo).lower()}"
        + (" (use left_image_topic / right_image_topic, or rig and image_name)" if a.name == "image_topic" else "")
        for a in LAUNCH_ARGS
        if a.mode == other_mode and values[a.name].strip() != a.default
    ]


def stereo_threads_per_eye(usable_cores: int) -> int:
    """Inference threads for each of two nodes on one host: half the cores, one per node left for ROS I/O."""
    return max(1, (usable_cores - 2) // 2)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def plan_nodes(values: Mapping[str, str], usable_cores: Optional[int] = None) -> list[NodePlan]:
    """The nodes to start for the given launch argument values.

    Args:
        values: every declared argument's value (strings, as launch passes them).
        usable_cores: CPU cores of the host (default: this process's affinity), for the
            stereo default of ``num_threads``.

    Returns:
        One plan (mono) or one per eye (stereo, namespaces ``<namespace>/left`` and
        ``<namespace>/right``).

    Raises:
        LaunchArgumentError: a value of the wrong type, or an unknown log level.
    """
    level = values["log_level"].strip().lower()
    if level not in LOG_LEVELS:
        raise LaunchArgumentError(f"log_level:={values['log_level']!r} must be one of {', '.join(LOG_LEVELS)}")
    overrides = {
        a.parameter: convert(a, values[a.name])
        for a in LAUNCH_ARGS
        if a.parameter and a.mode == "" and values[a.name].strip()
    }
    namespace = values["namespace"].strip().strip("/")
    arguments = ["--ros-args", "--log-level", level]
    if not convert(ARGS_BY_NAME["stereo"], values["stereo"]):
        topic = values["image_topic"].strip()
        params = dict(overrides, image_topic=topic) if topic else overrides
        return [NodePlan(namespace, params, arguments)]
    if "num_threads" not in overrides:
        overrides["num_threads"] = stereo_threads_per_eye(usable_cores or _usable_cores())
    rig, name = values["rig"].strip().strip("/"), values["image_name"].strip().strip("/")
    plans = []
    for eye in EYES:
        topic = values[f"{eye}_image_topic"].strip() or f"/{rig}/{eye}/{name}"
        plans.append(NodePlan(f"{namespace}/{eye}".strip("/"), dict(overrides, image_topic=topic), list(arguments)))
    return plans

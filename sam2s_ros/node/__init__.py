"""The ROS 2 side (rclpy): the ``sam2s_node`` node and the tools that talk to one over DDS.

``sam2s_node`` (console script), ``python -m sam2s_ros.node`` and ``ros2 run sam2s_ros
sam2s_node`` all call :func:`main`. rclpy is imported only when :func:`main` runs or a
sub-module is imported, so that importing this package stays cheap.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

EXIT_OK = 0
EXIT_MISSING_PACKAGE = 2
WORKSPACE_README = "README.md, 'Use in an apt ROS 2 workspace'"

HELP = """\
usage: sam2s_node [-h] [--ros-args -p NAME:=VALUE ... --params-file FILE ...]

Track surgical instruments in an image topic with SAM2S and publish per-instrument
masks, boxes, scores, a label image and classes (sam2s_ros/msg/InstrumentMaskArray ...).
Every setting is a ROS parameter; topics, services and parameters are documented in
docs/node_interface.md (installed: share/sam2s_ros/config/sam2s.yaml lists them all).

examples:
  sam2s_node --ros-args --params-file config/sam2s.yaml -p checkpoint:=/models/sam2.1_hiera_tiny.pt
  ros2 run sam2s_ros sam2s_node --ros-args -p image_topic:=/camera/image_raw -p checkpoint:=/m.pt
  ros2 launch sam2s_ros sam2s.launch.py checkpoint:=/m.pt image_topic:=/camera/image_raw

A managed (lifecycle) node: it configures and activates itself unless -p autostart:=false
(then it waits unconfigured for lifecycle change_state requests). Parameters marked
(dynamic) can be set while it runs; the others are read-only.

exit codes: 0 clean stop (SIGINT/SIGTERM) or --help, 2 cannot start (invalid parameter,
no checkpoint, missing Python package).
"""


def wants_help(argv: Sequence[str]) -> bool:
    """True when ``-h``/``--help`` comes before any ``--ros-args`` section of ``argv``.

    Args:
        argv: command-line arguments without the program name.
    """
    for arg in argv:
        if arg == "--ros-args":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def parameter_summary() -> str:
    """One line per node parameter (name, default, description); "" when rclpy is missing."""
    try:
        from sam2s_ros.node.parameters import ALL_PARAMS
    except ImportError:
        return ""
    lines = ["parameters (name = default: description):"]
    lines += [
        f"  {spec.name} = {spec.default!r}: {'(dynamic) ' if spec.dynamic else ''}{spec.description}"
        for spec in ALL_PARAMS
    ]
    return "\n".join(lines) + "\n"


def main(args: Optional[list[str]] = None) -> int:
    """Run ``sam2s_node`` (see :func:`sam2s_ros.node.node.main`); ``--help`` prints help only.

    glibc malloc is tuned (:func:`sam2s_ros.allocator.tune_allocator`) before the node starts.

    Returns:
        Exit code: 0 after ``--help`` or a clean stop, 2 when the node cannot start
        (including a missing Python package, with the install instructions).
    """
    argv = sys.argv[1:] if args is None else args
    if wants_help(argv):
        print(HELP + "\n" + parameter_summary(), end="")
        return EXIT_OK
    from sam2s_ros.allocator import tune_allocator

    tune_allocator()
    try:
        from sam2s_ros.node.node import main as node_main
    except ModuleNotFoundError as err:
        if (err.name or "").startswith("sam2s_ros"):
            hint = "the msg/srv interfaces are not built: `colcon build` in a workspace, else `make setup`"
            print(f"sam2s_node: cannot start: {err}; {hint}.", file=sys.stderr)
            return EXIT_MISSING_PACKAGE
        print(
            f"sam2s_node: cannot start: Python package {err.name!r} is missing ({err}). In an apt ROS 2 "
            f"workspace, activate the venv made from requirements/ros_workspace.txt first ({WORKSPACE_README}); "
            "elsewhere run `make setup`.",
            file=sys.stderr,
        )
        return EXIT_MISSING_PACKAGE
    return node_main(args)

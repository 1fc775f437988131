"""Launch sam2s_node: one node, or one node per eye of a stereo endoscope (stereo:=true).

Mono (topics and services under /sam2s):
    ros2 launch sam2s_ros sam2s.launch.py image_topic:=/camera/image_raw checkpoint:=/models/sam2.1_hiera_tiny.pt

Stereo, dVRK (inputs /<rig>/<eye>/<image_name>; outputs under /sam2s/left and /sam2s/right):
    ros2 launch sam2s_ros sam2s.launch.py stereo:=true rig:=jhu_daVinci image_name:=image_rect_color

The arguments, their defaults and what they set are the table sam2s_ros/launch_args.py
(`--show-args` lists them); everything else comes from params_file. Unknown arguments
stop the launch instead of being ignored.
"""

import os
import sys

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from sam2s_ros.launch_args import EXECUTABLE, LAUNCH_ARGS, PACKAGE, check_arguments, plan_nodes


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments of LAUNCH_ARGS; the nodes are built once their values are known."""
    arguments = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_make_nodes)])


def _make_nodes(context):
    """One Node action (mono) or two (stereo), from the argument values."""
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGS}
    for warning in check_arguments(sys.argv, values):
        get_logger("sam2s.launch").warning(warning)
    params_file = values["params_file"].strip() or os.path.join(
        get_package_share_directory(PACKAGE), "config", "sam2s.yaml"
    )
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=EXECUTABLE,
            namespace=plan.namespace,
            parameters=[params_file, plan.parameters],
            arguments=plan.arguments,
            output="screen",
            emulate_tty=True,
        )
        for plan in plan_nodes(values)
    ]

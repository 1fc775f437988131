"""Launch sam2s_node: one node, or one node per eye of a stereo endoscope (stereo:=true).

Mono:
    ros2 launch sam2s_ros sam2s.launch.py image_topic:=/camera/image_raw checkpoint:=/models/sam2s.pt

Stereo (dVRK topic convention, inputs /<rig>/left/image_raw and /<rig>/right/image_raw;
outputs under <namespace>/left and <namespace>/right):
    ros2 launch sam2s_ros sam2s.launch.py stereo:=true rig:=jhu_daVinci namespace:=sam2s

Every other parameter comes from params_file (default: the package's config/sam2s.yaml).
The launch arguments image_topic, checkpoint and backend override it only when not empty.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "sam2s_ros"
EXECUTABLE = "sam2s_node"
EYES = ("left", "right")


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments; the nodes are built once their values are known."""
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "sam2s.yaml"])
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="", description="namespace of the node (stereo: parent of left/ and right/)"
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="",
            description="input sensor_msgs/Image topic (mono only); empty keeps the params_file value (image_raw)",
        ),
        DeclareLaunchArgument(
            "params_file", default_value=default_params, description="YAML file with every sam2s_node parameter"
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="",
            description="SAM 2.1 / SAM2S checkpoint path; empty keeps the params_file value (see models/README.md)",
        ),
        DeclareLaunchArgument(
            "backend", default_value="", description="torch | onnxruntime | tensorrt; empty keeps the params_file value"
        ),
        DeclareLaunchArgument(
            "stereo",
            default_value="false",
            description="true: one node per eye on /<rig>/left/image_raw and /<rig>/right/image_raw (dVRK convention)",
        ),
        DeclareLaunchArgument(
            "rig", default_value="camera", description="stereo camera rig name: the first part of the dVRK image topics"
        ),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_make_nodes)])


def _make_nodes(context):
    """One Node action (mono) or two (stereo), with the argument overrides applied."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {name: arg(name) for name in ("checkpoint", "backend") if arg(name)}
    namespace = arg("namespace").strip("/")
    if arg("stereo").lower() in ("true", "1", "yes"):
        rig = arg("rig").strip("/")
        targets = [(f"{namespace}/{eye}".strip("/"), f"/{rig}/{eye}/image_raw") for eye in EYES]
    else:
        targets = [(namespace, arg("image_topic"))]
    nodes = []
    for node_namespace, image_topic in targets:
        params = dict(overrides, image_topic=image_topic) if image_topic else dict(overrides)
        nodes.append(
            Node(
                package=PACKAGE,
                executable=EXECUTABLE,
                name=EXECUTABLE,
                namespace=node_namespace,
                parameters=[arg("params_file"), params],
                output="screen",
                emulate_tty=True,
            )
        )
    return nodes

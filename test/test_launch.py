"""launch/sam2s.launch.py and its argument table (sam2s_ros/launch_args.py).

`launch` and `launch_ros` cannot be installed here (docs: ../shared/notes/ros2-on-pip.md),
so the launch file is loaded with small stand-ins for the few launch classes it uses; they
record what the file declares and which Node actions it returns. The argument logic
itself (sam2s_ros/launch_args.py) is plain Python and tested directly.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
import sys
import types

import ament_index_python.packages
import pytest

from sam2s_ros.launch_args import (
    ARGS_BY_NAME,
    LAUNCH_ARGS,
    LaunchArgumentError,
    check_arguments,
    plan_nodes,
    stereo_threads_per_eye,
    unknown_arguments,
)

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCH_PATH = REPO / "launch" / "sam2s.launch.py"
SHARE = "/opt/fake/share/sam2s_ros"
ARGV = ["/usr/bin/ros2", "launch", "sam2s_ros", "sam2s.launch.py"]


class _Recorder:
    """Stand-in for a launch class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


def _stand_in_modules() -> dict[str, types.ModuleType]:
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Recorder,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = _LaunchConfiguration
    launch_logging = types.ModuleType("launch.logging")
    launch_logging.get_logger = logging.getLogger
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorder,), {})
    return {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": substitutions,
        "launch.logging": launch_logging,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file's module, loaded against the stand-ins."""
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(ament_index_python.packages, "get_package_share_directory", lambda pkg: SHARE)
    spec = importlib.util.spec_from_file_location("sam2s_launch", LAUNCH_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(launch_file, monkeypatch, **given):
    """Run the launch file as `ros2 launch sam2s_ros sam2s.launch.py k:=v ...`; the Node actions."""
    monkeypatch.setattr(sys, "argv", ARGV + [f"{k}:={v}" for k, v in given.items()])
    description = launch_file.generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs["default_value"] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = types.SimpleNamespace(launch_configurations={**declared, **{k: str(v) for k, v in given.items()}})
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    return opaque.kwargs["function"](context)


def test_launch_file_declares_exactly_the_table(launch_file):
    entities = launch_file.generate_launch_description().args[0]
    declared = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    assert [e.args[0] for e in declared] == [a.name for a in LAUNCH_ARGS]
    for entity, arg in zip(declared, LAUNCH_ARGS):
        assert entity.kwargs["default_value"] == arg.default
        assert entity.kwargs["description"] == arg.description
        assert arg.description.strip()


def test_issue_arguments_are_declared():
    for name in (
        "use_sim_time",
        "device",
        "backend",
        "image_size",
        "allow_random_weights",
        "log_level",
        "image_qos",
        "num_threads",
        "image_name",
        "left_image_topic",
        "right_image_topic",
        "autostart",
    ):
        assert name in ARGS_BY_NAME


def test_mono_defaults_to_the_sam2s_namespace(launch_file, monkeypatch):
    (node,) = _launch(launch_file, monkeypatch)
    kw = node.kwargs
    assert (kw["package"], kw["executable"], kw["name"]) == ("sam2s_ros", "sam2s_node", "sam2s_node")
    assert kw["namespace"] == "sam2s"  # /sam2s/masks, /sam2s/prompts, /sam2s/reset
    assert kw["parameters"] == [f"{SHARE}/config/sam2s.yaml", {"image_topic": "/image_raw", "use_sim_time": False}]
    assert kw["arguments"] == ["--ros-args", "--log-level", "info"]


def test_mono_arguments_become_typed_parameters(launch_file, monkeypatch):
    (node,) = _launch(
        launch_file,
        monkeypatch,
        namespace="/psm1/",
        params_file="/my/params.yaml",
        image_topic="/endoscope/left/image_rect_color",
        checkpoint="/m/sam2.1_hiera_small.pt",
        model_size="small",
        backend="onnxruntime",
        device="cuda:1",
        image_size="512",
        allow_random_weights="false",
        image_qos="reliable",
        num_threads="3",
        autostart="false",
        use_sim_time="true",
        log_level="DEBUG",
    )
    kw = node.kwargs
    assert kw["namespace"] == "psm1"
    params_file, overrides = kw["parameters"]
    assert params_file == "/my/params.yaml"
    assert overrides == {
        "image_topic": "/endoscope/left/image_rect_color",
        "checkpoint": "/m/sam2.1_hiera_small.pt",
        "model_size": "small",
        "backend": "onnxruntime",
        "device": "cuda:1",
        "image_size": 512,
        "allow_random_weights": False,
        "image_qos": "reliable",
        "num_threads": 3,
        "autostart": False,
        "use_sim_time": True,
    }
    assert kw["arguments"] == ["--ros-args", "--log-level", "debug"]


def test_empty_arguments_keep_the_params_file_values(launch_file, monkeypatch):
    (node,) = _launch(launch_file, monkeypatch, checkpoint="", image_size="", backend="")
    assert node.kwargs["parameters"][1] == {"image_topic": "/image_raw", "use_sim_time": False}


def test_stereo_dvrk_image_name_and_threads_per_eye(launch_file, monkeypatch):
    nodes = _launch(launch_file, monkeypatch, stereo="true", rig="jhu_daVinci", image_name="image_rect_color")
    assert [n.kwargs["namespace"] for n in nodes] == ["sam2s/left", "sam2s/right"]
    topics = [n.kwargs["parameters"][1]["image_topic"] for n in nodes]
    assert topics == ["/jhu_daVinci/left/image_rect_color", "/jhu_daVinci/right/image_rect_color"]
    threads = [n.kwargs["parameters"][1]["num_threads"] for n in nodes]
    cores = len(os.sched_getaffinity(0))
    assert threads == [stereo_threads_per_eye(cores)] * 2
    assert 2 * threads[0] <= max(2, cores - 2)  # two nodes never take every core


def test_stereo_per_eye_topics_and_explicit_threads(launch_file, monkeypatch):
    nodes = _launch(
        launch_file,
        monkeypatch,
        stereo="true",
        left_image_topic="/cam/l/image_rect_color",
        right_image_topic="/cam/r/image_rect_color",
        num_threads="2",
    )
    assert [n.kwargs["parameters"][1]["image_topic"] for n in nodes] == [
        "/cam/l/image_rect_color",
        "/cam/r/image_rect_color",
    ]
    assert [n.kwargs["parameters"][1]["num_threads"] for n in nodes] == [2, 2]  # per eye


def test_stereo_warns_about_mono_only_image_topic(launch_file, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="sam2s.launch"):
        nodes = _launch(launch_file, monkeypatch, stereo="true", image_topic="/camera/image_raw")
    assert len(nodes) == 2
    assert "/camera/image_raw" not in [n.kwargs["parameters"][1]["image_topic"] for n in nodes]
    (record,) = [r for r in caplog.records if r.name == "sam2s.launch"]
    assert "image_topic:=/camera/image_raw is ignored" in record.getMessage()
    assert "mono-only" in record.getMessage()


def test_mono_warns_about_stereo_only_arguments():
    values = {a.name: a.default for a in LAUNCH_ARGS} | {"image_name": "image_rect_color"}
    (warning,) = check_arguments(ARGV, values)
    assert warning.startswith("image_name:=image_rect_color is ignored: it is a stereo-only argument")


def test_unknown_argument_stops_the_launch(launch_file, monkeypatch):
    with pytest.raises(LaunchArgumentError, match="use_simtime"):
        _launch(launch_file, monkeypatch, use_simtime="true")


def test_unknown_arguments_only_after_this_launch_file():
    assert unknown_arguments(ARGV + ["use_sim_time:=true", "imagesize:=512", "foo.bar:=1"]) == ["imagesize", "foo.bar"]
    assert unknown_arguments(["ros2", "launch", "/ws/src/sam2s_ros/launch/sam2s.launch.py", "x:=1"]) == ["x"]
    # included from another launch file: the command line belongs to that file
    assert unknown_arguments(["ros2", "launch", "my_bringup", "robot.launch.py", "arm:=psm1"]) == []
    assert unknown_arguments(ARGV + ["--debug", "checkpoint:=/a:=b.pt"]) == []


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("use_sim_time", "maybe", "not true/false"),
        ("image_size", "big", "not an integer"),
        ("stereo", "2", "not true/false"),
        ("log_level", "verbose", "must be one of"),
    ],
)
def test_invalid_values_are_refused(name, value, match):
    values = {a.name: a.default for a in LAUNCH_ARGS} | {name: value}
    with pytest.raises(LaunchArgumentError, match=match):
        check_arguments(ARGV, values)
        plan_nodes(values)


def test_root_namespace():
    values = {a.name: a.default for a in LAUNCH_ARGS} | {"namespace": "", "stereo": "true"}
    assert [p.namespace for p in plan_nodes(values, usable_cores=16)] == ["left", "right"]
    assert plan_nodes(values, usable_cores=16)[0].parameters["num_threads"] == 7


def test_stereo_threads_per_eye():
    assert stereo_threads_per_eye(1) == 1
    assert stereo_threads_per_eye(2) == 1
    assert stereo_threads_per_eye(16) == 7
    assert stereo_threads_per_eye(17) == 7


def test_docs_list_every_launch_argument():
    docs = (REPO / "docs" / "node_interface.md").read_text()
    section = docs[docs.index("## Launch") :]
    missing = [a.name for a in LAUNCH_ARGS if f"| `{a.name}` |" not in section]
    assert missing == [], f"docs/node_interface.md 'Launch' table lacks {missing}"
    readme = (REPO / "README.md").read_text()
    listed = readme[readme.index("Launch arguments (") :][:1000]
    assert [a.name for a in LAUNCH_ARGS if f"`{a.name}`" not in listed] == []


def test_image_qos_argument_matches_the_parameter_choices():
    from sam2s_ros.node.parameters import IMAGE_QOS_CHOICES

    arg = ARGS_BY_NAME["image_qos"]
    assert arg.parameter == "image_qos"
    assert all(choice in arg.description for choice in IMAGE_QOS_CHOICES)


def test_image_qos_guidance_covers_the_three_cases():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Image QoS") :]
    section = section[: section.index("\n## ", 3)]
    for case in ("same host", "another host", "bag replay"):
        assert case in section.lower().replace("**", ""), case
    assert "image_qos:=reliable" in section
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in section
    assert (REPO / "config" / "fastdds_localhost.xml").is_file()  # installed with config/ (CMakeLists.txt)
    docs = (REPO / "docs" / "node_interface.md").read_text()
    assert "## Image QoS" in docs

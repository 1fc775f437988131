"""Python half of sam2s_ros for the pip/venv route (scripts/setup.sh).

The interfaces (msg/, srv/) are built by CMakeLists.txt (rosidl) into the same prefix; in
a colcon workspace CMakeLists.txt installs everything and this file is not used.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sam2s_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time surgical instrument segmentation for ROS 2 with SAM2S",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        # `ros2 run sam2s_ros sam2s_node` looks for lib/<package>/<executable>.
        (f"lib/{PACKAGE}", ["scripts/sam2s_node", "scripts/sam2s"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    entry_points={
        "console_scripts": [
            "sam2s_node = sam2s_ros.node:main",
            "sam2s = sam2s_ros.tools.cli:main",
        ],
    },
)

"""The ROS 2 side (rclpy): the ``sam2s_node`` node and the tools that talk to one over DDS.

``sam2s_node`` (console script), ``python -m sam2s_ros.node`` and ``ros2 run sam2s_ros
sam2s_node`` all call :func:`main`. rclpy is imported only when :func:`main` runs or a
sub-module is imported, so that importing this package stays cheap.
"""

from __future__ import annotations

from typing import Optional


def main(args: Optional[list[str]] = None) -> int:
    """Run ``sam2s_node`` (see :func:`sam2s_ros.node.node.main`); glibc malloc is tuned first."""
    from sam2s_ros.allocator import tune_allocator

    tune_allocator()
    from sam2s_ros.node.node import main as node_main

    return node_main(args)

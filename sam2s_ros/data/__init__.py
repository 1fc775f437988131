"""Offline data without rclpy: rosbag2 I/O, frame folders and videos, label images, prompt sampling."""

from sam2s_ros.data.frames import Clip, read_davis_sequence, read_label_image, read_rgb

__all__ = ["Clip", "read_davis_sequence", "read_label_image", "read_rgb"]

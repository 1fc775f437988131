"""Streaming SAM2S tracking engine (knows nothing of ROS)."""

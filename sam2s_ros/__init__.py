"""sam2s_ros: real-time surgical instrument segmentation for ROS 2 with SAM2S.

The generated interface modules (``sam2s_ros.msg``, ``sam2s_ros.srv``) are built by
CMake/rosidl and may be installed in a different ``site-packages`` folder than these
sources (venv set-up with an editable install); ``extend_path`` lets both halves of the
package be found.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F405 (module attribute of packages)

__version__ = "0.1.0"

"""Where ``save_state`` / ``load_state`` may touch files: one folder, plain file names.

The services take a file *name*, never a path: it is resolved inside the ``state_dir``
parameter's folder (default ``$ROS_HOME/sam2s_state``, else ``~/.ros/sam2s_state``), so a
caller cannot make the node (often running as root) read or write anywhere else. See
docs/hostile_inputs.md for the threat model.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from sam2s_ros.errors import StateFileError
from sam2s_ros.tracking.state_files import file_kind

STATE_DIR_NAME = "sam2s_state"
MAX_NAME_CHARS = 128
#: a state file name: starts with a letter or digit, then letters, digits, '.', '_', '-'
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = (
    f"1..{MAX_NAME_CHARS} characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, "
    "no '..' (a plain file name inside state_dir, not a path)"
)


def default_state_dir(env: os._Environ | dict | None = None) -> Path:
    """``$ROS_HOME/sam2s_state`` when ROS_HOME is set, else ``~/.ros/sam2s_state``."""
    env = os.environ if env is None else env
    ros_home = env.get("ROS_HOME")
    return (Path(ros_home).expanduser() if ros_home else Path.home() / ".ros") / STATE_DIR_NAME


def check_name(name: str) -> None:
    """Raise StateFileError unless ``name`` is an allowed state file name (see NAME_RULE)."""
    if len(name) > MAX_NAME_CHARS:
        raise StateFileError(f"state file name has {len(name)} characters, at most {MAX_NAME_CHARS} are allowed")
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise StateFileError(f"invalid state file name {shown!r}: use {NAME_RULE}")


class StateStore:
    """The folder of state files (created on first save, mode 0700).

    Args:
        folder: the ``state_dir`` parameter; "" = :func:`default_state_dir`.
    """

    def __init__(self, folder: str = "") -> None:
        self.folder = Path(folder).expanduser() if folder else default_state_dir()

    def path_for_load(self, name: str) -> str:
        """Path of an existing state file ``name``. Raises StateFileError (bad name)."""
        check_name(name)
        return str(self.folder / name)

    def path_for_save(self, name: str) -> str:
        """Path to write state ``name`` to; creates the folder if missing.

        Raises:
            StateFileError: bad name, or the folder cannot be created or is not a folder.
        """
        check_name(name)
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            pass  # something else is there: reported below
        except OSError as exc:
            raise StateFileError(f"cannot create state_dir {str(self.folder)!r}: {exc.strerror or exc}") from exc
        try:
            mode = os.stat(self.folder).st_mode  # a symlink to a folder is fine: the admin chose it
        except OSError as exc:
            raise StateFileError(f"state_dir {str(self.folder)!r} is not usable: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(mode):
            raise StateFileError(f"state_dir {str(self.folder)!r} is a {file_kind(mode)}, not a folder")
        return str(self.folder / name)

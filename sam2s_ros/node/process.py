"""Start and stop a sam2s_node in a child process (for the demo and for tests).

The child runs ``python -m sam2s_ros.node --ros-args ...`` with the Fast DDS profile for
large images on one host (config/fastdds_localhost.xml), discovery kept on localhost, and
its own ROS_DOMAIN_ID when asked. Its output goes to a log file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from sam2s_ros.errors import Sam2sError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def find_config_file(name: str) -> Optional[Path]:
    """A file of the package's config/ folder: the source tree's, else the installed share/."""
    candidates = [PACKAGE_ROOT / "config" / name, Path(sys.prefix) / "share" / "sam2s_ros" / "config" / name]
    return next((c for c in candidates if c.is_file()), None)


def ros_env(domain_id: Optional[int] = None) -> dict[str, str]:
    """Environment for ROS processes on one host (localhost discovery, shared-memory profile)."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    profile = find_config_file("fastdds_localhost.xml")
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NodeProcess:
    """A sam2s_node child process (context manager: started on enter, SIGINT on exit).

    Args:
        parameters: node parameters (name -> value), passed as ``-p name:=value``.
        namespace: node namespace, e.g. "/sam2s".
        params_file: YAML parameter file loaded first (defaults: config/sam2s.yaml).
        log_path: file receiving the node's stdout and stderr.
        env: environment (default: :func:`ros_env`).
    """

    def __init__(
        self,
        parameters: dict,
        namespace: str = "/sam2s",
        params_file: Optional[Path] = None,
        log_path: Optional[Path] = None,
        env: Optional[dict] = None,
    ):
        self.parameters, self.namespace = parameters, namespace
        self.params_file = params_file or find_config_file("sam2s.yaml")
        self.log_path, self.env = log_path, env or ros_env()
        self.proc: Optional[subprocess.Popen] = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "sam2s_ros.node", "--ros-args", "-r", f"__ns:={self.namespace}"]
        if self.params_file is not None:
            cmd += ["--params-file", str(self.params_file)]
        for name, value in self.parameters.items():
            if value == "":
                continue  # rcl cannot parse "name:=" (empty); the YAML default "" applies
            text = str(value).lower() if isinstance(value, bool) else str(value)
            cmd += ["-p", f"{name}:={text}"]
        return cmd

    def __enter__(self) -> "NodeProcess":
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self._log = out
        self.proc = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env, stdin=subprocess.DEVNULL
        )
        return self

    def check_alive(self) -> None:
        """Raise Sam2sError with the log's tail if the node has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise Sam2sError(f"sam2s_node exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not Path(self.log_path).is_file():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return self.proc.returncode

    def __exit__(self, *exc) -> None:
        self.stop()


def free_domain_id(seed: Optional[int] = None) -> int:
    """A ROS_DOMAIN_ID in 102..162 derived from the pid (kept apart from test ids 1..101)."""
    return 102 + ((os.getpid() if seed is None else seed) % 60)


__all__: Sequence[str] = ("NodeProcess", "ros_env", "find_config_file", "free_domain_id")

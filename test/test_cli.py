"""sam2s_ros.tools.cli: the `sam2s` command line: registry, help, argument errors, entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sam2s_ros.tools import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = list(cli.load_commands())


def test_registry_lists_make_bag_and_eval():
    assert COMMANDS[:2] == ["make-bag", "eval"]


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_exits_0(argv, capsys):
    assert cli.main(argv) == 0
    assert "usage: sam2s" in capsys.readouterr().out


def test_help_shows_real_defaults(capsys):
    cli.main(["make-bag", "--help"])
    out = capsys.readouterr().out
    for text in ("default 25.0", "endoscope_left_optical_frame", "/endoscope/left/image_raw", "default mcap"):
        assert text in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required: COMMAND"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["make-bag"], "required: SRC, OUT"),
        (["make-bag", "a", "b", "--storage", "rosbag1"], "invalid choice: 'rosbag1'"),
        (["make-bag", "a", "b", "--prompt-type", "scribble"], "invalid choice: 'scribble'"),
        (["make-bag", "a", "b", "--rate", "fast"], "invalid float value"),
        (["eval", "out"], "required: --gt"),
        (["eval", "out", "--gt", "g", "--instruments", "a,b"], "comma-separated integer ids"),
        (["eval", "out", "--gt", "g", "--instruments", "0"], "ids must be in 1..65535"),
    ],
)
def test_bad_arguments_exit_2_with_message(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_exit_2(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "none"), "--gt", str(tmp_path)]) == 2
    assert "sam2s eval: error: output bag" in capsys.readouterr().err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "sam2s_ros.tools.cli", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "make-bag" in proc.stdout
    assert "eval" in proc.stdout

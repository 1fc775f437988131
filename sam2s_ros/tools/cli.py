"""The ``sam2s`` command-line tool: one sub-command per module of :data:`COMMAND_MODULES`.

A sub-command module provides

* ``COMMAND``: the sub-command name (e.g. ``"make-bag"``);
* ``add_parser(subparsers) -> argparse.ArgumentParser``: registers it on the parser;
* ``run(args: argparse.Namespace) -> int``: runs it and returns the exit code.

Modules are imported when the parser is built, so they should import heavy dependencies
(torch, onnxruntime, rclpy) inside ``run``. To add a command, write such a module and list
it in :data:`COMMAND_MODULES`.

Exit codes: 0 success, 1 failure reported by the command itself, 2 bad arguments or
bad input (any :class:`~sam2s_ros.errors.Sam2sError`, e.g. a missing file or an existing
output without ``--force``), 130 interrupted.

Usage examples::

    sam2s make-bag frames/ in.bag --gt-dir masks/
    sam2s eval out.bag --gt in.bag --json scores.json
    sam2s download tiny
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Optional, Sequence

from sam2s_ros.allocator import tune_allocator
from sam2s_ros.errors import Sam2sError

PROG = "sam2s"
EXIT_OK = 0
EXIT_USAGE = 2  # argparse's code for bad arguments; also used for bad inputs
EXIT_INTERRUPTED = 130

# Sub-command modules, in the order `sam2s --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "sam2s_ros.tools.make_bag",
    "sam2s_ros.tools.eval_cmd",
    "sam2s_ros.tools.replay",
    "sam2s_ros.tools.demo",
    "sam2s_ros.tools.export_cmd",
    "sam2s_ros.tools.train_cmd",
    "sam2s_ros.tools.download_cmd",
)


def load_commands(modules: Sequence[str] = COMMAND_MODULES) -> dict[str, ModuleType]:
    """Import the sub-command modules.

    Args:
        modules: dotted module names.

    Returns:
        ``{command name: module}`` in the given order.

    Raises:
        TypeError: a module lacks ``COMMAND``, ``add_parser`` or ``run``.
        ValueError: two modules claim the same command name.
    """
    commands: dict[str, ModuleType] = {}
    for name in modules:
        module = importlib.import_module(name)
        missing = [a for a in ("COMMAND", "add_parser", "run") if not hasattr(module, a)]
        if missing:
            raise TypeError(f"sub-command module {name} lacks {', '.join(missing)}")
        if module.COMMAND in commands:
            raise ValueError(f"sub-command {module.COMMAND!r} defined twice ({name})")
        commands[module.COMMAND] = module
    return commands


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The ``sam2s`` argument parser with every sub-command registered.

    Args:
        modules: sub-command modules (see :data:`COMMAND_MODULES`).

    Returns:
        The parser; ``args.run`` is the chosen command's ``run`` function and
        ``args.command`` its name.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="sam2s_ros tools: make test bags, evaluate tracking output.",
        epilog=__doc__[__doc__.index("Usage examples::") :].replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in load_commands(modules).items():
        sub = module.add_parser(subparsers)
        sub.set_defaults(run=module.run, command=name)
    return parser


def _exit_code(err: SystemExit) -> int:
    if err.code is None:
        return EXIT_OK
    if isinstance(err.code, int):
        return err.code
    print(err.code, file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``sam2s`` (glibc malloc is tuned first, see sam2s_ros.allocator).

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        Exit code (see the module docstring); ``--help`` gives 0, bad arguments 2.
    """
    tune_allocator()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:  # argparse exits on --help (0) and on bad arguments (2)
        return _exit_code(err)
    try:
        return int(args.run(args))
    except Sam2sError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""Registering a ``sam2s`` sub-command: one place for the parser layout every command shares."""

from __future__ import annotations

import argparse
from typing import Optional

#: marker in a command module's docstring: text before it is the description, after it the epilog
USAGE_MARKER = "Usage examples::"


def add_command_parser(
    subparsers: argparse._SubParsersAction, command: str, help_text: str, doc: str, description: Optional[str] = None
) -> argparse.ArgumentParser:
    """Add ``command`` to the ``sam2s`` parser with its module docstring as help.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.
        command: the sub-command's name. help_text: its one-line help.
        doc: the command module's docstring; the part before USAGE_MARKER becomes the
            description (unless ``description`` is given), the part from it the epilog
            (``::`` shown as ``:``). Without the marker the whole text is the description.
        description: overrides the description taken from ``doc``.

    Returns:
        The sub-command's parser (raw-text formatting, so the docstring's layout is kept).
    """
    head, marker, tail = doc.partition(USAGE_MARKER)
    return subparsers.add_parser(
        command,
        help=help_text,
        description=description if description is not None else head,
        epilog=(marker + tail).replace("::", ":") if marker else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

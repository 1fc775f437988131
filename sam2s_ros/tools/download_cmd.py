"""``sam2s download``: fetch an official SAM 2.1 checkpoint from Meta's public URL.

The file lands in ``--dir`` (default ``models/``) under its official name, written to a
temporary file first and renamed only when complete; its sha256 is checked where a
published value is known (:data:`sam2s_ros.model.download.CHECKPOINTS`; Meta publishes
none today, so the hash is printed for you to compare with your source's). Without network
access it fails at once and prints how to install the file by hand. A file that is already
there is kept (``--force`` downloads it again).

Usage examples::

    sam2s download                 # SAM 2.1 tiny into models/
    sam2s download small --dir ~/sam2s_models
    sam2s download tiny --url http://mirror.local/sam2.1_hiera_tiny.pt --sha256 <hex>
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from sam2s_ros.model.download import CHECKPOINTS, download_checkpoint
from sam2s_ros.tools.subcommand import add_command_parser

COMMAND = "download"
DEFAULT_SIZE = "tiny"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``download`` on the ``sam2s`` parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The sub-command's parser.
    """
    p = add_command_parser(
        subparsers, COMMAND, "fetch an official SAM 2.1 checkpoint (tiny, small, base_plus, large)", __doc__
    )
    p.add_argument(
        "size", nargs="?", default=DEFAULT_SIZE, choices=list(CHECKPOINTS), help="model size (default %(default)s)"
    )
    p.add_argument("--dir", type=Path, default=Path("models"), help="folder to save into (default %(default)s)")
    p.add_argument("--force", action="store_true", help="download again even if the file exists")
    p.add_argument("--url", help="download from this URL instead (a mirror); the file name stays the official one")
    p.add_argument("--sha256", help="expected sha256 (hex) of the file, checked before it is saved")
    return p


def run(args: argparse.Namespace) -> int:
    """Download, verify, and print where the file is and how to use it.

    Returns:
        0 on success.

    Raises:
        DownloadError: offline, HTTP error, truncated download, hash mismatch (exit code 2).
    """
    source = CHECKPOINTS[args.size]
    if args.url or args.sha256:
        source = dataclasses.replace(source, url=args.url or source.url, sha256=args.sha256 or source.sha256)
    if not args.dir.joinpath(source.filename).exists() or args.force:
        print(f"downloading {source.url} (~{source.approx_mb} MB) to {args.dir} ...", file=sys.stderr)
    result = download_checkpoint(args.size, args.dir, sources={args.size: source}, force=args.force)
    state = "downloaded" if result.downloaded else "already present"
    print(f"{state}: {result.path} ({result.size_bytes / 1e6:.1f} MB)")
    if result.verified:
        print(f"sha256 {result.sha256} (matches the expected hash)")
    else:
        print(f"sha256 {result.sha256} (no published hash to check against: compare it with your source's)")
    print(f"use it: sam2s_node --ros-args -p checkpoint:={result.path.resolve()} -p model_size:={args.size}")
    return 0

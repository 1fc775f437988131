"""``sam2s eval``: DAVIS J&F and latency of the node's output bag against ground truth.

Reads ``sam2s_ros/msg/InstrumentMaskArray`` messages (``--masks-topic``) from the output
bag; each ``InstrumentMask.mask`` (mono8, non-zero = instrument; cropped to its ROI and
pasted back into the full frame at its offset, or full size) is the prediction for
``instrument_id`` on the frame of the message's header stamp.

Matching output to ground truth (``--gt``):

* a **bag** (e.g. the input bag made by ``sam2s make-bag``): ground-truth label images on
  ``--gt-topic``; an output message belongs to the ground-truth image with the same header
  stamp (exact, in nanoseconds). Frame i is the i-th ground-truth message of the bag.
* a **folder** of label images (sorted by name): file i is frame i, and its stamp is taken
  to be ``--start-time + i / --rate`` (the stamps ``sam2s make-bag`` writes, whose
  defaults these options share); the output message with that header stamp belongs to it.
  Pass the same ``--rate``/``--start-time`` as to make-bag if they were changed. The folder
  is taken to be dense (every frame annotated), so an output stamp that falls between two
  of its frames' stamps is an error (a wrong ``--rate``/``--start-time``).

Protocol (DAVIS semi-supervised, see :mod:`sam2s_ros.evaluation.davis`): frames before
``--start-frame`` (the prompted frame) are ignored; the instruments scored are
``--instruments`` or else those present in the ground truth of the start frame; the start
frame and the last frame are not counted (``--keep-first-last`` counts them). A ground-truth
frame with no output message is **missing**: every instrument is scored as an empty
prediction there, and the report lists such frames. An instrument absent from an output
message is an empty prediction on that frame. Latency statistics (milliseconds) come from
the ``latency`` field (seconds) of every output message.

Usage examples::

    sam2s eval out.bag --gt in.bag --json scores.json
    sam2s eval out.bag --gt ../shared/data/cholecseg8k_clip/masks_instruments --instruments 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sam2s_ros.data import input_bag
from sam2s_ros.errors import ConfigError
from sam2s_ros.evaluation.bag_eval import DEFAULT_MASKS_TOPIC, EvalOptions, evaluate, format_report
from sam2s_ros.tools.subcommand import add_command_parser

COMMAND = "eval"


def parse_ids(text: str) -> list[int]:
    """Parse ``1,2,5`` into instrument ids (an argparse ``type``).

    Args:
        text: comma-separated integers in 1..65535.

    Returns:
        Sorted unique ids.

    Raises:
        argparse.ArgumentTypeError: not integers, or out of range.
    """
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer ids, got {text!r}") from None
    if not ids or any(not 1 <= i <= 65535 for i in ids):
        raise argparse.ArgumentTypeError(f"ids must be in 1..65535, got {text!r}")
    return sorted(set(ids))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``sam2s`` parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The sub-command's parser.
    """
    p = add_command_parser(
        subparsers, COMMAND, "J&F (DAVIS) and latency of an output bag against ground truth", __doc__
    )
    p.add_argument(
        "output_bag", type=Path, metavar="OUTPUT_BAG", help="the node's output bag (InstrumentMaskArray messages)"
    )
    p.add_argument(
        "--gt", type=Path, required=True, help="ground truth: a bag with label images, or a folder of label PNGs"
    )
    p.add_argument("--masks-topic", default=DEFAULT_MASKS_TOPIC, help="InstrumentMaskArray topic (default %(default)s)")
    p.add_argument(
        "--gt-topic",
        default=input_bag.DEFAULT_GT_TOPIC,
        help="label image topic of a ground-truth bag (default %(default)s)",
    )
    p.add_argument(
        "--instruments",
        type=parse_ids,
        help="ids to score, e.g. 1,2 (default: those in the start frame's ground truth)",
    )
    p.add_argument(
        "--start-frame", type=int, default=0, help="prompted frame; earlier frames are ignored (default %(default)s)"
    )
    p.add_argument("--max-frames", type=int, help="score at most this many ground-truth frames from the start frame")
    p.add_argument("--keep-first-last", action="store_true", help="also count the start frame and the last frame")
    p.add_argument("--void-label", type=int, help="ground-truth label of pixels to ignore (e.g. 255)")
    p.add_argument(
        "--rate",
        type=float,
        default=input_bag.DEFAULT_RATE_HZ,
        help="frame rate of a ground-truth folder's stamps in Hz (default %(default)s)",
    )
    p.add_argument(
        "--start-time",
        type=float,
        default=input_bag.DEFAULT_START_TIME_S,
        help="stamp of a ground-truth folder's frame 0 in seconds (default %(default)s)",
    )
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``eval`` with parsed arguments: print the table, write the JSON.

    Args:
        args: namespace from the parser of :func:`add_parser`.

    Returns:
        0 on success.

    Raises:
        Sam2sError: bad inputs (the CLI turns it into exit code 2).
    """
    if args.json is not None and args.json.exists() and not args.force:
        raise ConfigError(f"{args.json} exists; pass --force to replace it")
    opt = EvalOptions(
        output_bag=args.output_bag, gt=args.gt, masks_topic=args.masks_topic, gt_topic=args.gt_topic,
        instruments=args.instruments, start_frame=args.start_frame, max_frames=args.max_frames,
        keep_first_last=args.keep_first_last, void_label=args.void_label, rate_hz=args.rate,
        start_time_s=args.start_time,
    )  # fmt: skip
    report = evaluate(opt)
    print(format_report(report))
    if report["frames"]["missing_in_output"]:
        print(
            f"sam2s {COMMAND}: warning: {report['frames']['missing_in_output']} frame(s) missing in the output",
            file=sys.stderr,
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0

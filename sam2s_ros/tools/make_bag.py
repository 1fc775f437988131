r"""``sam2s make-bag``: a rosbag2 test input from a frame folder or a video, with ground truth.

The bag holds, all with the same stamps ``start_time + i / rate`` (frame i, reproducible):

* ``--image-topic``: ``sensor_msgs/msg/Image`` rgb8, one per frame;
* ``--gt-topic`` (with ``--gt-dir``): the ground-truth label image of the frame as
  ``sensor_msgs/msg/Image`` mono8 (mono16 when an id exceeds 255), 0 = background,
  k = instrument k;
* ``--prompt-topic`` (with ``--gt-dir``): one ``sam2s_ros/msg/Prompt`` (mode NEW,
  ``instrument_id`` = ground-truth id) per instrument present in the ground truth of
  ``--prompt-frame``, derived by :mod:`sam2s_ros.data.prompt_sampling`; header = that frame's
  header. Each message's log time is its header stamp; a frame's prompts are written
  right after its image.

Ground truth: for a frame folder, the mask of ``frames/NAME.jpg`` is ``GT_DIR/NAME.png``
(same stem; ``.png``/``.tif``/``.tiff``); for a video, the i-th mask in sorted order is
frame i. Provenance (source, rate, start time, prompt settings) goes into
``metadata.yaml``'s ``custom_data`` under ``sam2s.make_bag``.

Usage examples::

    sam2s make-bag ../shared/data/cholecseg8k_clip/frames cholec.bag \
        --gt-dir ../shared/data/cholecseg8k_clip/masks_instruments --prompt-type clicks --clicks 3
    sam2s make-bag video3.mp4 video3.bag --max-frames 50 --storage sqlite3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sam2s_ros.data import bags
from sam2s_ros.data.input_bag import (
    DEFAULT_FRAME_ID,
    DEFAULT_GT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    DEFAULT_PROMPT_TOPIC,
    DEFAULT_RATE_HZ,
    DEFAULT_START_TIME_S,
    MakeBagOptions,
    make_bag,
)
from sam2s_ros.data.prompt_sampling import DEFAULT_CLICKS, PROMPT_KINDS
from sam2s_ros.tools.subcommand import add_command_parser

COMMAND = "make-bag"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``make-bag`` on the ``sam2s`` parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The sub-command's parser.
    """
    p = add_command_parser(
        subparsers, COMMAND, "write a rosbag2 (images, ground truth, prompts) from frames or a video", __doc__
    )
    p.add_argument("src", type=Path, metavar="SRC", help="folder of frames (png/jpg, sorted by name) or a video file")
    p.add_argument("out", type=Path, metavar="OUT", help="bag folder to create")
    p.add_argument(
        "--gt-dir",
        type=Path,
        help="folder of label images (0 background, k instrument k): same file names as the frames "
        "(or sorted order for a video)",
    )
    p.add_argument(
        "--rate", type=float, default=DEFAULT_RATE_HZ, help="frame rate of the stamps in Hz (default %(default)s)"
    )
    p.add_argument(
        "--start-time",
        type=float,
        default=DEFAULT_START_TIME_S,
        help="stamp of frame 0 in seconds since the epoch (default %(default)s)",
    )
    p.add_argument("--frame-id", default=DEFAULT_FRAME_ID, help="header frame_id (default %(default)s)")
    p.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="rgb8 image topic (default %(default)s)")
    p.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC, help="ground-truth label image topic (default %(default)s)")
    p.add_argument(
        "--prompt-topic", default=DEFAULT_PROMPT_TOPIC, help="sam2s_ros/msg/Prompt topic (default %(default)s)"
    )
    p.add_argument(
        "--prompt-frame", type=int, default=0, help="frame whose ground truth gives the prompts (default %(default)s)"
    )
    p.add_argument(
        "--prompt-type",
        choices=(*PROMPT_KINDS, "none"),
        help="prompt derived from the ground truth (default box with --gt-dir)",
    )
    p.add_argument(
        "--clicks",
        type=int,
        default=DEFAULT_CLICKS,
        help="clicks per instrument for --prompt-type clicks (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the click sampling (default %(default)s)")
    p.add_argument("--void-label", type=int, help="label value that is not an instrument (gets no prompt)")
    p.add_argument(
        "--storage", choices=bags.STORAGES, default=bags.DEFAULT_STORAGE, help="rosbag2 storage (default %(default)s)"
    )
    p.add_argument("--max-frames", type=int, help="write at most this many frames")
    p.add_argument("--force", action="store_true", help="replace an existing bag at OUT")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``make-bag`` with parsed arguments.

    Args:
        args: namespace from the parser of :func:`add_parser`.

    Returns:
        0 on success.

    Raises:
        Sam2sError: bad inputs (the CLI turns it into exit code 2).
    """
    opt = MakeBagOptions(
        src=args.src, out=args.out, gt_dir=args.gt_dir, rate_hz=args.rate, start_time_s=args.start_time,
        frame_id=args.frame_id, image_topic=args.image_topic, gt_topic=args.gt_topic,
        prompt_topic=args.prompt_topic, prompt_frame=args.prompt_frame, prompt_type=args.prompt_type,
        clicks=args.clicks, seed=args.seed, void_label=args.void_label, storage=args.storage,
        max_frames=args.max_frames, force=args.force,
    )  # fmt: skip
    result = make_bag(opt)
    for warning in result.warnings:
        print(f"sam2s {COMMAND}: warning: {warning}", file=sys.stderr)
    h, w = result.image_hw
    gt = f", {result.gt_frames} ground-truth ({result.gt_encoding})" if result.gt_frames else ""
    prompts = f", prompts for instruments {result.prompt_ids} on frame {opt.prompt_frame}" if result.prompt_ids else ""
    print(f"wrote {result.path} ({opt.storage}): {result.frames} images {w}x{h} at {opt.rate_hz:g} Hz{gt}{prompts}")
    return 0

"""``sam2s replay``: play a bag into a running sam2s_node and record what it publishes.

The input bag (e.g. from ``sam2s make-bag``) holds ``sensor_msgs/Image`` frames and
``sam2s_ros/Prompt`` messages (each written right after the image it refers to). Messages
are published over real DDS as the CDR bytes stored in the bag. Two pacings:

- ``lockstep`` (default): as fast as the node keeps up without drops: each image is
  published and the next one only after the node's ``masks`` output for it arrived (or
  ``--frame-timeout`` seconds passed); a frame's prompts are published once the node has
  the frame (stamped with it, the node tracks that frame again with them), and the replay
  waits for the output carrying every prompted instrument;
- ``rate``: at the recorded stamps' rate (times ``--speed``); outputs are collected as they
  come, frames the node skipped (newest frame wins) stay without output.

The node's ``masks``, ``instrument_classes`` and ``label_image`` outputs are recorded into
an output bag (their CDR bytes unchanged), and an overlay video (mp4) is rendered from the
source frames and the received masks.

Usage examples::

    sam2s replay in.bag --out out.bag --overlay overlay.mp4
    sam2s replay in.bag --out out.bag --mode rate --namespace /sam2s
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sam2s_ros.data import bags, input_bag
from sam2s_ros.node.replay import ReplayOptions, ReplaySummary, replay_bag
from sam2s_ros.tools.subcommand import add_command_parser

COMMAND = "replay"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sam2s replay``."""
    p = add_command_parser(subparsers, COMMAND, "play a bag into a running sam2s_node and record its outputs", __doc__)
    p.add_argument("bag", type=Path, help="input bag (from sam2s make-bag or a recording)")
    p.add_argument("--out", type=Path, required=True, help="output bag folder to create")
    p.add_argument("--overlay", type=Path, default=None, help="overlay video to write (.mp4)")
    p.add_argument("--namespace", default="/sam2s", help="namespace of the running node (default: /sam2s)")
    p.add_argument(
        "--image-topic",
        default="",
        help="image topic of the bag (default: the only Image topic other than the ground truth)",
    )
    p.add_argument("--prompt-topic", default="", help="prompt topic of the bag (default: the only Prompt topic)")
    p.add_argument(
        "--gt-topic",
        default=input_bag.DEFAULT_GT_TOPIC,
        help=f"ground-truth topic, never played (default: {input_bag.DEFAULT_GT_TOPIC})",
    )
    p.add_argument(
        "--mode",
        choices=("lockstep", "rate"),
        default="lockstep",
        help="lockstep: next frame after the node's output (no drops); rate: recorded rate (default: lockstep)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="rate multiplier in rate mode (default: 1.0)")
    p.add_argument(
        "--frame-timeout", type=float, default=60.0, help="seconds to wait for a frame's output (default: 60)"
    )
    p.add_argument("--node-timeout", type=float, default=120.0, help="seconds to wait for the node (default: 120)")
    p.add_argument("--caption", default="", help="text drawn on every overlay frame")
    p.add_argument("--storage", choices=bags.STORAGES, default=bags.DEFAULT_STORAGE, help="output bag storage")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def print_summary(summary: ReplaySummary, opt: ReplayOptions) -> None:
    """Human-readable summary of a replay."""
    print(
        f"replayed {summary.frames_sent} frames in {summary.wall_time_s:.1f} s; "
        f"{summary.frames_with_output} with output, {len(summary.frames_timed_out)} without"
    )
    print(f"output bag: {opt.out} {summary.recorded}")
    if opt.overlay is not None:
        print(f"overlay video: {opt.overlay}")


def run(args: argparse.Namespace) -> int:
    """Run ``replay`` with parsed arguments; 1 when some frame got no output."""
    opt = ReplayOptions(
        bag=args.bag,
        out=args.out,
        overlay=args.overlay,
        namespace=args.namespace,
        image_topic=args.image_topic,
        prompt_topic=args.prompt_topic,
        gt_topic=args.gt_topic,
        mode=args.mode,
        speed=args.speed,
        frame_timeout=args.frame_timeout,
        node_timeout=args.node_timeout,
        caption=args.caption,
        storage=args.storage,
        force=args.force,
        progress=not args.no_progress,
    )
    summary = replay_bag(opt)
    print_summary(summary, opt)
    return 0 if not summary.frames_timed_out or opt.mode == "rate" else 1

"""``sam2s demo``: the whole product on real footage, end to end.

1. the source (default: the real CholecSeg8k clip in ``../shared/data/cholecseg8k_clip``
   with its instrument ground truth; or a frame folder, a video, or a rosbag you name)
   becomes a rosbag2 with ``sensor_msgs/Image`` frames and prompts (``sam2s make-bag``:
   from the ground truth, or from ``--box`` / ``--click``);
2. a ``sam2s_node`` starts in its own process (the checkpoint from ``--checkpoint``, else
   the first one in ``models/``, else the embedded ``models/sam2s_mobile.safetensors``
   trained here; random weights only with ``--random-weights``);
3. the bag is replayed into it over DDS; its outputs go to an output bag and an overlay
   video (``sam2s replay``);
4. with ground truth, J&F is computed (``sam2s eval``) and printed; a JSON is written.

Every output says "random weights" when they were used: such masks are meaningless.

Usage examples::

    sam2s demo --random-weights
    sam2s demo --checkpoint models/sam2.1_hiera_tiny.pt --model-size tiny
    sam2s demo my_video.mp4 --box 100,80,300,260 --checkpoint models/sam2.1_hiera_small.pt --model-size small
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

from sam2s_ros.data import bags, input_bag
from sam2s_ros.errors import ConfigError, Sam2sError
from sam2s_ros.evaluation import bag_eval
from sam2s_ros.node import replay
from sam2s_ros.node.process import PACKAGE_ROOT, NodeProcess, free_domain_id, ros_env
from sam2s_ros.tools.replay import print_summary
from sam2s_ros.tools.subcommand import add_command_parser
from sam2s_ros.tracking.config import BACKENDS, MOBILE_MODEL, MODEL_SIZES, model_name

COMMAND = "demo"
DEFAULT_CLIP = PACKAGE_ROOT.parent / "shared" / "data" / "cholecseg8k_clip"
MODELS_DIR = PACKAGE_ROOT / "models"
#: file name of the checkpoint shipped in models/ (trained here, see models/sam2s_mobile.md)
EMBEDDED_CHECKPOINT_NAME = "sam2s_mobile.safetensors"
#: image size when neither --image-size nor the checkpoint says (CPU-friendly)
DEFAULT_IMAGE_SIZE = 512
EMBEDDED_NOTE = (
    f"note: the embedded {EMBEDDED_CHECKPOINT_NAME} is MobileSAM with a memory readout, never trained on "
    "surgical video (zero-shot figures and limits: models/sam2s_mobile.md); `sam2s download tiny` fetches "
    "SAM 2.1 tiny into models/, which the demo then uses instead"
)
RANDOM_BANNER = "RANDOM WEIGHTS: masks and scores are meaningless (pipeline demo only)"
CHECKPOINT_HELP = (
    "no checkpoint: the embedded models/sam2s_mobile.safetensors is missing and models/ holds no other; "
    "put a SAM 2.1 or SAM2S checkpoint in models/ (see models/README.md, e.g. "
    "models/sam2.1_hiera_tiny.pt with --model-size tiny: `sam2s download tiny` fetches it) or pass "
    "--checkpoint PATH; "
    "to run the pipeline on random weights anyway, pass --random-weights"
)


def find_checkpoint(explicit: Optional[Path]) -> Optional[Path]:
    """The checkpoint to use: ``explicit``, else the first *.pt/*.pth/*.safetensors in models/
    other than the embedded one, else the embedded ``models/sam2s_mobile.safetensors``."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"checkpoint {explicit} does not exist")
        return explicit
    found = sorted(p for ext in ("*.pt", "*.pth", "*.safetensors") for p in MODELS_DIR.glob(ext))
    others = [p for p in found if p.name != EMBEDDED_CHECKPOINT_NAME]
    if others:
        return others[0]
    embedded = MODELS_DIR / EMBEDDED_CHECKPOINT_NAME
    return embedded if embedded.is_file() else None


def checkpoint_image_size(checkpoint: Optional[Path]) -> Optional[int]:
    """The ``image_size`` a checkpoint was trained at (safetensors metadata of ``sam2s train``), or None."""
    if checkpoint is None or checkpoint.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as f:
            value = (f.metadata() or {}).get("image_size")
        return int(value) if value else None
    except (OSError, ValueError, RuntimeError):
        return None


def infer_model_size(checkpoint: Optional[Path], explicit: Optional[str]) -> str:
    """``explicit``, else the model named in the checkpoint's file name (sam2s_mobile or a
    Hiera size), else "tiny"."""
    if explicit:
        return explicit
    name = checkpoint.name.lower() if checkpoint else ""
    if MOBILE_MODEL in name:
        return MOBILE_MODEL
    for size, keys in (
        ("base_plus", ("base_plus", "b+")),
        ("large", ("large", "_l.")),
        ("small", ("small", "_s.")),
        ("tiny", ("tiny", "_t.")),
    ):
        if any(k in name for k in keys):
            return size
    return "tiny"


def _parse_floats(text: str, n: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise ConfigError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _user_prompts(args) -> list:
    import numpy as np

    from sam2s_ros.tracking.types import PromptInput

    prompts = []
    for i, b in enumerate(args.box or []):
        prompts.append(PromptInput(len(prompts) + 1, box=np.array(_parse_floats(b, 4, "--box"), np.float32)))
    for c in args.click or []:
        x, y = _parse_floats(c, 2, "--click")
        prompts.append(PromptInput(len(prompts) + 1, points=np.array([[x, y]], np.float32), labels=np.array([1])))
    return prompts


def _input_bag(args, out: Path, prompts: list) -> tuple[Path, Optional[Path]]:
    """Make (or pick) the input bag; returns (bag, ground truth for eval or None)."""
    source = args.source
    if source is None:
        if not DEFAULT_CLIP.is_dir():
            raise ConfigError(f"the default clip {DEFAULT_CLIP} is absent: name a frame folder, a video or a bag")
        source = DEFAULT_CLIP
    gt_dir = args.gt_dir
    if source == DEFAULT_CLIP or (source / "frames").is_dir():
        gt_dir = gt_dir or (source / "masks_instruments" if (source / "masks_instruments").is_dir() else None)
        source = source / "frames"
    if bags.is_bag(source):
        return source, source
    bag = out / "input_bag"
    prompt_type = "none" if prompts or gt_dir is None else args.prompt_type
    result = input_bag.make_bag(
        input_bag.MakeBagOptions(
            src=source, out=bag, gt_dir=gt_dir, prompt_type=prompt_type, max_frames=args.max_frames, force=True
        )
    )
    for w in result.warnings:
        print(f"sam2s demo: {w}")
    print(
        f"input bag: {bag} ({result.frames} frames {result.image_hw[1]}x{result.image_hw[0]}, "
        f"prompts for instruments {result.prompt_ids or [p.instrument_id for p in prompts]})"
    )
    if not result.prompt_ids and not prompts:
        raise ConfigError("nothing to track: the source has no ground truth; give --box x0,y0,x1,y1 or --click x,y")
    return bag, (bag if gt_dir is not None else None)


def run_demo(args) -> int:
    """Run the demo (see the module docstring); returns an exit code."""
    checkpoint = None if (args.random_weights and args.checkpoint is None) else find_checkpoint(args.checkpoint)
    if checkpoint is None and not args.random_weights:
        raise ConfigError(CHECKPOINT_HELP)
    random_weights = checkpoint is None
    args.model_size = infer_model_size(checkpoint, args.model_size)
    args.image_size = args.image_size or checkpoint_image_size(checkpoint) or DEFAULT_IMAGE_SIZE
    model = model_name(args.model_size)
    out = args.out or (PACKAGE_ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S"))
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace its contents or choose --out")
    out.mkdir(parents=True, exist_ok=True)
    if random_weights:
        print(f"*** {RANDOM_BANNER} ***")
    elif checkpoint.name == EMBEDDED_CHECKPOINT_NAME:
        print(EMBEDDED_NOTE)
    bag, gt = _input_bag(args, out, _user_prompts(args))
    if gt is not None and input_bag.DEFAULT_GT_TOPIC not in bags.bag_topics(gt):
        gt = None  # a user's bag without ground truth: no J&F
    params = {
        "image_topic": input_bag.DEFAULT_IMAGE_TOPIC,
        "image_size": args.image_size,
        "backend": args.backend,
        "model_size": args.model_size,
        "image_qos": "reliable",
        "allow_random_weights": random_weights,
        "checkpoint": str(checkpoint) if checkpoint else "",
    }
    if args.onnx_dir:
        params["onnx_dir"] = str(args.onnx_dir)
    env = ros_env(free_domain_id())
    opt = replay.ReplayOptions(
        bag=bag,
        out=out / "output_bag",
        overlay=out / "overlay.mp4",
        namespace="/sam2s",
        caption="random weights" if random_weights else f"{model} ({checkpoint.name})",
        force=True,
        frame_timeout=args.frame_timeout,
        extra_prompts=_user_prompts(args),
    )
    print(
        f"starting sam2s_node ({model}, image_size {args.image_size}, {args.backend}, "
        f"{'random weights' if random_weights else checkpoint}); log: {out / 'node.log'}"
    )
    with NodeProcess(params, log_path=out / "node.log", env=env) as node:
        import os

        os.environ.update(
            {
                k: env[k]
                for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")
                if k in env
            }
        )
        opt.node_check = node.check_alive
        try:
            summary = replay.replay_bag(opt)
        except Sam2sError:
            node.check_alive()
            raise
        code = node.stop()
    print_summary(summary, opt)
    print(f"node exited with code {code}")
    report = {
        "model": model,
        "image_size": args.image_size,
        "weights": "random weights" if random_weights else f"checkpoint {checkpoint}",
        "replay": {
            "frames_sent": summary.frames_sent,
            "frames_with_output": summary.frames_with_output,
            "wall_time_s": round(summary.wall_time_s, 2),
        },
    }
    if gt is not None:
        scores = bag_eval.evaluate(bag_eval.EvalOptions(output_bag=opt.out, gt=gt))
        print(bag_eval.format_report(scores))
        report["eval"] = scores
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out / 'results.json'}")
    if random_weights:
        print(f"*** {RANDOM_BANNER} ***")
    elif checkpoint.name == EMBEDDED_CHECKPOINT_NAME:
        print(EMBEDDED_NOTE)
    return 0 if summary.frames_with_output == summary.frames_sent else 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sam2s demo``."""
    p = add_command_parser(
        subparsers, COMMAND, "run the node on real footage end to end (bag, replay, overlay, J&F)", __doc__
    )
    p.add_argument(
        "source", type=Path, nargs="?", default=None, help=f"frame folder, video or bag (default: {DEFAULT_CLIP})"
    )
    p.add_argument("--gt-dir", type=Path, default=None, help="instrument label images for prompts and J&F")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the first one in models/)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="pipeline check on random weights (SAM 2.1 tiny), ignoring models/",
    )
    p.add_argument(
        "--model-size",
        default=None,
        choices=MODEL_SIZES,
        help="model of the checkpoint (default: from its file name, else tiny)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"model input size (default: the checkpoint's training size, else {DEFAULT_IMAGE_SIZE})",
    )
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--onnx-dir", type=Path, default=None, help="exported graphs for onnxruntime/tensorrt")
    p.add_argument(
        "--prompt-type",
        default="box",
        choices=("box", "clicks", "mask"),
        help="prompts derived from the ground truth of frame 0 (default: box, the SAM2S evaluation prompt)",
    )
    p.add_argument("--box", action="append", help="x0,y0,x1,y1: box prompt on the first frame (repeatable)")
    p.add_argument("--click", action="append", help="x,y: click prompt on the first frame (repeatable)")
    p.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    p.add_argument("--frame-timeout", type=float, default=120.0, help="seconds to wait for each frame's output")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/demo-<time>)")
    p.add_argument("--force", action="store_true", help="reuse a non-empty --out folder")
    return p


def run(args: argparse.Namespace) -> int:
    """Entry of ``sam2s demo``."""
    return run_demo(args)

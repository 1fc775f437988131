#!/usr/bin/env python3
"""Accuracy of a sam2s_mobile checkpoint: the evaluation clips through the node, and training fit.

1. ``sam2s demo`` (bag -> sam2s_node process -> replay over DDS -> ``sam2s eval``) on the two
   evaluation clips, which no training run may use: the CholecSeg8k clip (surgical, zero-shot;
   grasper and hook from the ground truth of frame 0) and DAVIS 2016 blackswan, box prompt on
   frame 0 and nothing after. DAVIS J&F at source resolution (first and last frame dropped).
2. Training fit: each davis2016_train sequence tracked by the streaming tracker (box prompt on
   its first frame), J&F at model resolution (sam2s_ros.training.validation).

Usage:
    .venv/bin/python benchmarks/eval_sam2s_mobile.py --checkpoint models/sam2s_mobile.safetensors \
        --image-size 512 --out /tmp/eval.json [--fit-frames 40] [--skip-fit]
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIPS = {
    "cholecseg8k_clip": ([], "grasper (id 1) and hook (id 2)"),
    "davis2016_blackswan": (["--gt-dir", str(SHARED / "data" / "davis2016_blackswan" / "masks")], "swan"),
}


def demo(clip: str, extra: list[str], checkpoint: str, image_size: int, backend: str, out: pathlib.Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "sam2s_ros.tools.cli",
        "demo",
        str(SHARED / "data" / clip),
        *extra,
        "--checkpoint",
        checkpoint,
        "--image-size",
        str(image_size),
        "--backend",
        backend,
        "--prompt-type",
        "box",
        "--out",
        str(out),
        "--force",
    ]
    if backend != "torch":
        cmd += ["--onnx-dir", str(out.parent / "onnx")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((out / "results.json").read_text())


def training_fit(checkpoint: str, image_size: int, frames: int) -> dict:
    import torch

    from sam2s_ros.model.loader import load_model
    from sam2s_ros.tracking.config import MOBILE_MODEL, TrackerConfig
    from sam2s_ros.training.config import DataConfig, SourceConfig, TrainConfig
    from sam2s_ros.training.datasets import load_all
    from sam2s_ros.training.validation import track_and_score

    model = load_model(TrackerConfig(model_size=MOBILE_MODEL, image_size=image_size, checkpoint=checkpoint))
    data = DataConfig(
        sources=[SourceConfig(path=str(SHARED / "data" / "davis2016_train"))], max_frames_per_sequence=frames
    )
    cfg = TrainConfig(image_size=image_size, val_frames=frames, data=data)
    seqs = load_all(data, image_size)
    return track_and_score(model.sam, None, seqs, cfg, torch.device("cpu"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "sam2s_mobile.safetensors"))
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--backend", default="torch", choices=("torch",))
    ap.add_argument("--fit-frames", type=int, default=40, help="frames per training sequence for the fit (0 = all)")
    ap.add_argument("--skip-fit", action="store_true")
    ap.add_argument("--clips", nargs="*", default=list(CLIPS), help="evaluation clips (none: training fit only)")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()
    report = {
        "date": datetime.date.today().isoformat(),
        "checkpoint": args.checkpoint,
        "image_size": args.image_size,
        "clips": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            extra, what = CLIPS[clip]
            res = demo(clip, extra, args.checkpoint, args.image_size, args.backend, pathlib.Path(tmp) / clip)
            ev = res.get("eval", {})
            report["clips"][clip] = {"objects": what, "eval": ev, "replay": res.get("replay")}
            print(clip, json.dumps(ev.get("overall", ev), default=str)[:600], flush=True)
    if not args.skip_fit:
        report["training_fit"] = training_fit(args.checkpoint, args.image_size, args.fit_frames)
        print("training fit", json.dumps(report["training_fit"], default=str), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""J&F of the training-free readout baseline on the evaluation clips (box prompt on frame 0).

The baseline is :mod:`sam2s_ros.evaluation.readout_baseline` (MobileSAM features, cosine
memory readout, SAM decoder; no training). Protocol as ``benchmarks/eval_sam2s_mobile.py``:
the object is prompted once, with the box of its ground truth on frame 0, nothing after;
DAVIS J&F at source resolution with the first and last frame not scored
(:func:`sam2s_ros.evaluation.davis.evaluate_object`). Objects: the CholecSeg8k grasper
(label 1, visible in all 72 frames) and the DAVIS blackswan.

Usage:
    .venv/bin/python benchmarks/readout_baseline.py --image-size 1024 [--clips cholecseg8k_clip] \
        [--frames N] [--threads 2] [--out /tmp/readout.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
#: clip -> (label folder, object label)
CLIPS = {
    "cholecseg8k_clip": ("masks_instruments", 1),
    "davis2016_blackswan": ("masks", 1),
}


def run_clip(clip: str, image_size: int, max_frames: int | None) -> dict:
    from sam2s_ros.data.frames import read_davis_sequence
    from sam2s_ros.evaluation import davis
    from sam2s_ros.evaluation.readout_baseline import ReadoutBaseline

    labels_dir, label = CLIPS[clip]
    seq = read_davis_sequence(SHARED / "data" / clip, max_frames=max_frames, labels_dir=labels_dir)
    gts = [lab == label for lab in seq.labels]
    ys, xs = np.nonzero(gts[0])
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    tracker = ReadoutBaseline(str(SHARED / "models" / "mobile_sam.pt"), image_size=image_size)
    preds = []
    start = time.perf_counter()
    for i, frame in enumerate(seq.frames):
        preds.append(tracker.track(frame, box if i == 0 else None))
    seconds = (time.perf_counter() - start) / len(seq.frames)
    ev = davis.evaluate_object(preds, gts)
    return {
        "frames": len(seq.frames),
        "J": ev.J.mean,
        "F": ev.F.mean,
        "J&F": ev.jf,
        "J_per_frame": [round(float(v), 4) for v in ev.j],
        "s_per_frame": seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--frames", type=int, default=None, help="first N frames of each clip (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()
    if not (SHARED / "models" / "mobile_sam.pt").is_file():
        print(f"needs {SHARED}/models/mobile_sam.pt and {SHARED}/data (../shared beside the repo)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    report = {"date": datetime.date.today().isoformat(), "image_size": args.image_size, "clips": {}}
    for clip in args.clips:
        report["clips"][clip] = res = run_clip(clip, args.image_size, args.frames)
        print(
            f"{clip} {args.image_size}: J&F {res['J&F']:.3f} (J {res['J']:.3f}, F {res['F']:.3f}), "
            f"{res['s_per_frame']:.2f} s/frame",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

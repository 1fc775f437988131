#!/usr/bin/env python3
"""Design probe for the sam2s_mobile memory keys, on DAVIS *train* sequences only.

The readout memory (sam2s_ros.model.readout) stores 63 key channels per cell, SAM 2's 64-channel
memory minus the value channel. This compares the training-free readout
(sam2s_ros.evaluation.readout_baseline) with the full 256-d MobileSAM embedding as keys against
63-d keys from a PCA of the L2-normalised embeddings (sam2s_ros.model.readout.fit_key_projection)
fitted on every 6th of the first 60 frames of all 13 davis2016_train sequences. Box prompt
from the ground truth on frame 0, nothing after, DAVIS J&F at source resolution (first and
last frame dropped). The evaluation clips (blackswan, CholecSeg8k) are never read.

Usage:
    .venv/bin/python benchmarks/readout_keys.py [--frames 40] [--image-size 512] [--threads 2] \
        [--sequences camel breakdance car-shadow dog goat drift-chicane]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "davis2016_train"
MOBILESAM = REPO.parent / "shared" / "models" / "mobile_sam.pt"
DEFAULT_SEQUENCES = ["camel", "breakdance", "car-shadow", "dog", "goat", "drift-chicane"]
#: PCA sample: every FIT_STRIDE-th of the first FIT_FRAMES frames of every training sequence
FIT_STRIDE, FIT_FRAMES = 6, 60


def embeddings(tracker, frames):
    import torch
    import torch.nn.functional as F

    s = tracker.image_size
    out = []
    with torch.inference_mode():
        for rgb in frames:
            x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float()
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
            out.append(tracker._encoder((x - tracker._mean) / tracker._std)[2][0].flatten(1).T)
    return torch.cat(out)


def score(tracker, sequences: dict) -> dict:
    from sam2s_ros.evaluation import davis

    res = {}
    for name, seq in sequences.items():
        gts = [lab > 0 for lab in seq.labels]
        ys, xs = np.nonzero(gts[0])
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        preds = [tracker.track(f, box if i == 0 else None) for i, f in enumerate(seq.frames)]
        res[name] = round(davis.evaluate_object(preds, gts).jf, 3)
    res["mean"] = round(float(np.mean(list(res.values()))), 4)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sequences", nargs="+", default=DEFAULT_SEQUENCES)
    args = ap.parse_args()
    if not TRAIN.is_dir() or not MOBILESAM.is_file():
        print(f"needs {TRAIN} and {MOBILESAM} (../shared beside the repo)", file=sys.stderr)
        return 2
    import torch

    from sam2s_ros.data.frames import read_davis_sequence
    from sam2s_ros.evaluation.readout_baseline import ReadoutBaseline
    from sam2s_ros.model.readout import fit_key_projection

    torch.set_num_threads(args.threads)
    tracker = ReadoutBaseline(str(MOBILESAM), image_size=args.image_size)
    fit = [read_davis_sequence(d, max_frames=FIT_FRAMES, labels_dir="masks") for d in sorted(TRAIN.iterdir())]
    basis, kept = fit_key_projection(embeddings(tracker, [f for s in fit for f in s.frames[::FIT_STRIDE]]))
    print(f"PCA keys: {basis.shape[1]} components keep {kept:.3f} of the variance", flush=True)
    seqs = {n: read_davis_sequence(TRAIN / n, max_frames=args.frames, labels_dir="masks") for n in args.sequences}
    for label, b in (("256-d embedding", None), (f"{basis.shape[1]}-d PCA keys", basis)):
        tracker.key_basis = b
        print(label, score(tracker, seqs), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

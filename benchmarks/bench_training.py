#!/usr/bin/env python3
"""Training throughput of ``sam2s train`` on CPU: seconds per optimiser step and clips per second.

sam2s_mobile initialised from MobileSAM, frozen image encoder with its feature cache filled
before timing (so the figures are the trainable part only), clips of 8 frames, batch 1, the
recipe of config/train/sam2s_mobile.yaml otherwise, on real DAVIS 2016 training frames
(../shared/data/davis2016_train). Each image size runs ``--warmup`` untimed steps, then
``--steps`` timed ones; the median is reported. One process with ``--threads`` torch threads
(the recipe runs two such processes under torchrun on a 2-core machine, which doubles the
clips per second when the machine is otherwise idle). Nothing is asserted.

Usage:
    .venv/bin/python benchmarks/bench_training.py --out /tmp/bench_training.json
    .venv/bin/python benchmarks/bench_training.py --sizes 256 --steps 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "config" / "train" / "sam2s_mobile.yaml"


def measure(size: int, steps: int, warmup: int, threads: int, cache_dir: str) -> dict:
    import torch

    from sam2s_ros.training.config import load_train_config
    from sam2s_ros.training.trainer import Trainer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = load_train_config(
            str(RECIPE),
            [
                f"image_size={size}",
                f"out_dir={out}",
                f"feature_cache={cache_dir}",
                f"num_threads={threads}",
                "data.val_sequences=[]",
                f"steps={steps + warmup}",
                "data.sources.0.sequences=[dog,camel]",
            ],
        )
        tr = Trainer(cfg, progress=False)
        t0 = time.perf_counter()
        tr.cache.fill(tr.train_seqs, progress=False)
        cache_s = time.perf_counter() - t0
        times = []
        for i in range(steps + warmup):
            t0 = time.perf_counter()
            tr.train_step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {
        "image_size": size,
        "s_per_step": round(s, 3),
        "clips_per_s": round(cfg.batch_size / s, 3),
        "clip_frames": cfg.data.clip_frames,
        "threads": threads,
        "timed_steps": steps,
        "cache_fill_s": round(cache_s, 1),
        "all_s": [round(t, 3) for t in times],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=str(REPO / "runs" / "feature_cache"), help="feature cache folder")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()
    rows = []
    for size in args.sizes:
        row = measure(size, args.steps, args.warmup, args.threads, args.cache)
        print(json.dumps(row))
        rows.append(row)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m": os.getloadavg()[0],
        "results": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Batched against per-instrument memory attention, paired frame by frame in one process (issue #17).

``memory_attention_batching: batched`` (the node default) gives the tracker one
memory-attention call with batch = instruments; ``per_instrument`` one call per instrument
on its own memory. Both give the same masks. This runs two trackers, one per mode, on the
same frames and prompts (SAM 2.1 setting of bench_backends.py: hiera-tiny, random weights
seed 0, real CholecSeg8k frames, DiveMem long-term memory off) and alternates them frame by
frame, the first of each pair switching every frame, so that a busy neighbour on a shared
machine slows both alike. Frames from ``--warmup + 1`` on are timed (the bank is full from
frame 7: 7196 memory tokens per instrument at 512²).

Run: ``.venv/bin/python benchmarks/bench_batching.py --impls torch onnxruntime``
(``--reduced`` for torch bfloat16 / onnxruntime int8). Prints, per implementation, the median
memory-attention stage and whole-frame seconds of each mode and batched ÷ per-instrument;
``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench_backends import DEFAULT_DATA, ensure_export, load_frames, make_prompts, tracker_config  # noqa: E402

MODES = ("batched", "per_instrument")


def run_pair(impl: str, args, frames, prompts) -> dict:
    """Track ``frames`` with one tracker per mode, alternating; per-mode lists of stage and frame seconds."""
    import torch

    from sam2s_ros.tracking.tracker import InstrumentTracker

    torch.set_num_threads(args.threads)
    onnx_dir = None
    if impl == "onnxruntime":
        onnx_dir = str(ensure_export(args.size, args.onnx_cache, False, False, int8=args.reduced))
    trackers = {
        mode: InstrumentTracker.from_config(
            tracker_config(args.size, impl, onnx_dir, "cpu", False, mode, reduced=args.reduced)
        )
        for mode in MODES
    }
    times = {mode: {"memory_attention": [], "frame": []} for mode in MODES}
    for i, frame in enumerate(frames):
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            t0 = time.perf_counter()
            result = trackers[mode].track(frame, prompts if i == 0 else [])
            dt = time.perf_counter() - t0
            if i > args.warmup:
                times[mode]["memory_attention"].append(result.timings["memory_attention"])
                times[mode]["frame"].append(dt)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impls", nargs="+", choices=("torch", "onnxruntime"), default=["torch", "onnxruntime"])
    ap.add_argument("--size", type=int, default=512, help="model input side (default 512)")
    ap.add_argument("--instruments", type=int, choices=(2, 3), default=3)
    ap.add_argument("--timed", type=int, default=10, help="timed frames per mode")
    ap.add_argument("--warmup", type=int, default=6, help="untimed frames after the prompt frame")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reduced", action="store_true", help="torch bfloat16 autocast, onnxruntime int8 graphs")
    ap.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    ap.add_argument("--onnx-cache", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "sam2s_bench_onnx")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()

    from sam2s_ros.allocator import tune_allocator

    tune_allocator()
    frames, gt0 = load_frames(args.data, args.warmup + 1 + args.timed)
    prompts, _ = make_prompts(gt0, args.instruments)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": {},
    }
    for impl in args.impls:
        times = run_pair(impl, args, frames, prompts)
        med = {mode: {k: statistics.median(v) for k, v in t.items()} for mode, t in times.items()}
        ratios = {k: med["batched"][k] / med["per_instrument"][k] for k in med["batched"]}
        report["results"][impl] = {"median_s": med, "batched_over_per_instrument": ratios, "raw_s": times}
        print(
            f"{impl:12s} memory attention: batched {med['batched']['memory_attention']:.3f} s, "
            f"per_instrument {med['per_instrument']['memory_attention']:.3f} s, "
            f"ratio {ratios['memory_attention']:.3f} | frame: batched {med['batched']['frame']:.3f} s, "
            f"per_instrument {med['per_instrument']['frame']:.3f} s, ratio {ratios['frame']:.3f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Issue #6 benchmark: per-frame time of our torch and onnxruntime backends and the official
SAM 2.1 video predictor on CPU, in one run.

Same weights (random hiera-tiny, seed 0; with --model-size sam2s_mobile ours runs the embedded
checkpoint), same real frames (../shared/data/cholecseg8k_clip),
same prompts on frame 0 (grasper click, tissue box, another click), tracker in the SAM 2.1
setting (long-term memory off, no hole filling; as test/test_tracker_parity.py):

* ``torch``        InstrumentTracker on the torch backend;
* ``onnxruntime``  InstrumentTracker on the onnxruntime backend (CPU EP, graphs exported by
                   this script into ``--onnx-cache`` unless already there);
* ``official``     sam2 1.1.0 ``SAM2VideoPredictor`` with our weights and our preprocessed
                   frames swapped into its state (sam2s_ros/evaluation/sam2_reference.py), hole filling off;
* ``tensorrt``     (``--device cuda`` only) InstrumentTracker on native TensorRT engines.
With ``--device cuda`` every implementation runs on the GPU (onnxruntime: TensorRT EP when
onnxruntime-gpu has it, else CUDA EP); ``--fp16`` selects fp16 graphs / engines.

Each (image size, instruments, implementation) runs in its own subprocess. Per frame: ours
is one ``track()`` call; official is the time between two frames yielded by
``propagate_in_video``. Steady state (issue #17): per-frame time rises while the memory bank
fills, so the timed median starts once the bank is full: after the prompt frame and
``--warmup`` frames (default 6: from frame 7 on both hold num_maskmem = 7 memory frames);
the early frames' median is reported separately. Both record the memory size that memory
attention saw on every frame (memory tokens per instrument: frames x h x w + 4 per object
pointer), and the table shows it for the first timed frame, so that equal sizes are
checked, not assumed. ``--reduced`` runs ours on the CPU's reduced-precision paths (torch
bfloat16 autocast, onnxruntime int8 graphs). Every child applies the package's malloc
tuning (sam2s_ros.allocator) unless ``--untuned-malloc``.
Nothing is asserted; the issue #6 targets (onnxruntime <= 0.6x torch and <= 0.5x official,
3 instruments) are printed next to the ratios. Before each run the script waits (bounded)
for the machine to be quiet and records the load average: other processes on a 2-core
machine make timings noisy; rerun when the recorded load is high.

Usage:
    .venv/bin/python benchmarks/bench_backends.py --out /tmp/bench_backends.json
    .venv/bin/python benchmarks/bench_backends.py --quick          # 256² only, a few frames
    .venv/bin/python benchmarks/bench_backends.py --sizes 1024 --timed 5 --warmup 2
    .venv/bin/python benchmarks/bench_backends.py --device cuda --impls torch onnxruntime tensorrt official --fp16
    .venv/bin/python benchmarks/bench_backends.py --sizes 512 --instruments 3 --reduced --timed 5   # bf16 / int8
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = pathlib.Path(os.environ.get("SAM2S_SHARED_DIR", REPO_ROOT.parent / "shared"))
DEFAULT_DATA = SHARED_DIR / "data" / "cholecseg8k_clip"
#: ours with --model-size sam2s_mobile runs the shipped embedded checkpoint (models/sam2s_mobile.md)
MOBILE_MODEL_SIZE = "sam2s_mobile"
EMBEDDED_CHECKPOINT = REPO_ROOT / "models" / "sam2s_mobile.safetensors"
IMPLS = ("torch", "onnxruntime", "official", "tensorrt")
CPU_IMPLS = ("torch", "onnxruntime", "official")  # the default; tensorrt needs --device cuda
RESULT_TAG = "BENCH_RESULT "
#: timed frames per image size (after the prompt frame and the warm-up frames)
DEFAULT_TIMED = {256: 8, 512: 10, 1024: 5}
QUICK = dict(sizes=[256], timed=3, warmup=1)
BOX = (120.0, 60.0, 420.0, 300.0)
OTHER_CLICK = (700.0, 150.0)
#: issue #6 targets (reported, never asserted): onnxruntime / other, 3 instruments
TARGETS = {"torch": 0.6, "official": 0.5}


# ---- inside a child ----------------------------------------------------------------------
def load_frames(data_dir: pathlib.Path, n: int):
    """``n`` RGB uint8 frames (the clip's frames cycled) and the frame-0 instrument labels."""
    from sam2s_ros.data import read_davis_sequence

    try:
        clip = read_davis_sequence(data_dir, n)
    except Exception as err:  # BagError: no frames there
        raise SystemExit(f"{err} (see --data)") from None
    return [clip.frames[i % len(clip.frames)] for i in range(n)], clip.labels[0]


def make_prompts(gt0, n_instruments: int):
    """(ours: [PromptInput], official: {obj_id: kwargs}) for frame 0."""
    import numpy as np

    from sam2s_ros.tracking.types import PromptInput, PromptMode

    ys, xs = np.nonzero(gt0 == 1)  # the grasper
    one = np.array([1], np.int32)
    official = {
        1: dict(points=np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32), labels=one),
        2: dict(box=np.array(BOX, np.float32)),
        3: dict(points=np.array([OTHER_CLICK], np.float32), labels=one),
    }
    official = {k: v for k, v in official.items() if k <= n_instruments}
    return [PromptInput(k, PromptMode.NEW, **v) for k, v in official.items()], official


def autocast_for(backend: str, fp16: bool, reduced: bool) -> str:
    """TrackerConfig.autocast_dtype of our ``backend``: float16 with --fp16 (CUDA); with --reduced
    the CPU's reduced-precision path (torch: bfloat16, onnxruntime: int8 graphs)."""
    if fp16:
        return "float16"
    if reduced:
        return "bfloat16" if backend == "torch" else "int8"
    return "none"


def model_weights(model_size: str) -> Optional[str]:
    """Checkpoint of ours for ``model_size``: the embedded file for sam2s_mobile, None (random, seed 0) else."""
    return str(EMBEDDED_CHECKPOINT) if model_size == MOBILE_MODEL_SIZE else None


def tracker_config(
    size: int,
    backend: str,
    onnx_dir: Optional[str],
    device: str,
    fp16: bool,
    batching: str,
    reduced: bool = False,
    model_size: str = "tiny",
):
    from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig

    checkpoint = model_weights(model_size)
    return TrackerConfig(
        model_size=model_size,
        image_size=size,
        checkpoint=checkpoint or "",
        allow_random_weights=checkpoint is None,
        seed=0,
        fill_hole_area=0,
        backend=backend,
        onnx_dir=onnx_dir,
        device=device,
        autocast_dtype=autocast_for(backend, fp16, reduced),
        memory_attention_batching=batching,
        divemem=DiveMemConfig(long_term_enabled=False),
    )


def run_ours(job: dict, frames, prompts, memory_tokens: list[int]) -> list[float]:
    """Per-frame seconds; ``memory_tokens`` gets the largest memory one instrument attended to per frame."""
    from sam2s_ros.tracking.tracker import InstrumentTracker

    cfg = tracker_config(
        job["size"],
        job["impl"],
        job["onnx_dir"],
        job["device"],
        job["fp16"],
        job["batching"],
        job["reduced"],
        job.get("model_size", "tiny"),
    )
    tracker = InstrumentTracker.from_config(cfg)
    backend, attend = tracker.backend, tracker.backend.attend_memory
    hw = (job["size"] // 16) ** 2

    def recording_attend(feats, memory):
        tokens = memory.mem_valid.sum(1) * hw + memory.ptr_valid.sum(1) * 4  # as SAM 2 splits a pointer
        memory_tokens[-1] = max(memory_tokens[-1], int(tokens.max()))
        return attend(feats, memory)

    backend.attend_memory = recording_attend
    times = []
    for i, frame in enumerate(frames):
        memory_tokens.append(0)
        t0 = time.perf_counter()
        result = tracker.track(frame, prompts if i == 0 else [])
        times.append(time.perf_counter() - t0)
        if i == 0 and len(result.instruments) != len(prompts):
            raise RuntimeError(f"prompts rejected: {result.rejected_prompts}")
    return times


def run_official(job: dict, frames, prompts: dict, memory_tokens: list[int]) -> list[float]:
    """Per-frame seconds; ``memory_tokens`` gets the memory length its memory attention saw per frame."""
    import torch

    from sam2s_ros.evaluation.sam2_reference import official_init_state, official_predictor
    from sam2s_ros.model.build import build_random_model

    predictor = official_predictor(build_random_model("tiny", job["size"], seed=0).state_dict(), job["size"])
    predictor = predictor.to(job["device"])  # its state follows the model's device
    seen = []
    predictor.memory_attention.register_forward_pre_hook(
        lambda _m, _args, kw: seen.append(int(kw["memory"].shape[0])), with_kwargs=True
    )
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp, torch.inference_mode():
        state = official_init_state(predictor, frames, pathlib.Path(tmp))
        t = time.perf_counter()
        for obj_id, kw in sorted(prompts.items()):
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, **kw)
        times = []
        for _, _, logits in predictor.propagate_in_video(state):
            # what ours hands the caller: host masks, plus host logits on the CPU (not on CUDA)
            _ = (logits[:, 0] > 0).cpu().numpy() if logits.is_cuda else logits[:, 0].float().numpy() > 0
            memory_tokens.append(max(seen, default=0))
            seen.clear()
            now = time.perf_counter()
            times.append(now - t)
            t = now
    return times


def child_main(job: dict) -> None:
    """Run one configuration; print its result as one tagged JSON line."""
    import torch

    from sam2s_ros.allocator import DISABLE_ENV, tune_allocator

    if job.get("untuned_malloc"):
        os.environ[DISABLE_ENV] = "0"
    malloc = tune_allocator()
    torch.set_num_threads(job["threads"])
    frames, gt0 = load_frames(pathlib.Path(job["data"]), 1 + job["warmup"] + job["timed"])
    ours, official = make_prompts(gt0, job["instruments"])
    load_before = os.getloadavg()[0]
    tokens: list[int] = []
    if job["impl"] == "official":
        times = run_official(job, frames, official, tokens)
    else:
        times = run_ours(job, frames, ours, tokens)
    timed, early = times[1 + job["warmup"] :], times[1 : 1 + job["warmup"]]
    print(
        RESULT_TAG
        + json.dumps(
            {
                **job,
                "frame_times_s": times,
                "median_s": statistics.median(timed),
                "min_s": min(timed),
                "early_median_s": statistics.median(early) if early else None,
                "memory_tokens": tokens,
                "first_timed_memory_tokens": tokens[1 + job["warmup"]],
                "malloc": malloc,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            }
        ),
        flush=True,
    )


# ---- parent -------------------------------------------------------------------------------
def export_fits(out: pathlib.Path, size: int, model_size: str, checkpoint: Optional[str], weights: str) -> bool:
    """True when ``out`` holds graphs of this model, size and checkpoint file (the backends'
    own identity check, sam2s_ros.backends.graph.check_export)."""
    from sam2s_ros.backends.graph import check_export
    from sam2s_ros.errors import BackendError
    from sam2s_ros.model.checkpoint import file_sha256

    try:
        check_export(out, size, model_size, file_sha256(str(checkpoint)) if checkpoint else "", weights)
    except BackendError:
        return False
    return True


def ensure_export(
    size: int, cache: pathlib.Path, fp16: bool, engines: bool, int8: bool = False, model_size: str = "tiny"
) -> pathlib.Path:
    """Graphs (and TensorRT engines) of ``model_size`` (:func:`model_weights`) at ``size`` in ``cache``."""
    out = cache / f"{model_size}_{size}"
    checkpoint = model_weights(model_size)
    weights = f"checkpoint {checkpoint}" if checkpoint else "random weights (seed 0)"
    fresh = export_fits(out, size, model_size, checkpoint, weights)
    missing = (fp16 and not (out / "image_encoder.fp16.onnx").is_file()) or (
        int8 and not (out / "image_encoder.int8.onnx").is_file()
    )
    if not fresh or missing:
        from sam2s_ros.export.onnx_export import ExportOptions, export_onnx

        t0 = time.perf_counter()
        export_onnx(
            ExportOptions(
                out_dir=out,
                model_size=model_size,
                image_size=size,
                checkpoint=checkpoint,
                random_weights=checkpoint is None,
                fp16=fp16,
                int8=int8,
                force=True,
            )
        )
        print(f"exported {size}² graphs to {out} in {time.perf_counter() - t0:.0f} s", flush=True)
    if engines:
        from sam2s_ros.export.tensorrt_build import BuildOptions, build_engines

        t0 = time.perf_counter()
        build_engines(BuildOptions(onnx_dir=out, fp16=fp16, force=True))
        print(f"built {size}² TensorRT engines in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def wait_until_quiet(max_busy_pct: float, max_wait_s: float) -> float:
    """Wait (at most ``max_wait_s``) until the machine's CPU use is below ``max_busy_pct`` %; seconds waited."""
    import psutil

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s and psutil.cpu_percent(interval=2.0) >= max_busy_pct:
        pass
    return time.perf_counter() - t0


def run_child(job: dict) -> dict:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)], env=env, capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    raise RuntimeError(f"child {job} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a and b else None


def summarize(rows: list[dict]) -> list[dict]:
    """Per (size, instruments): medians of the three implementations and the ratios."""
    out = []
    for key in sorted({(r["size"], r["instruments"]) for r in rows}):
        mine = [r for r in rows if (r["size"], r["instruments"]) == key]
        med = {r["impl"]: r["median_s"] for r in mine}
        s = {
            "size": key[0],
            "instruments": key[1],
            **{f"{k}_s": med.get(k) for k in IMPLS},
            **{f"{r['impl']}_early_s": r.get("early_median_s") for r in mine},
            **{f"{r['impl']}_memory_tokens": r.get("first_timed_memory_tokens") for r in mine},
            "ort_vs_torch": ratio(med.get("onnxruntime"), med.get("torch")),
            "ort_vs_official": ratio(med.get("onnxruntime"), med.get("official")),
            "trt_vs_torch": ratio(med.get("tensorrt"), med.get("torch")),
        }
        if key[1] == 3:
            s["meets_target_vs_torch"] = s["ort_vs_torch"] is not None and s["ort_vs_torch"] <= TARGETS["torch"]
            s["meets_target_vs_official"] = (
                s["ort_vs_official"] is not None and s["ort_vs_official"] <= TARGETS["official"]
            )
        out.append(s)
    return out


def table(summary: list[dict]) -> str:
    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    trt = any(s["tensorrt_s"] is not None for s in summary)
    lines = [
        "| size | instruments | torch s/frame | onnxruntime s/frame | official s/frame | ORT/torch | "
        "ORT/official |" + (" tensorrt s/frame | TRT/torch |" if trt else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if trt else ""),
    ]
    for s in summary:
        extra = f" {f(s['tensorrt_s'])} | {f(s['trt_vs_torch'], '.2f')} |" if trt else ""
        lines.append(
            f"| {s['size']}² | {s['instruments']} | {f(s['torch_s'])} | {f(s['onnxruntime_s'])} | "
            f"{f(s['official_s'])} | {f(s['ort_vs_torch'], '.2f')} | {f(s['ort_vs_official'], '.2f')} |" + extra
        )
    lines.append(f"targets (3 instruments): ORT/torch <= {TARGETS['torch']}, ORT/official <= {TARGETS['official']}")
    lines += ["", "| size | instruments | implementation | early frames s/frame | memory tokens (first timed frame) |"]
    lines.append("|---|---|---|---|---|")
    for s in summary:
        for impl in IMPLS:
            if s.get(f"{impl}_s") is not None:
                lines.append(
                    f"| {s['size']}² | {s['instruments']} | {impl} | {f(s.get(f'{impl}_early_s'))} | "
                    f"{s.get(f'{impl}_memory_tokens')} |"
                )
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__[__doc__.index("Usage:") :],
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="image sizes (default 512 1024)")
    p.add_argument(
        "--instruments", type=int, nargs="+", default=[1, 3], choices=[1, 2, 3], help="instrument counts (default 1 3)"
    )
    p.add_argument(
        "--impls",
        nargs="+",
        default=list(CPU_IMPLS),
        choices=IMPLS,
        help=f"implementations (default {' '.join(CPU_IMPLS)})",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] for every implementation (default cpu)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="fp16 graphs / engines for onnxruntime and tensorrt, float16 autocast for torch (cuda)",
    )
    p.add_argument("--timed", type=int, help=f"timed frames (default per size: {DEFAULT_TIMED})")
    p.add_argument(
        "--warmup",
        type=int,
        default=6,
        help="early frames after the prompt frame, reported apart (default 6: the bank is full from frame 7)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads (default 2)")
    p.add_argument(
        "--model-size",
        default="tiny",
        choices=["tiny", MOBILE_MODEL_SIZE],
        help="ours: tiny (random weights, seed 0) or sam2s_mobile (the embedded checkpoint models/"
        "sam2s_mobile.safetensors); the official predictor always runs SAM 2.1 tiny (random, seed 0)",
    )
    sys.path.insert(0, str(REPO_ROOT))
    from sam2s_ros.tracking.config import MEMORY_ATTENTION_BATCHING, TrackerConfig

    p.add_argument(
        "--batching",
        default=TrackerConfig.memory_attention_batching,
        choices=MEMORY_ATTENTION_BATCHING,
        help="memory_attention_batching of our tracker (default %(default)s, the node default)",
    )
    p.add_argument(
        "--reduced",
        action="store_true",
        help="ours on the CPU reduced-precision paths: torch bfloat16 autocast, onnxruntime int8 graphs",
    )
    p.add_argument(
        "--untuned-malloc",
        action="store_true",
        help="leave glibc malloc at its defaults (SAM2S_MALLOC_TUNING=0) to measure the allocator's effect",
    )
    p.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help=f"clip folder (default {DEFAULT_DATA})")
    p.add_argument(
        "--onnx-cache",
        type=pathlib.Path,
        default=pathlib.Path(tempfile.gettempdir()) / "sam2s_bench_onnx",
        help="where the exported graphs are kept between runs (default %(default)s)",
    )
    p.add_argument(
        "--quiet-cpu",
        type=float,
        default=25.0,
        help="before each run wait until the machine's CPU use is below this %% (default %(default)s)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=90.0,
        help="longest wait for a quiet machine in seconds, 0 = no wait (default %(default)s)",
    )
    p.add_argument("--out", type=pathlib.Path, help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.warmup = QUICK["sizes"], QUICK["warmup"]
        args.timed = args.timed or QUICK["timed"]
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    sys.path.insert(0, str(REPO_ROOT))
    rows = []
    for size in args.sizes:
        needs_graphs = {"onnxruntime", "tensorrt"} & set(args.impls)
        onnx_dir = (
            ensure_export(size, args.onnx_cache, args.fp16, "tensorrt" in args.impls, args.reduced, args.model_size)
            if needs_graphs
            else None
        )
        for n in args.instruments:
            for impl in args.impls:
                job = dict(
                    impl=impl,
                    size=size,
                    instruments=n,
                    threads=args.threads,
                    warmup=args.warmup,
                    device=args.device,
                    fp16=args.fp16 and impl != "official",
                    timed=args.timed or DEFAULT_TIMED.get(size, 5),
                    data=str(args.data),
                    onnx_dir=str(onnx_dir) if onnx_dir else None,
                    batching=args.batching,
                    reduced=args.reduced and impl != "official",
                    untuned_malloc=args.untuned_malloc,
                    model_size=args.model_size if impl != "official" else "tiny",
                )
                waited = wait_until_quiet(args.quiet_cpu, args.quiet_wait) if args.quiet_wait > 0 else 0.0
                r = {**run_child(job), "waited_for_quiet_s": round(waited, 1)}
                print(
                    f"{size}² {n} instrument(s) {impl:12s} median {r['median_s']:.3f} s/frame "
                    f"(early frames {r['early_median_s'] or 0:.3f}; memory tokens per frame {r['memory_tokens']}) "
                    f"(min {r['min_s']:.3f}, load {r['load_before']:.1f}->{r['load_after']:.1f}, "
                    f"waited {waited:.0f} s for a quiet machine)",
                    flush=True,
                )
                rows.append(r)
    summary = summarize(rows)
    if args.reduced:
        print("ours on the reduced-precision paths: torch = bfloat16 autocast, onnxruntime = int8 graphs")
    print(table(summary))
    if args.out:
        info = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        }
        args.out.write_text(json.dumps({"machine": info, "summary": summary, "runs": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

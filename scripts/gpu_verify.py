#!/usr/bin/env python3
"""GPU checks of issue #14 as one table (check, result, figure); run by scripts/gpu_verify.sh.

Per image size (default 512 and 1024): export hiera-tiny (random weights, seed 0), build
native TensorRT fp16 engines (build time), then one subprocess per implementation
(isolated GPU memory, its own timeout) tracks the CholecSeg8k clip with 1 and with 3
instruments (prompts on frame 0, as benchmarks/bench_backends.py):

  torch_fp32, torch_bf16   torch backend, autocast none / bfloat16
  ort_cuda_fp32            onnxruntime, CUDA EP, fp32 graphs
  ort_trt_fp16             onnxruntime, TensorRT EP, fp16 engines (built at warm-up)
  trt_fp16                 native TensorRT fp16 engines

Rows: frames per second (median frame time, prompt frame and warm-up frames excluded);
peak GPU memory of the process (device memory in use, NVML-free: cudaMemGetInfo);
warm-up / engine build seconds; parity against torch_fp32 on the clip with 3 instruments
at the smallest size: fp32 runtimes must give the same masks (>= MIN_AGREEMENT of the
pixels), fp16 ones a mean IoU >= MIN_FP16_IOU. FPS targets (issue #14, SAM 2.1 tiny at
1024², A6000-class GPU): native TensorRT fp16 >= 100 FPS with 1 instrument and >= 60 with 3.
Any FAIL (or a step out of time) makes the exit status 1.

Usage: .venv/bin/python scripts/gpu_verify.py [--sizes 512 1024] [--budget-s 420] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

IMPLS = ("torch_fp32", "torch_bf16", "ort_cuda_fp32", "ort_trt_fp16", "trt_fp16")
FP32_IMPLS = ("ort_cuda_fp32",)
MIN_AGREEMENT = 0.999  # fraction of equal mask pixels, fp32 runtimes vs torch fp32
MIN_FP16_IOU = 0.90  # mean per-instrument IoU, fp16 runtimes vs torch fp32 (random weights: provisional)
FPS_TARGETS = {("trt_fp16", 1024, 1): 100.0, ("trt_fp16", 1024, 3): 60.0}
WARMUP_FRAMES, TIMED_FRAMES = 5, 30
TAG = "GPU_VERIFY_RESULT "


# ---- child: one implementation at one size ------------------------------------------------------
def child(job: dict) -> dict:
    import numpy as np
    import torch
    from bench_backends import load_frames, make_prompts

    from sam2s_ros.backends import create_backend
    from sam2s_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam2s_ros.export.contract import profile_dims_for
    from sam2s_ros.model.loader import load_model
    from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker

    impl, size = job["impl"], job["size"]
    backend_name = {"torch": "torch", "ort": "onnxruntime", "trt": "tensorrt"}[impl.split("_")[0]]
    autocast = {"torch_bf16": "bfloat16", "trt_fp16": "float16"}.get(impl, "none")
    cfg = TrackerConfig(
        model_size="tiny",
        image_size=size,
        allow_random_weights=True,
        seed=0,
        backend=backend_name,
        device="cuda",
        autocast_dtype=autocast,
        onnx_dir=job["onnx_dir"],
        divemem=DiveMemConfig(long_term_enabled=False),
    )
    free0, total = torch.cuda.mem_get_info()
    model = load_model(cfg)
    t0 = time.perf_counter()
    if impl.startswith("ort_"):
        provider, precision = ("cuda", "fp32") if impl == "ort_cuda_fp32" else ("tensorrt", "fp16")
        backend = OnnxRuntimeBackend(
            job["onnx_dir"],
            size,
            "tiny",
            device="cuda",
            precision=precision,
            provider=provider,
            checkpoint_sha256=model.checkpoint_sha256,
            weights=model.weights,
            profile_dims=profile_dims_for(cfg),
        )
        backend.warmup()
    else:
        backend = create_backend(cfg, model)
    start_s = time.perf_counter() - t0
    tracker = InstrumentTracker(backend, cfg, model.semantic_head, model.weights, model.checkpoint_sha256)
    frames, gt0 = load_frames(pathlib.Path(job["data"]), WARMUP_FRAMES + TIMED_FRAMES + 1)
    out = {"impl": impl, "size": size, "start_s": start_s, "fps": {}, "masks": None}
    used_peak = total - free0
    for n in (1, 3):
        tracker.reset()
        prompts, _ = make_prompts(gt0, n)
        times, masks = [], []
        for i, frame in enumerate(frames):
            t = time.perf_counter()
            result = tracker.track(frame, prompts if i == 0 else [])
            times.append(time.perf_counter() - t)
            if n == 3 and job["keep_masks"]:
                masks.append(np.stack([r.mask for r in sorted(result.instruments, key=lambda r: r.instrument_id)]))
        used_peak = max(used_peak, total - torch.cuda.mem_get_info()[0])
        out["fps"][n] = 1.0 / statistics.median(times[1 + WARMUP_FRAMES :])
        if masks:
            path = pathlib.Path(job["out"]) / f"masks_{impl}_{size}.npz"
            np.savez_compressed(path, masks=np.packbits(np.stack(masks).astype(bool), axis=-1))
            out["masks"] = str(path)
    out["peak_mem_mib"] = (used_peak - (total - free0)) / 2**20
    out["warmup_s"] = getattr(backend, "warmup_seconds", None)
    return out


# ---- parent ---------------------------------------------------------------------------------------
class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, check: str, ok, figure: str) -> None:
        result = "INFO" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append((check, result, figure))
        print(f"[gpu_verify] {check}: {result} {figure}", flush=True)

    @property
    def failed(self) -> bool:
        return any(r == "FAIL" for _, r, _ in self.rows)

    def render(self) -> str:
        w = [max(len(r[i]) for r in self.rows + [("check", "result", "figure")]) for i in range(3)]
        line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
        return "\n".join(
            [line(("check", "result", "figure")), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
            + [line(r) for r in self.rows]
        )


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def run_timed(cmd: list[str], timeout: float, log: pathlib.Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), env=env)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, text = 124, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}{exc.stderr or ''}"
    log.write_text(text if isinstance(text, str) else str(text))
    return rc, text, time.perf_counter() - t0


def mask_parity(ref_path: str, path: str) -> tuple[float, float]:
    """(pixel agreement, mean IoU) of two runs' masks."""
    import numpy as np

    a = np.load(ref_path)["masks"]
    b = np.load(path)["masks"]
    if a.shape != b.shape:
        return 0.0, 0.0
    a, b = np.unpackbits(a, axis=-1).astype(bool), np.unpackbits(b, axis=-1).astype(bool)
    agreement = float((a == b).mean())
    inter = (a & b).sum(axis=(-2, -1))
    union = (a | b).sum(axis=(-2, -1))
    iou = float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())
    return agreement, iou


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of all checks")
    p.add_argument("--out", type=pathlib.Path, default=REPO / "gpu_verify")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cholecseg8k_clip"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(TAG + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    deadline = time.monotonic() + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    table = Table()
    if not pathlib.Path(args.data, "frames").is_dir():
        table.add("CholecSeg8k clip", False, f"{args.data}/frames missing (set SAM2S_DATA)")
        print(table.render())
        return 1
    py = sys.executable
    # exports of all sizes in parallel (CPU work), then engine builds one size at a time (GPU)
    exports = {}
    for size in args.sizes:
        d = args.out / "onnx" / f"tiny_{size}"
        cmd = [py, "-m", "sam2s_ros.tools.cli", "export", "--model-size", "tiny", "--image-size", str(size)]
        cmd += ["--random-weights", "--out", str(d), "--force"]
        log = (args.out / f"export_{size}.log").open("w")
        exports[size] = (
            d,
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO))),
            time.perf_counter(),
        )
    for size, (d, proc, t0) in exports.items():
        try:
            rc = proc.wait(timeout=max(remaining(deadline) - 120, 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = 124
        table.add(f"export {size}² (fp32 graphs)", rc == 0, f"{time.perf_counter() - t0:.0f} s (rc {rc})")
    results: dict[tuple[str, int], dict] = {}
    for size in args.sizes:
        d = exports[size][0]
        if "trt_fp16" in args.impls:
            code = (
                "from sam2s_ros.export.tensorrt_build import BuildOptions, build_engines;"
                f"build_engines(BuildOptions(onnx_dir={str(d)!r}, fp16=True, force=True))"
            )
            rc, _, secs = run_timed([py, "-c", code], remaining(deadline) - 60, args.out / f"engines_{size}.log")
            table.add(f"TensorRT fp16 engine build {size}²", rc == 0, f"{secs:.0f} s for 6 engines (rc {rc})")
        for impl in args.impls:
            left = remaining(deadline)
            if left < 20:
                table.add(f"{impl} {size}²", False, "not run: out of the time budget")
                continue
            job = dict(impl=impl, size=size, onnx_dir=str(d), data=args.data, out=str(args.out))
            job["keep_masks"] = size == min(args.sizes)
            rc, text, secs = run_timed(
                [py, __file__, "--child", json.dumps(job)], min(left, 240), args.out / f"run_{impl}_{size}.log"
            )
            line = next((x for x in text.splitlines() if x.startswith(TAG)), None)
            if rc != 0 or line is None:
                table.add(
                    f"{impl} {size}²", False, f"rc {rc}: {text.strip().splitlines()[-1][:120] if text.strip() else ''}"
                )
                continue
            r = json.loads(line[len(TAG) :])
            results[(impl, size)] = r
            for n in (1, 3):
                fps = r["fps"][str(n)]
                target = FPS_TARGETS.get((impl, size, n))
                ok = None if target is None else fps >= target
                extra = f" (target >= {target:.0f})" if target else ""
                table.add(f"FPS {impl} {size}² {n} instr.", ok, f"{fps:.1f}{extra}")
            table.add(f"peak GPU memory {impl} {size}²", None, f"{r['peak_mem_mib']:.0f} MiB")
            if r.get("warmup_s") is not None:
                table.add(f"warm-up {impl} {size}²", None, f"{r['warmup_s']:.1f} s (start {r['start_s']:.1f} s)")
    size = min(args.sizes)
    ref = results.get(("torch_fp32", size))
    for impl in args.impls:
        if impl == "torch_fp32":
            continue
        r = results.get((impl, size))
        if ref is None or r is None or not r.get("masks"):
            table.add(f"parity {impl} vs torch_fp32 {size}²", False, "no masks (run failed)")
            continue
        agreement, iou = mask_parity(ref["masks"], r["masks"])
        if impl in FP32_IMPLS:
            table.add(
                f"masks equal {impl} vs torch_fp32 ({size}², clip, 3 instr.)",
                agreement >= MIN_AGREEMENT,
                f"{agreement:.5f} of pixels equal (>= {MIN_AGREEMENT})",
            )
        else:
            table.add(
                f"parity {impl} vs torch_fp32 ({size}², clip, 3 instr.)",
                iou >= MIN_FP16_IOU,
                f"mean IoU {iou:.4f} (>= {MIN_FP16_IOU}), {agreement:.5f} of pixels equal",
            )
    text = table.render()
    print(text)
    (args.out / "table.md").write_text(text + "\n")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())

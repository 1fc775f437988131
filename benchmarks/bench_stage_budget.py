#!/usr/bin/env python3
"""Issue #17: per-stage CPU time budget beside each stage's physical floor.

For each image size and instrument count, in one process (so that every row of one
configuration sees the same machine load):

* **FLOPs per stage** (image encoder, memory attention, mask decoder, memory encoder) with a
  full SAM 2.1 memory bank (``num_maskmem`` 7 memory frames and 16 object pointers per
  instrument): torch's ``FlopCounterMode`` on the torch stage modules, plus
  ``scaled_dot_product_attention`` (4·B·H·Lq·Lk·D), which it does not count on CPU.
* **Peak GEMM throughput** of each runtime and precision on this CPU: a 1024³ GEMM (best of
  ``--reps``), torch fp32 / bf16 (oneDNN), onnxruntime fp32 ``MatMul`` / int8
  ``DynamicQuantizeMatMul`` (the op the int8 graphs run after fusion).
* **Stage time** (median of ``--reps``) for torch fp32, torch bf16 autocast, onnxruntime fp32
  and onnxruntime int8, and the **floor** = FLOPs ÷ peak of that runtime and precision; the
  ratio time ÷ floor says how far a stage is from the GEMM limit.
* **Node overhead** at ``--node-hw`` (default 1280×1024): one frame from an rclpy ``Image``
  message in (``image_msg_to_rgb``) through ``track()`` to the output messages
  (``masks_msg``, ``classes_msg``, ``label_image_msg``), minus the model stages' time (the
  frame's resize to the model input counts as overhead, and is also reported alone);
  DDS transport is not included (measured in process, torch fp32). ``--node-model random``
  (default): random hiera-tiny weights and random frames, whose masks cover most of the frame
  (worst case); ``embedded``: the shipped sam2s_mobile on real CholecSeg8k frames resized to
  ``--node-hw``, masks of realistic size.

Random hiera-tiny weights (seed 0); ``--threads`` torch / onnxruntime threads (default 1).
Graphs are exported into ``--onnx-cache`` (fp32 + int8) unless there.

Usage:
    .venv/bin/python benchmarks/bench_stage_budget.py --sizes 512 --instruments 1 3 --out /tmp/budget.json
    .venv/bin/python benchmarks/bench_stage_budget.py --sizes 512 1024 --instruments 1 3 --threads 2
    .venv/bin/python benchmarks/bench_stage_budget.py --node-only --node-model embedded --instruments 3 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
#: (runtime, precision) -> TrackerConfig overrides
RUNTIMES = {
    ("torch", "fp32"): dict(backend="torch"),
    ("torch", "bf16"): dict(backend="torch", autocast_dtype="bfloat16"),
    ("onnxruntime", "fp32"): dict(backend="onnxruntime"),
    ("onnxruntime", "int8"): dict(backend="onnxruntime", autocast_dtype="int8"),
}
MEM_FRAMES, OBJ_PTRS, GEMM_N = 7, 16, 1024


def _timed(fn, reps: int) -> list[float]:
    """Seconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _best(fn, reps: int) -> float:
    return min(_timed(fn, reps))


def gemm_peaks(threads: int, reps: int) -> dict[str, float]:
    """GFLOP/s of a GEMM_N³ GEMM per runtime and precision (best of ``reps``)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    flops, peaks = 2 * GEMM_N**3, {}
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    for name, dt in (("torch fp32", torch.float32), ("torch bf16", torch.bfloat16)):
        x, y = a.to(dt), b.to(dt)
        peaks[name] = flops / _best(lambda: x @ y, reps) / 1e9

    def session(nodes, inputs, inits):
        graph = helper.make_graph(
            nodes, "g", inputs, [helper.make_tensor_value_info("C", TensorProto.FLOAT, [GEMM_N, GEMM_N])], inits
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    a_in = helper.make_tensor_value_info("A", TensorProto.FLOAT, [GEMM_N, GEMM_N])
    w = numpy_helper.from_array(b.numpy(), "W")
    s32 = session([helper.make_node("MatMul", ["A", "W"], ["C"])], [a_in], [w])
    an = a.numpy()
    peaks["onnxruntime fp32"] = flops / _best(lambda: s32.run(None, {"A": an}), reps) / 1e9
    # the int8 graphs' pattern (DynamicQuantizeLinear + MatMulInteger + scale), fused by onnxruntime
    wq = numpy_helper.from_array(np.random.randint(-127, 127, (GEMM_N, GEMM_N), dtype=np.int8), "Wq")
    ws = numpy_helper.from_array(np.full([GEMM_N], 0.01, np.float32), "Ws")
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["A"], ["Aq", "As", "Az"]),
        helper.make_node("MatMulInteger", ["Aq", "Wq", "Az"], ["Ci"]),
        helper.make_node("Cast", ["Ci"], ["Cf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["As", "Ws"], ["S"]),
        helper.make_node("Mul", ["Cf", "S"], ["C"]),
    ]
    s8 = session(nodes, [a_in], [wq, ws])
    peaks["onnxruntime int8"] = flops / _best(lambda: s8.run(None, {"A": an}), reps) / 1e9
    return peaks


@contextlib.contextmanager
def count_flops():
    """FlopCounterMode plus scaled_dot_product_attention (not counted by torch on CPU); yields a dict."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    extra = {"sdpa": 0}
    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, *args, **kw):
        extra["sdpa"] += 4 * q.numel() // q.shape[-1] * k.shape[-2] * q.shape[-1]
        return original(q, k, v, *args, **kw)

    F.scaled_dot_product_attention = sdpa
    counter = FlopCounterMode(display=False)
    out = {}
    try:
        with counter, torch.inference_mode():
            yield out
    finally:
        F.scaled_dot_product_attention = original
        out["flops"] = counter.get_total_flops() + extra["sdpa"]


def stage_inputs(backend, size: int, b: int):
    """Steady-state inputs: features of one frame, a full memory bank per instrument."""
    import torch

    from sam2s_ros.backends.base import MemoryInputs

    gen = torch.Generator().manual_seed(0)
    hw = size // 16
    image = torch.randn(1, 3, size, size, generator=gen)
    memory = MemoryInputs(
        torch.randn(b, MEM_FRAMES, 64, hw, hw, generator=gen),
        torch.arange(MEM_FRAMES).repeat(b, 1),
        torch.ones(b, MEM_FRAMES, dtype=torch.bool),
        torch.randn(b, OBJ_PTRS, 256, generator=gen),
        torch.arange(float(OBJ_PTRS)).repeat(b, 1),
        torch.ones(b, OBJ_PTRS, dtype=torch.bool),
    )
    coords, labels = torch.zeros(b, 1, 2), -torch.ones(b, 1, dtype=torch.int32)  # tracking: padding point only
    mask = torch.zeros(b, 1, size, size)
    mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1
    return image, memory, coords, labels, mask


def stage_calls(backend, size: int, b: int) -> dict:
    import torch

    image, memory, coords, labels, mask = stage_inputs(backend, size, b)
    feats = backend.encode_image(image)
    pix = backend.attend_memory(feats, memory).pix_feat
    return {
        "image_encoder": lambda: backend.encode_image(image),
        "memory_attention": lambda: backend.attend_memory(feats, memory),
        "mask_decoder": lambda: backend.decode_masks(pix, feats, coords, labels, None, False),
        "memory_encoder": lambda: backend.encode_memory(feats, mask, torch.ones(b)),
    }


def median_time(fn, reps: int) -> float:
    return statistics.median(_timed(fn, reps))


#: CholecSeg8k class ids (masks_classid) whose frame-0 boxes are the 3 "instruments" of the
#: real-frame node-overhead run: 31 the grasper, 22 and 13 two small structures (a few % of the frame)
NODE_REAL_CLASSES = (31, 22, 13)


def node_inputs_random(size: int, b: int, hw: tuple[int, int], frames: int):
    """Random hiera-tiny weights on random frames: masks cover most of the frame (worst case)."""
    import numpy as np

    from sam2s_ros.tracking.config import TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker

    tracker = InstrumentTracker.from_config(
        TrackerConfig(model_size="tiny", image_size=size, allow_random_weights=True, seed=0)
    )
    h, w = hw
    rng = np.random.default_rng(0)
    boxes = [(w * (0.1 + 0.25 * i), h * 0.2, w * (0.3 + 0.25 * i), h * 0.6) for i in range(b)]
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(frames)]
    return tracker, images, boxes


def node_inputs_real(b: int, hw: tuple[int, int], frames: int):
    """The embedded sam2s_mobile checkpoint (512²) on real CholecSeg8k frames resized to ``hw``,
    boxes of NODE_REAL_CLASSES on frame 0: masks of realistic size."""
    import cv2
    import numpy as np

    from sam2s_ros.data import read_davis_sequence
    from sam2s_ros.tracking.config import MOBILE_MODEL, TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker

    tracker = InstrumentTracker.from_config(
        TrackerConfig(
            model_size=MOBILE_MODEL, image_size=512, checkpoint=str(REPO / "models" / "sam2s_mobile.safetensors")
        )
    )
    h, w = hw
    clip = read_davis_sequence(REPO.parent / "shared" / "data" / "cholecseg8k_clip", frames, labels_dir="masks_classid")
    images = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in clip.frames]
    sy, sx = h / clip.frames[0].shape[0], w / clip.frames[0].shape[1]
    boxes = []
    for cls in NODE_REAL_CLASSES[:b]:
        ys, xs = np.nonzero(clip.labels[0] == cls)
        boxes.append((xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy))
    return tracker, images, boxes


def node_overhead(tracker, images: list, boxes: list) -> dict:
    """Median per-frame node work outside the model: message in -> track() -> messages out, minus stages.

    Args:
        tracker: an InstrumentTracker. images: [H, W, 3] uint8 RGB frames. boxes: xyxy source
            pixels, one instrument each, prompted on the first frame.
    """
    import numpy as np

    from sam2s_ros.codec import classes_msg, image_msg, image_msg_to_rgb, label_image_msg, make_header, masks_msg
    from sam2s_ros.tracking.types import PromptInput, PromptMode

    prompts = [PromptInput(i + 1, PromptMode.NEW, box=np.array(bx, np.float32)) for i, bx in enumerate(boxes)]
    header = make_header(0, "camera")
    overhead, preprocess, total, area = [], [], [], []
    for i, image in enumerate(images):
        msg = image_msg(image, "rgb8", header)
        t0 = time.perf_counter()
        rgb = image_msg_to_rgb(msg, (4096, 4096))
        result = tracker.track(rgb, prompts if i == 0 else [])
        masks_msg(result, header, 0.0, True)
        classes_msg(result, header)
        label_image_msg(result, header, "mono8")
        dt = time.perf_counter() - t0
        model = sum(result.timings.get(s, 0.0) for s in STAGES)
        if i > MEM_FRAMES:
            overhead.append(dt - model)
            preprocess.append(result.timings["preprocess"])
            total.append(dt)
            area.append(float(np.mean([r.mask.mean() for r in result.instruments])))
    return {
        "median_overhead_s": statistics.median(overhead),
        "median_preprocess_s": statistics.median(preprocess),  # part of the overhead
        "median_frame_s": statistics.median(total),
        "mean_mask_fraction": float(np.mean(area)),
    }


def measure_node(args) -> dict:
    b, hw = max(args.instruments), tuple(args.node_hw)
    if args.node_model == "embedded":
        node = node_overhead(*node_inputs_real(b, hw, args.node_frames))
    else:
        node = node_overhead(*node_inputs_random(args.sizes[0], b, hw, args.node_frames))
    print(f"node overhead ({args.node_model} model): " + json.dumps(node), flush=True)
    return node


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--instruments", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--node-hw", type=int, nargs=2, default=[1024, 1280], metavar=("H", "W"))
    ap.add_argument("--node-frames", type=int, default=12, help="frames for the node overhead (steady after 8)")
    ap.add_argument(
        "--node-model",
        choices=("random", "embedded"),
        default="random",
        help="node overhead with random hiera-tiny weights on random frames (masks cover the frame) or with "
        "the embedded sam2s_mobile on real CholecSeg8k frames resized to --node-hw (realistic masks)",
    )
    ap.add_argument("--node-only", action="store_true", help="measure the node overhead only")
    ap.add_argument("--onnx-cache", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "sam2s_budget")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from sam2s_ros.allocator import tune_allocator
    from sam2s_ros.backends import create_backend
    from sam2s_ros.export.onnx_export import ExportOptions, export_onnx
    from sam2s_ros.model.loader import load_model
    from sam2s_ros.tracking.config import TrackerConfig

    applied = tune_allocator()
    torch.set_num_threads(args.threads)
    if args.node_only:
        measure_node(args)
        return 0
    peaks = gemm_peaks(args.threads, args.reps)
    print("peak GEMM GFLOP/s (%d³, %d threads): %s" % (GEMM_N, args.threads, json.dumps(peaks)), flush=True)
    rows = []
    for size in args.sizes:
        onnx_dir = args.onnx_cache / f"tiny_{size}"
        if not (onnx_dir / "memory_attention.int8.onnx").is_file():
            export_onnx(
                ExportOptions(
                    out_dir=onnx_dir, model_size="tiny", image_size=size, random_weights=True, int8=True, force=True
                )
            )
        base = dict(model_size="tiny", image_size=size, allow_random_weights=True, seed=0, onnx_dir=str(onnx_dir))
        model = load_model(TrackerConfig(**base))
        backends = {k: create_backend(TrackerConfig(**base, **v), model) for k, v in RUNTIMES.items()}
        for b in args.instruments:
            flops = {}
            for stage, fn in stage_calls(backends[("torch", "fp32")], size, b).items():
                with count_flops() as counted:
                    fn()
                flops[stage] = counted["flops"]
            for (runtime, precision), backend in backends.items():
                peak = peaks[f"{runtime} {precision}"] * 1e9
                for stage, fn in stage_calls(backend, size, b).items():
                    t = median_time(fn, args.reps)
                    floor = flops[stage] / peak
                    row = dict(size=size, instruments=b, runtime=runtime, precision=precision, stage=stage)
                    row.update(gflop=flops[stage] / 1e9, time_s=t, floor_s=floor, time_over_floor=t / floor)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    node = measure_node(args)
    print(f"\n| size | instr. | stage | GFLOP | runtime | time s | floor s | time ÷ floor |\n|{'---|' * 8}")
    for r in rows:
        print(
            f"| {r['size']}² | {r['instruments']} | {r['stage']} | {r['gflop']:.1f} | {r['runtime']} {r['precision']} "
            f"| {r['time_s']:.3f} | {r['floor_s']:.3f} | {r['time_over_floor']:.1f} |"
        )
    print(
        f"| {args.sizes[0]}² | {max(args.instruments)} | node overhead at {args.node_hw[1]}×{args.node_hw[0]} "
        f"| – | torch fp32 | {node['median_overhead_s']:.4f} | – | – |"
    )
    if args.out:
        meta = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "malloc": applied,
            "loadavg": os.getloadavg(),
        }
        out = {"meta": meta, "peaks_gflops": peaks, "rows": rows, "node": node}
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

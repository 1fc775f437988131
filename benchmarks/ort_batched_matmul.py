"""onnxruntime CPU: one batched attention MatMul against one run per batch entry (issue #17).

Why the onnxruntime backend runs memory attention one instrument at a time on the CPU EP
(``OnnxRuntimeBackend.memory_attention_rows``): memory attention's cost is two
activation x activation MatMuls per layer, [B, 1, Nq, Nk] x [B, 1, Nk, 256] and the like
(512²: Nq = 1024 queries, Nk = 7196 memory tokens with a full SAM 2.1 bank). This times the
second one, the weights-times-values product, alone in a one-node graph, for B = 1..4 in
one run against B runs of one entry, interleaved, same data.

Run: ``.venv/bin/python benchmarks/ort_batched_matmul.py [--threads 2] [--tokens 7196]``.
Prints one line per B: median seconds batched, median seconds for B single runs, and
their ratio (> 1: batching is slower).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def matmul_model() -> bytes:
    """A one-node ONNX graph ``o = MatMul(a, b)`` with free shapes (opset 17, IR 8)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["o"])],
        "matmul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--queries", type=int, default=1024, help="Nq: (image_size / 16)² (512² -> 1024)")
    ap.add_argument("--tokens", type=int, default=7196, help="Nk: memory tokens (full SAM 2.1 bank at 512²)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--reps", type=int, default=6)
    args = ap.parse_args()

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(matmul_model(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for b in args.batches:
        batched = {
            "a": rng.random((b, 1, args.queries, args.tokens), dtype=np.float32),
            "b": rng.standard_normal((b, 1, args.tokens, 256), dtype=np.float32),
        }
        singles = [{k: v[i : i + 1] for k, v in batched.items()} for i in range(b)]
        runs = {"batched": lambda: sess.run(None, batched), "single": lambda: [sess.run(None, f) for f in singles]}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for fn in runs.values():
            fn()  # warm-up
        for rep in range(args.reps):
            for name in runs if rep % 2 == 0 else reversed(list(runs)):
                t0 = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - t0)
        tb, ts = statistics.median(times["batched"]), statistics.median(times["single"])
        print(f"B={b}: batched {tb:.4f} s, {b} single runs {ts:.4f} s, ratio {tb / ts:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

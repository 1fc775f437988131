#!/usr/bin/env python3
"""Issue #17: J&F of the reduced-precision CPU paths against fp32, on the whole evaluation clips.

The embedded checkpoint (sam2s_mobile, 512 px) tracks the CholecSeg8k clip (72 frames,
grasper and hook: every instrument in frame 0's labels) and DAVIS 2016 blackswan (50
frames, the swan), each from box prompts on frame 0 and nothing after, in process
(sam2s_ros.evaluation.clip_jf: DAVIS J and F at source resolution, first and last frame not
scored). Settings: torch fp32 (the reference), torch bfloat16 autocast, onnxruntime fp32,
onnxruntime int8 (graphs of ``sam2s export --int8``, exported into ``--onnx-dir`` unless
there). Prints a markdown table: J&F, drop against torch fp32 (target <= 0.01), the share
of pixels where the binary masks differ from fp32's, and the median seconds per frame
(noisy on a shared machine: the accuracy columns are the point of this script).

Usage:
    .venv/bin/python benchmarks/eval_precision.py --out /tmp/eval_precision.json
    .venv/bin/python benchmarks/eval_precision.py --clips davis2016_blackswan --frames 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SAM2S_SHARED_DIR", REPO.parent / "shared"))
#: clip -> label folder
CLIPS = {"cholecseg8k_clip": "masks_instruments", "davis2016_blackswan": "masks"}
#: name -> TrackerConfig overrides
SETTINGS = {
    "torch_fp32": dict(backend="torch"),
    "torch_bf16": dict(backend="torch", autocast_dtype="bfloat16"),
    "ort_fp32": dict(backend="onnxruntime"),
    "ort_int8": dict(backend="onnxruntime", autocast_dtype="int8"),
}
TARGET_DROP = 0.01


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "sam2s_mobile.safetensors"))
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--frames", type=int, default=None, help="first N frames of each clip (default all)")
    ap.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (default 1)")
    ap.add_argument("--onnx-dir", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "sam2s_eval_int8")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from sam2s_ros.allocator import tune_allocator
    from sam2s_ros.data import read_davis_sequence
    from sam2s_ros.evaluation.clip_jf import score_clip
    from sam2s_ros.tracking.config import MOBILE_MODEL, TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker

    tune_allocator()
    torch.set_num_threads(args.threads)
    if any(SETTINGS[s]["backend"] == "onnxruntime" for s in args.settings):
        from sam2s_ros.backends.graph import check_export
        from sam2s_ros.errors import BackendError
        from sam2s_ros.model.checkpoint import file_sha256

        try:  # the backends' identity check: graphs of this checkpoint file, size and model
            check_export(args.onnx_dir, args.image_size, MOBILE_MODEL, file_sha256(str(args.checkpoint)), None)
            fresh = (args.onnx_dir / "image_encoder.int8.onnx").is_file()
        except BackendError:
            fresh = False
        if not fresh:  # none yet, or made from another checkpoint file
            from sam2s_ros.export.onnx_export import ExportOptions, export_onnx

            export_onnx(
                ExportOptions(
                    out_dir=args.onnx_dir,
                    model_size=MOBILE_MODEL,
                    image_size=args.image_size,
                    checkpoint=args.checkpoint,
                    int8=True,
                    force=True,
                )
            )
    rows = []
    for clip_name in args.clips:
        clip = read_davis_sequence(SHARED / "data" / clip_name, args.frames, labels_dir=CLIPS[clip_name])
        ref = None
        for name in args.settings:
            cfg = TrackerConfig(
                model_size=MOBILE_MODEL,
                image_size=args.image_size,
                checkpoint=args.checkpoint,
                onnx_dir=str(args.onnx_dir),
                **SETTINGS[name],
            )
            score = score_clip(InstrumentTracker.from_config(cfg), clip)
            if ref is None:
                ref = score
            differ = [
                float(np.mean(m.get(k, False) != r.get(k, False)))
                for m, r in zip(score.masks, ref.masks)
                for k in score.objects
            ]
            row = {
                "clip": clip_name,
                "frames": len(clip.frames),
                "setting": name,
                "jf": score.summary.jf_mean,
                "j": score.summary.j_mean,
                "f": score.summary.f_mean,
                "jf_drop_vs_ref": ref.summary.jf_mean - score.summary.jf_mean,
                "reference": args.settings[0],
                "mask_pixels_differing": float(np.mean(differ)),
                "median_s_per_frame": statistics.median(score.frame_seconds[1:]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n| clip | frames | setting | J&F | drop vs {args.settings[0]} | mask pixels differing | s/frame |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "" if r["setting"] == r["reference"] else (" ✓" if r["jf_drop_vs_ref"] <= TARGET_DROP else " ✗")
        print(
            f"| {r['clip']} | {r['frames']} | {r['setting']} | {r['jf']:.4f} | {r['jf_drop_vs_ref']:+.4f}{ok} | "
            f"{100 * r['mask_pixels_differing']:.3f} % | {r['median_s_per_frame']:.3f} |"
        )
    if args.out:
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": args.threads}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

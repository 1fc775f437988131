"""``sam2s export``: ONNX graphs (and optionally TensorRT engines) of the SAM 2.1 stages.

Writes the six stage graphs of :mod:`sam2s_ros.export.contract` (fp32; with ``--fp16`` also fp16
variants, with ``--int8`` int8 variants for the onnxruntime CPU EP), ``constants.npz`` and
``manifest.json`` into ``--out``; with ``--tensorrt`` then builds native TensorRT engines into
``<out>/tensorrt`` (fp16 kernels with ``--fp16``).
The graphs record model, image size, opset and the checkpoint's sha256; the onnxruntime
and TensorRT backends refuse graphs that do not fit the tracker configuration.

Checks before any work (exit code 2 with a message): image size a multiple of 32 (>= 128),
the checkpoint exists (or ``--random-weights``), ``--out`` is empty or ``--force`` is given,
``--tensorrt`` only where the ``tensorrt`` package (TensorRT >= 10) is installed.

Usage examples::

    sam2s export --model-size tiny --image-size 512 --checkpoint models/sam2s_tiny.pt --out models/onnx
    sam2s export --model-size tiny --image-size 512 --random-weights --out models/onnx --fp16 --force
    sam2s export --model-size small --image-size 1024 --checkpoint ckpt.pt --out models/onnx --fp16 --tensorrt
    sam2s export --model-size sam2s_mobile --image-size 512 --checkpoint models/sam2s_mobile.safetensors --int8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sam2s_ros.export.contract import DEFAULT_ONNX_DIR, DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from sam2s_ros.tools.subcommand import add_command_parser
from sam2s_ros.tracking.config import MODEL_SIZES, DiveMemConfig, TrackerConfig, model_name

COMMAND = "export"
DEFAULT_OUT = Path(DEFAULT_ONNX_DIR)
DEFAULT_IMAGE_SIZE = TrackerConfig.image_size


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``export`` on the ``sam2s`` parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The sub-command's parser.
    """
    p = add_command_parser(
        subparsers,
        COMMAND,
        "export the SAM 2.1 stages to ONNX (and TensorRT engines) for the onnxruntime/tensorrt backends",
        __doc__,
        description=__doc__.split("\n\n")[0] + " See sam2s_ros/export/contract.py for the graphs.",
    )
    p.add_argument("--model-size", choices=MODEL_SIZES, default="tiny", help="SAM 2.1 model size (default %(default)s)")
    p.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help="model input side in pixels, a multiple of 32 (default %(default)s)",
    )
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", metavar="PATH", help="SAM 2.1 / SAM2S checkpoint (.pt/.pth/.safetensors)")
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="export random weights (pipeline tests only: outputs are meaningless)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --random-weights (default %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default %(default)s)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write fp16 graphs (<stage>.fp16.onnx); with --tensorrt build fp16 engines",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write int8 graphs (<stage>.int8.onnx, onnxruntime CPU: autocast_dtype int8)",
    )
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default %(default)s)"
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="then build native TensorRT engines into OUT/tensorrt (needs tensorrt >= 10 and a GPU)",
    )
    p.add_argument(
        "--workspace-gib", type=float, default=4.0, help="TensorRT builder workspace in GiB (default %(default)s)"
    )
    cfg = TrackerConfig()
    p.add_argument(
        "--max-instruments",
        type=int,
        default=cfg.max_instruments,
        help="TensorRT profiles: TrackerConfig.max_instruments the engines must take (default %(default)s)",
    )
    p.add_argument(
        "--max-cond-frames",
        type=int,
        default=cfg.divemem.max_cond_frames,
        help="TensorRT profiles: divemem.max_cond_frames the engines must take (default %(default)s)",
    )
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--force", action="store_true", help="replace the graphs (and engines) in a non-empty OUT")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``export`` with parsed arguments.

    Returns:
        0 on success.

    Raises:
        Sam2sError: bad arguments or inputs, failed export (the CLI turns it into exit code 2).
    """
    from sam2s_ros.export.contract import profile_dims_for
    from sam2s_ros.export.onnx_export import ExportOptions, export_onnx, validate_options

    opts = ExportOptions(
        out_dir=args.out,
        model_size=args.model_size,
        image_size=args.image_size,
        checkpoint=args.checkpoint,
        random_weights=args.random_weights,
        seed=args.seed,
        fp16=args.fp16,
        int8=args.int8,
        opset=args.opset,
        force=args.force,
        simplify=not args.no_simplify,
        profile_dims=profile_dims_for(
            TrackerConfig(
                max_instruments=args.max_instruments, divemem=DiveMemConfig(max_cond_frames=args.max_cond_frames)
            )
        ),
    )
    validate_options(opts)
    if args.tensorrt:
        from sam2s_ros.export.tensorrt_build import require_tensorrt

        require_tensorrt()  # before minutes of ONNX export
    print(
        f"exporting {model_name(opts.model_size)} at {opts.image_size}x{opts.image_size} (opset {opts.opset}"
        f"{', fp16 too' if opts.fp16 else ''}{', int8 too' if opts.int8 else ''}) to {opts.out_dir} ...",
        flush=True,
    )
    result = export_onnx(opts)
    for (stage, precision), path in sorted(result.graphs.items()):
        size_mb = path.stat().st_size / 1e6
        print(f"  {path.name:34s} {size_mb:8.1f} MB  ({result.seconds.get(stage, 0.0):.1f} s for {stage})")
    print(f"weights: {result.metadata['weights']}")
    if args.tensorrt:
        from sam2s_ros.export.tensorrt_build import BuildOptions, build_engines

        engines = build_engines(
            BuildOptions(onnx_dir=opts.out_dir, fp16=args.fp16, workspace_gib=args.workspace_gib, force=True)
        )
        for stage, path in engines.items():
            print(f"  engine {path}")
    return 0


__all__ = ["COMMAND", "add_parser", "run"]

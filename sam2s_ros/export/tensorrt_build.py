"""Build native TensorRT 10 engines from the graphs of ``sam2s export``.

One engine per graph (``<onnx_dir>/tensorrt/<stage>.engine``) with one optimization
profile over the dynamic axes (min/opt/max: the ``profile_dims`` the export recorded in
``manifest.json``, derived from the TrackerConfig by
:func:`sam2s_ros.export.contract.profile_dims`; else DYNAMIC_DIMS; override with
``dims``), fp16 or fp32 (TF32 off for fp32 builds unless asked: TensorRT enables it by
default, which breaks fp32 parity), a shared timing cache (``tensorrt/timing.cache``) and a sidecar
``<stage>.engine.json`` recording what the engine was built from (graph sha256 and
metadata, TensorRT version, GPU, precision, profile) so that the backend can refuse a stale
or foreign engine. Engines are specific to the GPU model and TensorRT version.

Build offline, run online: ``sam2s export ... --tensorrt`` or :func:`build_engines`, then
``backend: tensorrt`` (sam2s_ros.backends.tensorrt_backend).

NOT verified on the development machine (no GPU, and TensorRT cannot be installed
there); written against the TensorRT 10 Python API and run by
``scripts/gpu_verify.sh`` where both exist. What is tested here is that a missing
``tensorrt`` gives a clear ExportError.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sam2s_ros.errors import ExportError
from sam2s_ros.export.contract import DYNAMIC_DIMS, GRAPHS, MANIFEST_FILE, READOUT_GRAPHS, TENSORRT_SUBDIR, GraphSpec
from sam2s_ros.model.checkpoint import file_sha256
from sam2s_ros.tracking.config import MOBILE_MODEL

log = logging.getLogger(__name__)

MIN_TENSORRT_MAJOR = 10
TIMING_CACHE_FILE = "timing.cache"
INSTALL_HINT = (
    "install TensorRT 10 for your CUDA version, e.g. `pip install tensorrt-cu12` (from NVIDIA's "
    "index, needs an NVIDIA GPU and driver), or use backend onnxruntime (onnxruntime-gpu has a "
    "TensorRT execution provider)"
)


@dataclass
class BuildOptions:
    """Inputs of :func:`build_engines`.

    Attributes:
        onnx_dir: export folder (``sam2s export --out``).
        fp16: allow fp16 kernels (BuilderFlag.FP16); otherwise fp32.
        dims: (min, opt, max) per dynamic axis name, overriding the manifest's profile_dims.
        workspace_gib: builder workspace memory pool limit.
        tf32: allow TF32 tactics; None = only for fp16 builds (fp32 builds are parity builds).
        stages: the graphs to build (default all).
        force: rebuild engines that exist.
    """

    onnx_dir: Path
    fp16: bool = True
    dims: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    workspace_gib: float = 4.0
    tf32: Optional[bool] = None
    stages: Optional[tuple[str, ...]] = None
    force: bool = False


def require_tensorrt():
    """Import ``tensorrt`` (>= 10) or raise ExportError saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError(
            f"building TensorRT engines needs the 'tensorrt' Python package (TensorRT "
            f">= {MIN_TENSORRT_MAJOR}), which is not installed: {INSTALL_HINT}"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < MIN_TENSORRT_MAJOR:
        raise ExportError(
            f"TensorRT {trt.__version__} is too old: need >= {MIN_TENSORRT_MAJOR} (name-based I/O, "
            f"execute_async_v3); {INSTALL_HINT}"
        )
    return trt


def tensorrt_available() -> bool:
    """True when ``tensorrt`` >= 10 can be imported."""
    try:
        require_tensorrt()
    except ExportError:
        return False
    return True


def engine_dir(onnx_dir: Path) -> Path:
    """Where the engines of an export live."""
    return Path(onnx_dir) / TENSORRT_SUBDIR


def build_engines(opts: BuildOptions) -> dict[str, Path]:
    """Build an engine for every graph of an export.

    Returns:
        {stage: engine path}.

    Raises:
        ExportError: tensorrt missing or too old, no export in ``onnx_dir``, an unknown
            stage or dimension, a parse or build failure, engines exist without ``force``.
    """
    trt = require_tensorrt()
    onnx_dir = Path(opts.onnx_dir)
    manifest_path = onnx_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ExportError(f"{onnx_dir} holds no sam2s_ros export ({MANIFEST_FILE} missing); run sam2s export first")
    manifest = json.loads(manifest_path.read_text())
    unknown = set(opts.dims) - set(DYNAMIC_DIMS)
    if unknown:
        raise ExportError(f"unknown dynamic dimension(s) {sorted(unknown)}; known: {', '.join(DYNAMIC_DIMS)}")
    for name, (lo, opt, hi) in opts.dims.items():
        if not 1 <= lo <= opt <= hi:
            raise ExportError(f"dimension {name}: need 1 <= min <= opt <= max, got {(lo, opt, hi)}")
    recorded = {k: tuple(v) for k, v in manifest.get("profile_dims", {}).items() if k in DYNAMIC_DIMS}
    opts.dims = resolve_dims(recorded, opts.dims)
    graphs = READOUT_GRAPHS if manifest.get("model") == MOBILE_MODEL else GRAPHS
    stages = opts.stages or tuple(graphs)
    bad = [s for s in stages if s not in graphs]
    if bad:
        raise ExportError(f"unknown stage(s) {bad}; stages: {', '.join(graphs)}")
    out = engine_dir(onnx_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    built = {}
    for stage in stages:
        engine_path = out / graphs[stage].engine_filename()
        if engine_path.exists() and not opts.force:
            raise ExportError(f"{engine_path} exists; pass --force to rebuild it")
        built[stage] = build_engine(
            trt, logger, graphs[stage], onnx_dir, engine_path, int(manifest["image_size"]), opts
        )
    return built


def resolve_dims(recorded: dict, override: dict) -> dict[str, tuple[int, int, int]]:
    """The profile an engine build uses: DYNAMIC_DIMS < the manifest's profile_dims < ``override``."""
    return {**DYNAMIC_DIMS, **recorded, **{k: tuple(v) for k, v in override.items()}}


def tf32_enabled(opts: BuildOptions) -> bool:
    """TF32 tactics on? Default: with fp16 only (an fp32 engine is meant to match torch fp32)."""
    return opts.fp16 if opts.tf32 is None else bool(opts.tf32)


def build_engine(
    trt, logger, spec: GraphSpec, onnx_dir: Path, engine_path: Path, image_size: int, opts: BuildOptions
) -> Path:
    """Parse ``<stage>.onnx``, build with one optimization profile, write engine + sidecar json."""
    onnx_path = Path(onnx_dir) / spec.filename("fp32")
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path} is missing; re-run sam2s export")
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    if builder is None:
        raise ExportError("TensorRT cannot create a builder: no usable NVIDIA GPU / CUDA driver?")
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
    if opts.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not tf32_enabled(opts):
        config.clear_flag(trt.BuilderFlag.TF32)  # TensorRT sets it by default
    profiles = spec.profile_shapes(image_size, opts.dims)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = engine_path.parent / TIMING_CACHE_FILE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    for i in range(network.num_inputs):
        t = network.get_input(i)
        log.info("%s input %s %s %s", spec.stage, t.name, tuple(t.shape), t.dtype)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path.name} (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = {
        "stage": spec.stage,
        "onnx": onnx_path.name,
        "onnx_sha256": file_sha256(onnx_path),
        "tensorrt_version": trt.__version__,
        "precision": "fp16" if opts.fp16 else "fp32",
        "gpu": _gpu_name(),
        "image_size": image_size,
        "tf32": tf32_enabled(opts),
        "profile_dims": {k: list(v) for k, v in (opts.dims or DYNAMIC_DIMS).items()},
        "profile": {k: [list(s) for s in v] for k, v in profiles.items()},
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    Path(f"{engine_path}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    log.info("built %s in %.1f s", engine_path, sidecar["build_seconds"])
    return engine_path


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    except (ImportError, RuntimeError):
        return ""


__all__ = [
    "BuildOptions",
    "INSTALL_HINT",
    "MIN_TENSORRT_MAJOR",
    "build_engine",
    "build_engines",
    "engine_dir",
    "require_tensorrt",
    "resolve_dims",
    "tf32_enabled",
    "tensorrt_available",
]

"""The onnxruntime backend: SAM 2.1 stages run from the graphs of ``sam2s export``.

Execution providers: CPU; with ``device="cuda[:N]"`` the TensorRT EP or the CUDA EP
(``onnxruntime-gpu``). The graphs, their I/O names and ``constants.npz`` are described in
:mod:`sam2s_ros.export.contract`; no torch weights are needed (torch only carries tensors across
the backend interface). Before any session is created, ``manifest.json`` is checked
against the tracker configuration (image size, model size, checkpoint sha256 or random
weights seed, graph format), then every graph's own metadata_props.

Provider choice (``provider="auto"`` on CUDA): the TensorRT EP is tried first, but every
onnxruntime-gpu wheel lists it, also where ``libnvinfer`` cannot be loaded; onnxruntime
then silently runs the CUDA EP. So the TensorRT libraries are made loadable first
(:func:`preload_tensorrt_libs`: ``import tensorrt``, or the ``tensorrt_libs`` folder of the
pip wheel), and a session that did not get the TensorRT EP makes the backend fall back to
the CUDA EP with a logged warning (``provider="tensorrt"`` raises instead).

On CUDA every session runs on one dedicated CUDA stream (``user_compute_stream``, shared
with the caller through :meth:`GraphBackend.stream_context`), with IO binding on torch CUDA
tensors and without onnxruntime's end-of-run synchronisation
(``disable_synchronize_execution_providers``); the CUDA EP gets a bounded arena
(``arena_extend_strategy``, ``gpu_mem_limit``) and heuristic cuDNN search, configurable
through :class:`CudaOptions`.

Verified here: CPU EP (fp32 and fp16 graphs), and the provider choice / fallback / options
with a stubbed onnxruntime. Written for, but not run on, a GPU: the CUDA EP and TensorRT EP
paths; ``scripts/gpu_verify.sh`` runs them where a GPU exists.

The runtime-independent part (:class:`~sam2s_ros.backends.graph.GraphBackend`) is shared
with the native TensorRT backend.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sam2s_ros.backends.graph import (
    EXPORT_HINT,
    TORCH_DTYPES,
    GraphBackend,
    check_export,
    identity_problems,
    load_constants,
)
from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import (
    DYNAMIC_DIMS,
    PRECISIONS,
    TRT_CACHE_SUBDIR,
    bind_dims,
    graphs_for,
    stage_precision,
)

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
_EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


ARENA_EXTEND_STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")
CUDNN_CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
#: RunOptions key: do not synchronise the EP's stream at the end of a run (IO binding on device)
NO_SYNC_RUN_KEY = "disable_synchronize_execution_providers"


@dataclass
class CudaOptions:
    """CUDA EP settings (TrackerConfig ``ort_*``; onnxruntime defaults in brackets).

    Attributes:
        arena_extend_strategy: "kSameAsRequested" grows the arena by what is asked for
            [kNextPowerOfTwo: doubles, which beside torch's own allocator wastes GBs].
        gpu_mem_limit_mb: arena limit in MiB, 0 = none [none].
        cudnn_conv_algo_search: "HEURISTIC" [EXHAUSTIVE: benchmarks every conv again for
            each new input shape, i.e. whenever the instrument count changes].
        use_tf32: TF32 matmuls/convs in fp32 graphs [on]; off for exact fp32 parity.
    """

    arena_extend_strategy: str = "kSameAsRequested"
    gpu_mem_limit_mb: int = 0
    cudnn_conv_algo_search: str = "HEURISTIC"
    use_tf32: bool = True

    def validate(self) -> None:
        if self.arena_extend_strategy not in ARENA_EXTEND_STRATEGIES:
            raise BackendError(f"arena_extend_strategy must be one of {ARENA_EXTEND_STRATEGIES}")
        if self.cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCH:
            raise BackendError(f"cudnn_conv_algo_search must be one of {CUDNN_CONV_ALGO_SEARCH}")
        if self.gpu_mem_limit_mb < 0:
            raise BackendError("gpu_mem_limit_mb must be >= 0")

    def provider_options(self, device_id: int, stream_handle: Optional[int]) -> dict:
        """CUDAExecutionProvider options (string values, as onnxruntime's Python API takes them)."""
        opts = {
            "device_id": str(device_id),
            "arena_extend_strategy": self.arena_extend_strategy,
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "use_tf32": "1" if self.use_tf32 else "0",
            "do_copy_in_default_stream": "1",
        }
        if self.gpu_mem_limit_mb:
            opts["gpu_mem_limit"] = str(int(self.gpu_mem_limit_mb) << 20)
        if stream_handle:  # onnxruntime treats 0 (legacy default stream) as "none"
            opts["user_compute_stream"] = str(int(stream_handle))
        return opts


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


def preload_tensorrt_libs() -> Optional[str]:
    """Make TensorRT's shared libraries loadable for onnxruntime's TensorRT EP.

    onnxruntime dlopens ``libnvinfer.so.10`` by name; the pip ``tensorrt-cu12`` wheel keeps
    it in the ``tensorrt_libs`` package, which is on no loader path. ``import tensorrt`` loads
    them into the process (later dlopens by soname find them); without the ``tensorrt``
    bindings, the libraries of ``tensorrt_libs`` are loaded directly (RTLD_GLOBAL).

    Returns:
        How they were found ("tensorrt", "tensorrt_libs <dir>") or None (system libraries,
        if any, are left to the loader).
    """
    try:
        import tensorrt  # noqa: F401  (loads libnvinfer*)

        return "tensorrt"
    except ImportError:
        pass
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    loaded = 0
    # libnvinfer first: the plugin and parser libraries depend on it
    for lib in sorted(folder.glob("lib*.so*"), key=lambda p: (not p.name.startswith("libnvinfer.so"), p.name)):
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            loaded += 1
        except OSError as exc:
            log.debug("cannot preload %s: %s", lib, exc)
    return f"tensorrt_libs {folder}" if loaded else None


class OnnxRuntimeBackend(GraphBackend):
    """SAM 2.1 stages from ONNX graphs with onnxruntime.

    Args:
        onnx_dir: folder written by ``sam2s export``.
        image_size, model_size: what the tracker runs (checked against the graphs).
        device: "cpu" or "cuda[:N]".
        precision: "fp32" (``<stage>.onnx``), "fp16" (``<stage>.fp16.onnx``; with the
            TensorRT EP the fp32 graphs are used and TensorRT builds fp16 engines) or "int8"
            (CPU only: ``<stage>.int8.onnx`` for contract.INT8_STAGES, fp32 for the rest).
        provider: "auto" (CPU on cpu; on cuda the TensorRT EP when it loads, else the CUDA
            EP with a logged warning), "cpu", "cuda" or "tensorrt" (no fallback).
        checkpoint_sha256, weights: identity of the loaded weights (None: not checked).
        num_threads: intra-op threads (default torch.get_num_threads()).
        profile_dims: (min, opt, max) per dynamic axis for the TensorRT EP's optimization
            profiles (contract.profile_dims_for(cfg)); default contract.DYNAMIC_DIMS.
        cuda_options: CUDA EP settings (default CudaOptions()).

    Raises:
        BackendError: onnxruntime or the requested execution provider is missing, no or
            mismatching graphs, unreadable graph.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_dir,
        image_size: int,
        model_size: str,
        device: str = "cpu",
        precision: str = "fp32",
        provider: str = "auto",
        checkpoint_sha256: Optional[str] = None,
        weights: Optional[str] = None,
        num_threads: Optional[int] = None,
        profile_dims: Optional[dict] = None,
        cuda_options: Optional[CudaOptions] = None,
    ):
        ort = _import_onnxruntime()
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "int8" and torch.device(device).type != "cpu":
            raise BackendError("int8 graphs are for the CPU EP (device cpu); on CUDA use fp16")
        self.device = torch.device(device)
        self.image_size = int(image_size)
        self.onnx_dir = Path(onnx_dir)
        self.cuda_options = cuda_options or CudaOptions()
        self.cuda_options.validate()
        self.profile_dims = {k: tuple(v) for k, v in (profile_dims or DYNAMIC_DIMS).items()}
        candidates = _choose_providers(ort, provider, self.device)
        self.precision = precision
        self.fallback_reason: Optional[str] = None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} requested but torch sees no CUDA GPU; the onnxruntime backend "
                "hands CUDA tensors to onnxruntime (install a CUDA build of torch) or use device:=cpu"
            )
        self.graphs = graphs_for(model_size)
        self.manifest = check_export(self.onnx_dir, self.image_size, model_size, checkpoint_sha256, weights)
        self._no_mem_embed, self._maskmem_pos = load_constants(self.onnx_dir, self.image_size, self.device)
        self._init_stream()
        self.session_options = self._session_options(ort, num_threads)
        self.run_options = ort.RunOptions()
        if self.device.type == "cuda":
            self.run_options.add_run_config_entry(NO_SYNC_RUN_KEY, "1")
        identity = (model_size, checkpoint_sha256, weights)
        for i, candidate in enumerate(candidates):
            self.provider = candidate
            try:
                self.sessions = self._sessions(ort, identity)
                break
            except _ProviderUnavailable as exc:
                if i + 1 == len(candidates):
                    raise BackendError(str(exc)) from None
                self.fallback_reason = str(exc)
                log.warning("%s; falling back to the %s EP", exc, candidates[i + 1].upper())
        self.dims = self.profile_dims if self.provider == "tensorrt" else None
        self.providers = self.sessions["image_encoder"].get_providers()

    @property
    def memory_attention_rows(self) -> Optional[int]:
        """1 on the CPU EP, else None (one run for all instruments).

        The CPU EP's batched MatMul shares its threads between batch entries in whole rounds:
        3 instruments on 2 threads take as long as 4, 1.28x three single runs
        (benchmarks/ort_batched_matmul.py, 2026-12-03). One instrument per run keeps every
        attention GEMM on all threads; nothing is gained by batching on a CPU.
        """
        return 1 if self.provider == "cpu" else None

    def _sessions(self, ort, identity) -> dict:
        model_size, checkpoint_sha256, weights = identity
        graph_precision = "fp32" if self.provider == "tensorrt" else self.precision
        precisions = {s: stage_precision(s, graph_precision) for s in self.graphs}
        paths = {s: self.onnx_dir / g.filename(precisions[s]) for s, g in self.graphs.items()}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            flag = f" --{graph_precision}" if graph_precision != "fp32" else ""
            hint = EXPORT_HINT.format(size=model_size, s=self.image_size, dir=self.onnx_dir)
            raise BackendError(
                f"onnx_dir {self.onnx_dir} lacks {', '.join(missing)}; re-export with{flag} --force ({hint})"
            )
        sessions = {}
        for stage, path in paths.items():
            sess = self._session(ort, path, self.session_options)
            meta = sess.get_modelmeta().custom_metadata_map
            problems = identity_problems(meta, self.image_size, model_size, checkpoint_sha256, weights)
            if meta.get("stage") != stage or meta.get("precision") != precisions[stage]:
                problems.append(f"stage/precision {meta.get('stage')}/{meta.get('precision')}")
            if problems:
                raise BackendError(f"{path} does not fit: {'; '.join(problems)}; re-export with --force")
            sessions[stage] = sess
        return sessions

    def _session_options(self, ort, num_threads: Optional[int]):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle onnxruntime threads must not spin: they would slow torch ~10x on few cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _session(self, ort, path: Path, options):
        providers = [self._provider_entry(path)]
        if self.provider == "tensorrt":
            providers.append(("CUDAExecutionProvider", self._cuda_entry_options()))
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")
        wanted = _EP_NAMES[self.provider]
        try:
            sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
            if self.provider == "tensorrt":  # e.g. an engine build failure: the CUDA EP may still work
                raise _ProviderUnavailable(f"the {wanted} cannot run {path.name}: {exc}") from exc
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        if sess.get_providers()[0] != wanted:
            raise _ProviderUnavailable(
                f"onnxruntime runs {path.name} on {sess.get_providers()} although {wanted} "
                f"was requested: {_provider_install_hint(self.provider)}"
            )
        return sess

    def _cuda_entry_options(self) -> dict:
        handle = self.stream.cuda_stream if self.stream is not None else None
        return self.cuda_options.provider_options(_cuda_index(self.device), handle)

    def _provider_entry(self, path: Path):
        if self.provider == "cpu":
            return "CPUExecutionProvider"
        if self.provider == "cuda":
            return ("CUDAExecutionProvider", self._cuda_entry_options())
        cache = self.onnx_dir / TRT_CACHE_SUBDIR
        cache.mkdir(parents=True, exist_ok=True)
        spec = self.graphs[path.name.split(".")[0]]
        profiles = spec.profile_shapes(self.image_size, self.profile_dims)

        def shapes(i: int) -> str:
            return ",".join(f"{n}:{'x'.join(map(str, p[i]))}" for n, p in profiles.items())

        options = {
            "device_id": str(_cuda_index(self.device)),
            "trt_fp16_enable": "1" if self.precision == "fp16" else "0",
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": str(cache),
        }
        if self.stream is not None:
            options["user_compute_stream"] = str(int(self.stream.cuda_stream))
        if profiles:
            options.update(
                trt_profile_min_shapes=shapes(0), trt_profile_opt_shapes=shapes(1), trt_profile_max_shapes=shapes(2)
            )
        return ("TensorrtExecutionProvider", options)

    def _run(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sess, spec = self.sessions[stage], self.graphs[stage]
        if self.device.type == "cpu":
            outs = sess.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in feeds.items()})
            return {t.name: torch.from_numpy(o) for t, o in zip(spec.outputs, outs)}
        return self._run_cuda(sess, stage, feeds)

    def _run_cuda(self, sess, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """IO binding on torch CUDA tensors (outputs preallocated from the graph contract)."""
        spec, dev = self.graphs[stage], _cuda_index(self.device)
        dims = bind_dims(spec, {k: tuple(v.shape) for k, v in feeds.items()}, self.image_size)
        binding = sess.io_binding()
        for t in spec.inputs:
            x = feeds[t.name]
            binding.bind_input(t.name, "cuda", dev, np.dtype(t.dtype).type, list(x.shape), x.data_ptr())
        outs = {
            t.name: torch.empty(t.resolve(self.image_size, dims), dtype=TORCH_DTYPES[t.dtype], device=self.device)
            for t in spec.outputs
        }
        for t in spec.outputs:
            y = outs[t.name]
            binding.bind_output(t.name, "cuda", dev, np.dtype(t.dtype).type, list(y.shape), y.data_ptr())
        # runs on self.stream (user_compute_stream), ordered after torch's work by GraphBackend._call;
        # NO_SYNC_RUN_KEY: onnxruntime does not block the host at the end of the run
        with torch.cuda.device(self.device):
            sess.run_with_iobinding(binding, self.run_options)
        return outs


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            "backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime==1.31.1 "
            "(CPU) or onnxruntime-gpu (CUDA / TensorRT execution providers)"
        ) from exc
    return onnxruntime


def _provider_install_hint(provider: str) -> str:
    if provider == "cuda":
        return (
            "install onnxruntime-gpu (pip uninstall onnxruntime && pip install onnxruntime-gpu) "
            "with CUDA 12 and cuDNN 9 libraries"
        )
    if provider == "tensorrt":
        return (
            "install onnxruntime-gpu and TensorRT 10 libraries (pip install tensorrt-cu12, NVIDIA index) "
            "so that libnvinfer is found"
        )
    return "use provider 'cpu'"


class _ProviderUnavailable(Exception):
    """The requested execution provider did not take the session (fallback candidate)."""


def _choose_providers(ort, provider: str, device: torch.device) -> list[str]:
    """Providers to try in order: one, or for "auto" on CUDA ["tensorrt", "cuda"] when listed."""
    if provider not in PROVIDERS:
        raise BackendError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if provider == "auto" and device.type == "cuda":
        available = ort.get_available_providers()
        if _EP_NAMES["tensorrt"] in available and _EP_NAMES["cuda"] in available:
            found = preload_tensorrt_libs()
            log.info("TensorRT libraries for the TensorRT EP: %s", found or "left to the system loader")
            return ["tensorrt", "cuda"]
        return [_choose_provider(ort, "cuda", device)]
    if provider == "tensorrt":
        preload_tensorrt_libs()
    return [_choose_provider(ort, provider, device)]


def _choose_provider(ort, provider: str, device: torch.device) -> str:
    if provider not in PROVIDERS:
        raise BackendError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    available = ort.get_available_providers()
    if provider == "auto":
        return "cpu" if device.type == "cpu" else "cuda"
    if provider != "cpu" and device.type != "cuda":
        raise BackendError(f"provider {provider!r} needs device cuda[:N], got {device}")
    if provider == "cpu" and device.type != "cpu":
        raise BackendError(f"provider 'cpu' needs device cpu, got {device}")
    if _EP_NAMES[provider] not in available:
        raise BackendError(
            f"onnxruntime {ort.__version__} has no {_EP_NAMES[provider]} (available: "
            f"{', '.join(available)}): {_provider_install_hint(provider)}"
        )
    return provider


__all__ = ["CudaOptions", "OnnxRuntimeBackend", "PROVIDERS", "preload_tensorrt_libs"]

"""The onnxruntime backend: SAM 2.1 stages run from the graphs of ``sam2s export``.

Execution providers: CPU; with ``device="cuda[:N]"`` the CUDA EP or the TensorRT EP
(``onnxruntime-gpu``). The graphs, their I/O names and ``constants.npz`` are described in
:mod:`sam2s_ros.export.contract`; no torch weights are needed (torch only carries tensors across
the backend interface). Before any session is created, ``manifest.json`` is checked
against the tracker configuration (image size, model size, checkpoint sha256 or random
weights seed, graph format), then every graph's own metadata_props.

Verified here: CPU EP (fp32 and fp16 graphs). Written for, but not run on, a GPU: the CUDA
EP and TensorRT EP paths (IO binding on torch CUDA tensors, engine / timing cache under
``<onnx_dir>/trt_cache``); ``scripts/gpu_verify.sh`` runs them where a GPU exists.

The runtime-independent part (:class:`~sam2s_ros.backends.graph.GraphBackend`) is shared
with the native TensorRT backend.
"""

from __future__ import annotations

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
    GRAPHS,
    PRECISIONS,
    TRT_CACHE_SUBDIR,
    bind_dims,
)

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
_EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


class OnnxRuntimeBackend(GraphBackend):
    """SAM 2.1 stages from ONNX graphs with onnxruntime.

    Args:
        onnx_dir: folder written by ``sam2s export``.
        image_size, model_size: what the tracker runs (checked against the graphs).
        device: "cpu" or "cuda[:N]".
        precision: "fp32" (``<stage>.onnx``) or "fp16" (``<stage>.fp16.onnx``; with the
            TensorRT EP the fp32 graphs are used and TensorRT builds fp16 engines).
        provider: "auto" (CPU on cpu; on cuda the TensorRT EP when onnxruntime has it,
            else the CUDA EP), "cpu", "cuda" or "tensorrt".
        checkpoint_sha256, weights: identity of the loaded weights (None: not checked).
        num_threads: intra-op threads (default torch.get_num_threads()).

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
    ):
        ort = _import_onnxruntime()
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        self.image_size = int(image_size)
        self.onnx_dir = Path(onnx_dir)
        self.provider = _choose_provider(ort, provider, self.device)
        self.precision = precision
        graph_precision = "fp32" if self.provider == "tensorrt" else precision
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} requested but torch sees no CUDA GPU; the onnxruntime backend "
                "hands CUDA tensors to onnxruntime (install a CUDA build of torch) or use device:=cpu"
            )
        self.manifest = check_export(self.onnx_dir, self.image_size, model_size, checkpoint_sha256, weights)
        paths = {s: self.onnx_dir / g.filename(graph_precision) for s, g in GRAPHS.items()}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            flag = " --fp16" if graph_precision == "fp16" else ""
            hint = EXPORT_HINT.format(size=model_size, s=image_size, dir=self.onnx_dir)
            raise BackendError(
                f"onnx_dir {self.onnx_dir} lacks {', '.join(missing)}; re-export with{flag} --force ({hint})"
            )
        self._no_mem_embed, self._maskmem_pos = load_constants(self.onnx_dir, self.image_size, self.device)
        self.session_options = self._session_options(ort, num_threads)
        self.sessions = {}
        for stage, path in paths.items():
            sess = self._session(ort, path, self.session_options)
            meta = sess.get_modelmeta().custom_metadata_map
            problems = identity_problems(meta, self.image_size, model_size, checkpoint_sha256, weights)
            if meta.get("stage") != stage or meta.get("precision") != graph_precision:
                problems.append(f"stage/precision {meta.get('stage')}/{meta.get('precision')}")
            if problems:
                raise BackendError(f"{path} does not fit: {'; '.join(problems)}; re-export with --force")
            self.sessions[stage] = sess
        self.providers = self.sessions["image_encoder"].get_providers()

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
            providers.append(("CUDAExecutionProvider", {"device_id": _cuda_index(self.device)}))
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")
        try:
            sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        wanted = _EP_NAMES[self.provider]
        if sess.get_providers()[0] != wanted:
            raise BackendError(
                f"onnxruntime fell back to {sess.get_providers()} for {path.name} although {wanted} "
                f"was requested: {_provider_install_hint(self.provider)}"
            )
        return sess

    def _provider_entry(self, path: Path):
        if self.provider == "cpu":
            return "CPUExecutionProvider"
        if self.provider == "cuda":
            return ("CUDAExecutionProvider", {"device_id": _cuda_index(self.device)})
        cache = self.onnx_dir / TRT_CACHE_SUBDIR
        cache.mkdir(parents=True, exist_ok=True)
        spec = GRAPHS[path.name.split(".")[0]]
        profiles = spec.profile_shapes(self.image_size)

        def shapes(i: int) -> str:
            return ",".join(f"{n}:{'x'.join(map(str, p[i]))}" for n, p in profiles.items())

        options = {
            "device_id": _cuda_index(self.device),
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        if profiles:
            options.update(
                trt_profile_min_shapes=shapes(0), trt_profile_opt_shapes=shapes(1), trt_profile_max_shapes=shapes(2)
            )
        return ("TensorrtExecutionProvider", options)

    def _run(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sess, spec = self.sessions[stage], GRAPHS[stage]
        if self.device.type == "cpu":
            outs = sess.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in feeds.items()})
            return {t.name: torch.from_numpy(o) for t, o in zip(spec.outputs, outs)}
        return self._run_cuda(sess, stage, feeds)

    def _run_cuda(self, sess, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """IO binding on torch CUDA tensors (outputs preallocated from the graph contract)."""
        spec, dev = GRAPHS[stage], _cuda_index(self.device)
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
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch are ready
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
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


def _choose_provider(ort, provider: str, device: torch.device) -> str:
    if provider not in PROVIDERS:
        raise BackendError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    available = ort.get_available_providers()
    if provider == "auto":
        if device.type == "cpu":
            return "cpu"
        provider = "tensorrt" if _EP_NAMES["tensorrt"] in available else "cuda"
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


__all__ = ["OnnxRuntimeBackend", "PROVIDERS"]

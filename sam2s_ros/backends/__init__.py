"""Inference runtimes behind one interface (sam2s_ros.backends.base.Backend).

``create_backend(cfg, model)`` picks the runtime named by ``cfg.backend``:
- "torch": PyTorch on CPU or CUDA (sam2s_ros.backends.torch_backend).
- "onnxruntime": the graphs of ``sam2s export`` in ``cfg.onnx_dir`` with onnxruntime; CPU,
  or on ``cuda`` the TensorRT EP when its libraries load, else the CUDA EP with a logged
  warning (sam2s_ros.backends.onnxruntime_backend).
- "tensorrt": native TensorRT 10 engines built by ``sam2s export --tensorrt`` in
  ``<onnx_dir>/tensorrt`` (sam2s_ros.backends.tensorrt_backend; CUDA only).
``cfg.autocast_dtype`` "float16" selects fp16 graphs / engines for the non-torch backends,
"int8" the int8 graphs of onnxruntime on CPU (:func:`graph_precision`).
Runtimes whose libraries are missing raise BackendError naming what to install. The graph
backends get the optimization-profile limits the configuration needs
(``contract.profile_dims_for(cfg)``) and, on CUDA, are warmed up here (engine builds).
"""

from __future__ import annotations

import logging

from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import DEFAULT_ONNX_DIR

#: graph precision (contract.PRECISIONS) of each TrackerConfig.autocast_dtype the graph backends run
GRAPH_PRECISION = {"none": "fp32", "float16": "fp16", "int8": "int8"}


def graph_precision(cfg) -> str:
    """The graph precision of ``cfg.autocast_dtype`` for ``cfg.backend`` (onnxruntime / tensorrt).

    Raises:
        BackendError: bfloat16 (onnxruntime 1.31's CPU EP has no bfloat16 MatMul kernel, so a
            bf16 graph cannot load; the torch backend runs bfloat16), or int8 on TensorRT.
    """
    if cfg.autocast_dtype == "bfloat16":
        raise BackendError(
            f"backend {cfg.backend!r} runs fp32, fp16 or int8 graphs: onnxruntime's CPU EP has no bfloat16 "
            "MatMul kernels; set autocast_dtype to 'int8' (onnxruntime, CPU) or use backend 'torch' for 'bfloat16'"
        )
    if cfg.autocast_dtype == "int8" and cfg.backend == "tensorrt":
        raise BackendError("backend 'tensorrt' builds fp32 or fp16 engines: set autocast_dtype to 'none' or 'float16'")
    return GRAPH_PRECISION[cfg.autocast_dtype]


def create_backend(cfg, model):
    """Instantiate the backend named by ``cfg.backend`` for a loaded model.

    Args:
        cfg: TrackerConfig.
        model: sam2s_ros.model.loader.LoadedModel (the graph backends use only its
            identity: checkpoint_sha256 and weights, checked against the graphs).

    Raises:
        BackendError: unknown backend, its runtime/device is missing, or its graphs are
            missing or were exported for another model, image size or checkpoint.
    """
    if cfg.backend == "torch":
        from sam2s_ros.backends.torch_backend import TorchBackend

        return TorchBackend(model.sam, device=cfg.device, autocast_dtype=cfg.autocast_dtype)
    from sam2s_ros.export.contract import profile_dims_for

    identity = dict(
        image_size=cfg.image_size,
        model_size=cfg.model_size,
        checkpoint_sha256=model.checkpoint_sha256,
        weights=model.weights,
        profile_dims=profile_dims_for(cfg),
    )
    onnx_dir = cfg.onnx_dir or DEFAULT_ONNX_DIR
    if cfg.backend == "onnxruntime":
        from sam2s_ros.backends.onnxruntime_backend import CudaOptions, OnnxRuntimeBackend

        cuda = CudaOptions(cfg.ort_arena_extend_strategy, cfg.ort_gpu_mem_limit_mb, cfg.ort_cudnn_conv_algo_search)
        backend = OnnxRuntimeBackend(
            onnx_dir, device=cfg.device, precision=graph_precision(cfg), cuda_options=cuda, **identity
        )
    elif cfg.backend == "tensorrt":
        from sam2s_ros.backends.tensorrt_backend import TensorRTBackend

        backend = TensorRTBackend(onnx_dir, device=cfg.device, precision=graph_precision(cfg), **identity)
    else:
        raise BackendError(f"backend {cfg.backend!r} is not available in this build (torch, onnxruntime, tensorrt)")
    if backend.device.type == "cuda":
        # the TensorRT EP builds its engines on a graph's first run (minutes the first time):
        # do it now, not on the first camera frame; diagnostics report backend_warmup_s
        logging.getLogger(__name__).info("warming up the %s backend (first runs build / load engines)", cfg.backend)
        backend.warmup()
    return backend

"""Inference runtimes behind one interface (sam2s_ros.backends.base.Backend).

``create_backend(cfg, model)`` picks the runtime named by ``cfg.backend``:
- "torch": PyTorch on CPU or CUDA (sam2s_ros.backends.torch_backend).
- "onnxruntime": the graphs of ``sam2s export`` in ``cfg.onnx_dir`` with onnxruntime; CPU,
  or on ``cuda`` the TensorRT EP (when onnxruntime-gpu has it) else the CUDA EP
  (sam2s_ros.backends.onnxruntime_backend).
- "tensorrt": native TensorRT 10 engines built by ``sam2s export --tensorrt`` in
  ``<onnx_dir>/tensorrt`` (sam2s_ros.backends.tensorrt_backend; CUDA only).
``cfg.autocast_dtype`` "float16" selects fp16 graphs / engines for the non-torch backends.
Runtimes whose libraries are missing raise BackendError naming what to install.
"""

from __future__ import annotations

from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import DEFAULT_ONNX_DIR


def _graph_precision(cfg) -> str:
    if cfg.autocast_dtype == "bfloat16":
        raise BackendError(
            f"backend {cfg.backend!r} runs fp32 or fp16 graphs: set autocast_dtype to "
            "'none' or 'float16' ('bfloat16' is for the torch backend)"
        )
    return "fp16" if cfg.autocast_dtype == "float16" else "fp32"


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
    identity = dict(
        image_size=cfg.image_size,
        model_size=cfg.model_size,
        checkpoint_sha256=model.checkpoint_sha256,
        weights=model.weights,
    )
    onnx_dir = cfg.onnx_dir or DEFAULT_ONNX_DIR
    if cfg.backend == "onnxruntime":
        from sam2s_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_dir, device=cfg.device, precision=_graph_precision(cfg), **identity)
    if cfg.backend == "tensorrt":
        from sam2s_ros.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(onnx_dir, device=cfg.device, precision=_graph_precision(cfg), **identity)
    raise BackendError(f"backend {cfg.backend!r} is not available in this build (torch, onnxruntime, tensorrt)")

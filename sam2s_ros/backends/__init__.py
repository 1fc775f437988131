"""Inference runtimes behind one interface (sam2s_ros.backends.base.Backend).

``create_backend(cfg, model)`` picks the runtime named by ``cfg.backend``:
- "torch": PyTorch on CPU or CUDA (sam2s_ros.backends.torch_backend).
Runtimes whose libraries are missing raise BackendError naming what to install.
"""

from __future__ import annotations

from sam2s_ros.errors import BackendError


def create_backend(cfg, model):
    """Instantiate the backend named by ``cfg.backend`` for a loaded model.

    Args:
        cfg: TrackerConfig.
        model: sam2s_ros.model.loader.LoadedModel.

    Raises:
        BackendError: unknown backend, or its runtime/device is missing.
    """
    if cfg.backend == "torch":
        from sam2s_ros.backends.torch_backend import TorchBackend

        return TorchBackend(model.sam, device=cfg.device, autocast_dtype=cfg.autocast_dtype)
    raise BackendError(f"backend {cfg.backend!r} is not available in this build")

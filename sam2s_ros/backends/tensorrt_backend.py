"""The native TensorRT backend: SAM 2.1 stages from engines built by ``sam2s export --tensorrt``.

TensorRT 10 runtime, tensors addressed by name: per call each input's shape is set
(``set_input_shape``), outputs are allocated as torch CUDA tensors from the shapes the
context infers, every address is set (``set_tensor_address``) and the engine runs with
``execute_async_v3`` on torch's current CUDA stream, so no extra synchronisation is
needed between torch and TensorRT work. Engines live in ``<onnx_dir>/tensorrt`` with a
sidecar json each (see sam2s_ros.export.tensorrt_build); an engine built from other
graphs, with another TensorRT version or precision is refused.

NOT verified here: written for machines with an NVIDIA GPU, CUDA torch and TensorRT 10
(run by ``scripts/gpu_verify.sh``). This machine has neither GPU nor TensorRT; what is
tested here is the clear BackendError naming what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from sam2s_ros.backends.graph import GraphBackend, check_export, load_constants
from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import GRAPHS, PRECISIONS, TENSORRT_SUBDIR

_INSTALL = (
    "the 'tensorrt' Python package, TensorRT >= 10 (e.g. `pip install tensorrt-cu12` from NVIDIA's "
    "index; needs an NVIDIA GPU and driver)"
)


def _require_runtime(device: torch.device):
    """Import tensorrt and check CUDA; one BackendError listing everything that is missing."""
    missing = []
    if device.type != "cuda":
        raise BackendError(f"backend 'tensorrt' runs on a CUDA GPU only: set device to cuda[:N], not {device}")
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
        missing.append(_INSTALL)
    if trt is not None and int(str(trt.__version__).split(".")[0]) < 10:
        missing.append(f"TensorRT >= 10 (found {trt.__version__})")
    if not torch.cuda.is_available():
        missing.append(
            f"a CUDA GPU visible to torch (torch {torch.__version__} sees none; install a CUDA build "
            "of torch and the NVIDIA driver)"
        )
    if missing:
        raise BackendError(
            "backend 'tensorrt' needs "
            + "; and ".join(missing)
            + ". Alternatives: backend onnxruntime (CPU, or onnxruntime-gpu) or torch"
        )
    return trt


class _Engine:
    """One deserialized engine with its execution context; tensors by name."""

    def __init__(self, trt, runtime, path: Path, device: torch.device):
        self.trt, self.path, self.device = trt, path, device
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT cannot deserialize {path} (built by another TensorRT version or for "
                "another GPU?); rebuild with sam2s export --tensorrt --force"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
            trt.bool: torch.bool,
            trt.int8: torch.int8,
        }

    def run(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.inputs:
            x = feeds[name]
            if not self.context.set_input_shape(name, tuple(x.shape)):
                lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                raise BackendError(
                    f"{self.path.name}: input {name} shape {tuple(x.shape)} is outside the engine's "
                    f"profile {tuple(lo)}..{tuple(hi)}; rebuild with larger max dims"
                )
            self.context.set_tensor_address(name, x.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self._dtypes[self.engine.get_tensor_dtype(name)], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT execution of {self.path.name} failed")
        return outs


class TensorRTBackend(GraphBackend):
    """SAM 2.1 stages as native TensorRT engines (CUDA only).

    Args:
        onnx_dir: export folder holding ``tensorrt/<stage>.engine`` (+ .json) and constants.npz.
        image_size, model_size, checkpoint_sha256, weights: the tracker's model (checked).
        device: "cuda[:N]".
        precision: "fp32" or "fp16": must be the precision the engines were built with.

    Raises:
        BackendError: tensorrt / CUDA missing, engines missing, stale or for another model.
    """

    name = "tensorrt"

    def __init__(
        self,
        onnx_dir,
        image_size: int,
        model_size: str,
        device: str = "cuda",
        precision: str = "fp16",
        checkpoint_sha256: Optional[str] = None,
        weights: Optional[str] = None,
    ):
        self.device = torch.device(device)
        trt = _require_runtime(self.device)
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.image_size, self.onnx_dir, self.precision = int(image_size), Path(onnx_dir), precision
        check_export(self.onnx_dir, self.image_size, model_size, checkpoint_sha256, weights)
        self._no_mem_embed, self._maskmem_pos = load_constants(self.onnx_dir, self.image_size, self.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines = {}
        with torch.cuda.device(self.device):
            for stage, spec in GRAPHS.items():
                path = self.onnx_dir / TENSORRT_SUBDIR / spec.engine_filename()
                self._check_sidecar(trt, path)
                self.engines[stage] = _Engine(trt, runtime, path, self.device)
                if set(self.engines[stage].inputs) != {t.name for t in spec.inputs}:
                    raise BackendError(
                        f"{path} has inputs {self.engines[stage].inputs}, expected "
                        f"{[t.name for t in spec.inputs]}; rebuild it"
                    )

    def _check_sidecar(self, trt, path: Path) -> None:
        from sam2s_ros.model.checkpoint import file_sha256

        hint = f"build engines with: sam2s export ... --out {self.onnx_dir} --tensorrt [--fp16] --force"
        sidecar = Path(f"{path}.json")
        if not path.is_file() or not sidecar.is_file():
            raise BackendError(f"{path} (or its .json) is missing; {hint}")
        info = json.loads(sidecar.read_text())
        onnx_path = self.onnx_dir / info.get("onnx", "")
        problems = []
        if info.get("tensorrt_version") != trt.__version__:
            problems.append(f"built with TensorRT {info.get('tensorrt_version')}, running {trt.__version__}")
        if info.get("precision") != self.precision:
            problems.append(f"precision {info.get('precision')} (config: {self.precision})")
        if not onnx_path.is_file() or info.get("onnx_sha256") != file_sha256(onnx_path):
            problems.append(f"built from another {info.get('onnx')} than the one in {self.onnx_dir}")
        if problems:
            raise BackendError(f"engine {path} is stale: {'; '.join(problems)}; {hint}")

    def _run(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.engines[stage].run(feeds)
        return {k: v.float() for k, v in out.items()}


__all__ = ["TensorRTBackend"]

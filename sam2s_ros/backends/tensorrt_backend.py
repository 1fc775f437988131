"""The native TensorRT backend: SAM 2.1 stages from engines built by ``sam2s export --tensorrt``.

TensorRT 10 runtime, tensors addressed by name: per call each input's shape is set
(``set_input_shape``), outputs are allocated as torch CUDA tensors from the shapes the
context infers, every address is set (``set_tensor_address``) and the engine runs with
``execute_async_v3`` on the backend's dedicated CUDA stream (never the legacy default
stream, which synchronises with every other stream), inside the configured device.
Execution contexts are created ``USER_MANAGED``: one :class:`SharedScratch` buffer, sized
for the current shapes, serves all six (the default static allocation would reserve the
profile-maximum activation memory once per context: GBs for memory attention at 1024²).
At start the engines' optimization profiles are checked against what the tracker
configuration can feed (``profile_dims``). Engines live in ``<onnx_dir>/tensorrt`` with a
sidecar json each (see sam2s_ros.export.tensorrt_build); an engine built from other
graphs, with another TensorRT version or precision is refused.

NOT verified on a GPU here: written for machines with an NVIDIA GPU, CUDA torch and
TensorRT 10 (run by ``scripts/gpu_verify.sh``). Tested here: the BackendError naming what
is missing, and the engine / scratch / profile logic against a fake ``tensorrt`` module.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import torch

from sam2s_ros.backends.graph import GraphBackend, check_export, check_profile, load_constants
from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import DYNAMIC_DIMS, PRECISIONS, TENSORRT_SUBDIR, dims_from_profile, graphs_for

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


class SharedScratch:
    """One device buffer for the activations of every execution context (TensorRT
    ``USER_MANAGED`` allocation): the contexts run one after another on one stream, so they
    can share it. It grows to the largest size asked for (per the current input shapes,
    not the profile maximum) and is allocated through torch's caching allocator on the
    backend's stream.
    """

    #: TensorRT needs 256-byte aligned device memory; torch's blocks are 512-byte aligned
    ALIGNMENT = 256

    def __init__(self, device: torch.device, stream=None):
        self.device, self.stream = device, stream
        self.buffer: Optional[torch.Tensor] = None

    @property
    def nbytes(self) -> int:
        return 0 if self.buffer is None else self.buffer.numel()

    def ensure(self, size: int) -> tuple[int, int]:
        """(address, size) of a buffer of at least ``size`` bytes."""
        if size > self.nbytes:
            self.buffer = None  # free first: growing must not need old + new at once
            ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
            with ctx:
                self.buffer = torch.empty(int(size), dtype=torch.uint8, device=self.device)
        if self.buffer is None:
            return 0, 0
        return self.buffer.data_ptr(), self.nbytes


def _create_context(trt, engine, path: Path):
    """An execution context without its own activation memory (None = TensorRT could not)."""
    strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
    if strategy is not None:
        return engine.create_execution_context(strategy)
    legacy = getattr(engine, "create_execution_context_without_device_memory", None)
    if legacy is None:
        raise BackendError(f"TensorRT {trt.__version__} cannot create a context with shared memory for {path.name}")
    return legacy()


class _Engine:
    """One deserialized engine with its execution context; tensors by name."""

    def __init__(self, trt, runtime, path: Path, device: torch.device, scratch: SharedScratch):
        self.trt, self.path, self.device, self.scratch = trt, path, device, scratch
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT cannot deserialize {path} (built by another TensorRT version or for "
                "another GPU?); rebuild with sam2s export --tensorrt --force"
            )
        self.context = _create_context(trt, self.engine, path)
        if self.context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {path.name} (out of GPU memory?); "
                "free GPU memory or rebuild with smaller limits (max_instruments, divemem)"
            )
        self._bound: tuple[int, int] = (0, 0)
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

    def profile(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """{input: (min, opt, max) shape} of optimization profile 0 (dynamic inputs only)."""
        out = {}
        for name in self.inputs:
            if any(int(d) < 0 for d in self.engine.get_tensor_shape(name)):
                out[name] = tuple(tuple(int(x) for x in s) for s in self.engine.get_tensor_profile_shape(name, 0))
        return out

    def _scratch_size(self) -> int:
        update = getattr(self.context, "update_device_memory_size_for_shapes", None)
        if update is not None:
            return int(update())  # for the shapes just set: far below the profile maximum
        size = getattr(self.engine, "device_memory_size_v2", None)
        return int(size if size is not None else self.engine.device_memory_size)

    def _bind_scratch(self) -> None:
        address, size = self.scratch.ensure(self._scratch_size())
        if (address, size) == self._bound:
            return
        try:
            self.context.set_device_memory(address, size)  # TensorRT >= 10.1 (setDeviceMemoryV2)
        except (AttributeError, TypeError):
            self.context.device_memory = address  # TensorRT 10.0
        self._bound = (address, size)

    def run(self, feeds: dict[str, torch.Tensor], stream_handle: int) -> dict[str, torch.Tensor]:
        for name in self.inputs:
            x = feeds[name]
            if not self.context.set_input_shape(name, tuple(x.shape)):
                lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                raise BackendError(
                    f"{self.path.name}: input {name} shape {tuple(x.shape)} is outside the engine's "
                    f"profile {tuple(lo)}..{tuple(hi)}; rebuild with larger max dims"
                )
            self.context.set_tensor_address(name, x.data_ptr())
        self._bind_scratch()
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self._dtypes[self.engine.get_tensor_dtype(name)], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        if not self.context.execute_async_v3(stream_handle):
            raise BackendError(f"TensorRT execution of {self.path.name} failed")
        return outs


class TensorRTBackend(GraphBackend):
    """SAM 2.1 stages as native TensorRT engines (CUDA only).

    Args:
        onnx_dir: export folder holding ``tensorrt/<stage>.engine`` (+ .json) and constants.npz.
        image_size, model_size, checkpoint_sha256, weights: the tracker's model (checked).
        device: "cuda[:N]".
        precision: "fp32" or "fp16": must be the precision the engines were built with.
        profile_dims: (min, opt, max) per dynamic axis the tracker configuration needs
            (contract.profile_dims_for(cfg)); engines whose profiles are smaller are refused.

    Raises:
        BackendError: tensorrt / CUDA missing, engines missing, stale, for another model or
            with optimization profiles smaller than the configuration needs.
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
        profile_dims: Optional[dict] = None,
    ):
        self.device = torch.device(device)
        trt = _require_runtime(self.device)
        if precision not in PRECISIONS or precision == "int8":
            raise BackendError(f"precision must be fp32 or fp16 (engines), got {precision!r}")
        self.image_size, self.onnx_dir, self.precision = int(image_size), Path(onnx_dir), precision
        check_export(self.onnx_dir, self.image_size, model_size, checkpoint_sha256, weights)
        self.graphs = graphs_for(model_size)
        self._no_mem_embed, self._maskmem_pos = load_constants(self.onnx_dir, self.image_size, self.device)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._init_stream()
        self.scratch = SharedScratch(self.device, self.stream)
        self.engines = {}
        have: dict[str, tuple[int, int, int]] = {}
        with torch.cuda.device(self.device):
            for stage, spec in self.graphs.items():
                path = self.onnx_dir / TENSORRT_SUBDIR / spec.engine_filename()
                self._check_sidecar(trt, path)
                self.engines[stage] = _Engine(trt, runtime, path, self.device, self.scratch)
                if set(self.engines[stage].inputs) != {t.name for t in spec.inputs}:
                    raise BackendError(
                        f"{path} has inputs {self.engines[stage].inputs}, expected "
                        f"{[t.name for t in spec.inputs]}; rebuild it"
                    )
                for axis, rng in dims_from_profile(spec, self.engines[stage].profile(), self.image_size).items():
                    lo, opt, hi = have.get(axis, rng)
                    have[axis] = (max(lo, rng[0]), opt, min(hi, rng[2]))  # every engine must take it
        self.dims = have or None
        check_profile(self.dims, profile_dims or DYNAMIC_DIMS, f"the engines in {self.onnx_dir / TENSORRT_SUBDIR}")

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
        # enter the configured GPU: the ROS worker thread starts on device 0 (cuda:1 would fail)
        with torch.cuda.device(self.device):
            out = self.engines[stage].run(feeds, self.stream.cuda_stream)
            return {k: v.float() for k, v in out.items()}


__all__ = ["SharedScratch", "TensorRTBackend"]

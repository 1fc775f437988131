"""The GPU paths of the graph backends, on CPU: a stubbed onnxruntime and a fake tensorrt.

Issue #14. Nothing here needs a GPU: the fakes stand for ``onnxruntime-gpu`` (providers,
sessions, IO binding), ``tensorrt`` (engines, contexts, builder) and CUDA streams, and
record what the backends hand them. What only a GPU can show (that onnxruntime and
TensorRT accept these options and run) is in test_tensorrt_backend.py (``gpu`` marker,
skipped here with the reason) and scripts/gpu_verify.sh.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2s_ros.backends import graph as graph_mod
from sam2s_ros.backends import onnxruntime_backend as ortb
from sam2s_ros.backends import tensorrt_backend as trtb
from sam2s_ros.backends.graph import GraphBackend, check_profile, run_on_stream
from sam2s_ros.errors import BackendError, PromptError
from sam2s_ros.export import tensorrt_build
from sam2s_ros.export.contract import (
    DYNAMIC_DIMS,
    GRAPH_FORMAT,
    GRAPHS,
    MANIFEST_FILE,
    MAX_PROMPT_POINTS,
    dims_from_profile,
    model_name,
    profile_dims,
    profile_dims_for,
    profile_problems,
)
from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import PromptInput, PromptMode

IMAGE_SIZE = 128
TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


# ---- fakes -----------------------------------------------------------------------------------
class FakeStream:
    """Stands for torch.cuda.Stream: a handle and the streams it was told to wait for."""

    def __init__(self, handle: int = 0xBEEF):
        self.cuda_stream = handle
        self.waited_for: list = []

    def wait_stream(self, other) -> None:
        self.waited_for.append(other)

    def synchronize(self) -> None:
        pass


class FakeRunOptions:
    def __init__(self):
        self.entries = {}

    def add_run_config_entry(self, key, value):
        self.entries[key] = value


class FakeSessionOptions:
    def add_session_config_entry(self, key, value):
        pass


class FakeBinding:
    def __init__(self):
        self.inputs, self.outputs = [], []

    def bind_input(self, name, device, device_id, dtype, shape, ptr):
        self.inputs.append((name, device, device_id))

    def bind_output(self, name, device, device_id, dtype, shape, ptr):
        self.outputs.append((name, device, device_id))


def fake_onnxruntime(trt_loads: bool = True, trt_raises: bool = False, listed=(TRT_EP, CUDA_EP, CPU_EP)):
    """An ``onnxruntime`` module whose TensorRT EP loads, silently falls back, or raises."""
    ort = types.SimpleNamespace(__version__="1.31.1-fake", created=[], runs=[])
    ort.get_available_providers = lambda: list(listed)
    ort.SessionOptions = FakeSessionOptions
    ort.RunOptions = FakeRunOptions
    ort.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)

    class Session:
        def __init__(self, path, sess_options=None, providers=()):
            names = [p if isinstance(p, str) else p[0] for p in providers]
            if names[0] == TRT_EP and trt_raises:
                raise RuntimeError("TensorRT EP: engine build failed")
            got = names if names[0] != TRT_EP or trt_loads else names[1:]  # onnxruntime drops an EP it cannot load
            self.path, self.providers, self._got = Path(path), providers, got
            stage, *rest = self.path.name.split(".")
            self._meta = {
                "stage": stage,
                "precision": "fp16" if rest[0] == "fp16" else "fp32",
                "graph_format": GRAPH_FORMAT,
                "image_size": str(IMAGE_SIZE),
                "model": model_name("tiny"),
                "checkpoint_sha256": "",
                "weights": "w",
            }
            ort.created.append(self)

        def get_providers(self):
            return list(self._got)

        def get_modelmeta(self):
            return types.SimpleNamespace(custom_metadata_map=self._meta)

        def io_binding(self):
            return FakeBinding()

        def run_with_iobinding(self, binding, run_options=None):
            ort.runs.append((binding, run_options))

    ort.InferenceSession = Session
    return ort


@pytest.fixture
def graphs_dir(tmp_path):
    """An export folder with a manifest and empty graph files (the fake sessions read nothing)."""
    manifest = {
        "graph_format": GRAPH_FORMAT,
        "image_size": str(IMAGE_SIZE),
        "model": model_name("tiny"),
        "checkpoint_sha256": "",
        "weights": "w",
        "profile_dims": {k: list(v) for k, v in DYNAMIC_DIMS.items()},
    }
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    for spec in GRAPHS.values():
        for precision in ("fp32", "fp16"):
            (tmp_path / spec.filename(precision)).write_bytes(b"")
    return tmp_path


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch believes in a GPU; streams and constants stay on the CPU."""
    preloads = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream())
    monkeypatch.setattr(ortb, "load_constants", lambda *a: (torch.zeros(256), torch.zeros(1, 64, 8, 8)))
    monkeypatch.setattr(ortb, "preload_tensorrt_libs", lambda: preloads.append(1) or "fake")
    return preloads


def _ort_backend(monkeypatch, graphs_dir, ort, **kw):
    monkeypatch.setattr(ortb, "_import_onnxruntime", lambda: ort)
    return ortb.OnnxRuntimeBackend(
        graphs_dir, IMAGE_SIZE, "tiny", device="cuda", checkpoint_sha256="", weights="w", **kw
    )


# ---- item 1: provider choice and fallback ----------------------------------------------------------
def test_auto_uses_the_tensorrt_ep_when_it_loads(monkeypatch, graphs_dir, fake_cuda):
    ort = fake_onnxruntime(trt_loads=True)
    backend = _ort_backend(monkeypatch, graphs_dir, ort, precision="fp16")
    assert backend.provider == "tensorrt"
    assert backend.fallback_reason is None
    assert fake_cuda == [1]  # TensorRT libraries made loadable before the first session
    assert {s.path.name.endswith(".fp16.onnx") for s in ort.created} == {False}  # TensorRT EP builds fp16 itself
    assert backend.dims == DYNAMIC_DIMS


def test_auto_falls_back_to_the_cuda_ep_with_a_warning(monkeypatch, graphs_dir, fake_cuda, caplog):
    ort = fake_onnxruntime(trt_loads=False)
    with caplog.at_level(logging.WARNING, logger=ortb.__name__):
        backend = _ort_backend(monkeypatch, graphs_dir, ort, precision="fp16")
    assert backend.provider == "cuda"
    assert "falling back to the CUDA EP" in caplog.text
    assert "TensorrtExecutionProvider" in backend.fallback_reason
    cuda_sessions = [s for s in ort.created if s.providers[0][0] == CUDA_EP]
    assert {s.path.name.split(".", 1)[1] for s in cuda_sessions} == {"fp16.onnx"}
    assert backend.dims is None  # the CUDA EP takes any shape


def test_auto_falls_back_when_the_tensorrt_ep_raises(monkeypatch, graphs_dir, fake_cuda):
    backend = _ort_backend(monkeypatch, graphs_dir, fake_onnxruntime(trt_raises=True))
    assert backend.provider == "cuda"
    assert "engine build failed" in backend.fallback_reason


def test_explicit_tensorrt_provider_does_not_fall_back(monkeypatch, graphs_dir, fake_cuda):
    with pytest.raises(BackendError, match="TensorrtExecutionProvider.*libnvinfer"):
        _ort_backend(monkeypatch, graphs_dir, fake_onnxruntime(trt_loads=False), provider="tensorrt")


def test_cuda_ep_falling_back_to_cpu_is_an_error(monkeypatch, graphs_dir, fake_cuda):
    ort = fake_onnxruntime(listed=(CUDA_EP, CPU_EP))
    ort.InferenceSession = type(
        "CpuOnly", (ort.InferenceSession,), {"get_providers": lambda self: [CPU_EP]}
    )  # e.g. cuDNN missing
    with pytest.raises(BackendError, match="CUDAExecutionProvider was requested"):
        _ort_backend(monkeypatch, graphs_dir, ort)


def test_preload_imports_tensorrt_first(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert ortb.preload_tensorrt_libs() == "tensorrt"


def test_preload_loads_the_pip_wheel_libraries_nvinfer_first(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    pkg = tmp_path / "tensorrt_libs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("libnvonnxparser.so.10", "libnvinfer_plugin.so.10", "libnvinfer.so.10"):
        (pkg / name).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = []
    monkeypatch.setattr(ortb.ctypes, "CDLL", lambda path, mode=0: loaded.append((Path(path).name, mode)))
    assert ortb.preload_tensorrt_libs() == f"tensorrt_libs {pkg}"
    assert loaded[0] == ("libnvinfer.so.10", ortb.ctypes.RTLD_GLOBAL)
    assert len(loaded) == 3


# ---- items 5 and 6: CUDA EP options, one stream, no syncs ------------------------------------------
def test_cuda_ep_options_and_user_stream(monkeypatch, graphs_dir, fake_cuda):
    ort = fake_onnxruntime(listed=(CUDA_EP, CPU_EP))
    cuda = ortb.CudaOptions(gpu_mem_limit_mb=2048)
    backend = _ort_backend(monkeypatch, graphs_dir, ort, cuda_options=cuda)
    name, opts = ort.created[0].providers[0]
    assert name == CUDA_EP
    assert opts["arena_extend_strategy"] == "kSameAsRequested"
    assert opts["cudnn_conv_algo_search"] == "HEURISTIC"
    assert opts["gpu_mem_limit"] == str(2048 << 20)
    assert opts["user_compute_stream"] == str(0xBEEF)
    assert backend.run_options.entries == {ortb.NO_SYNC_RUN_KEY: "1"}


def test_tensorrt_ep_gets_the_stream_and_the_config_profile(monkeypatch, graphs_dir, fake_cuda):
    ort = fake_onnxruntime()
    dims = profile_dims(max_instruments=2)
    _ort_backend(monkeypatch, graphs_dir, ort, profile_dims=dims)
    decoder = next(s for s in ort.created if s.path.name == "mask_decoder_multi.onnx")
    (trt_name, trt_opts), (cuda_name, cuda_opts) = decoder.providers[:2]
    assert (trt_name, cuda_name) == (TRT_EP, CUDA_EP)
    assert trt_opts["user_compute_stream"] == cuda_opts["user_compute_stream"] == str(0xBEEF)
    assert f"point_coords:2x{MAX_PROMPT_POINTS}x2" in trt_opts["trt_profile_max_shapes"]


def test_stream_zero_is_never_passed():
    assert "user_compute_stream" not in ortb.CudaOptions().provider_options(0, 0)


def test_cuda_options_are_validated():
    with pytest.raises(BackendError, match="cudnn_conv_algo_search"):
        ortb.CudaOptions(cudnn_conv_algo_search="FAST").validate()


def test_config_carries_the_cuda_ep_options():
    with pytest.raises(Exception, match="ort_arena_extend_strategy"):
        TrackerConfig(ort_arena_extend_strategy="grow").validate()


def test_onnxruntime_run_binds_device_tensors_without_host_syncs(monkeypatch, graphs_dir, fake_cuda):
    ort = fake_onnxruntime(listed=(CUDA_EP, CPU_EP))
    backend = _ort_backend(monkeypatch, graphs_dir, ort)
    backend.device = torch.device("cpu")  # tensors on the CPU stand for CUDA ones here
    monkeypatch.setattr(torch.cuda, "device", lambda d: graph_mod.contextlib.nullcontext())
    feeds = {
        t.name: torch.zeros(t.resolve(IMAGE_SIZE, {}), dtype=torch.float32) for t in GRAPHS["image_encoder"].inputs
    }
    outs = backend._run_cuda(backend.sessions["image_encoder"], "image_encoder", feeds)
    binding, run_options = ort.runs[-1]
    assert run_options.entries[ortb.NO_SYNC_RUN_KEY] == "1"
    assert {d for _, d, _ in binding.inputs + binding.outputs} == {"cuda"}
    assert set(outs) == {t.name for t in GRAPHS["image_encoder"].outputs}


class _Recorder(GraphBackend):
    name = "recorder"

    def __init__(self, stream):
        self.device, self.image_size, self.stream, self.ran_on = torch.device("cpu"), IMAGE_SIZE, stream, []
        self._no_mem_embed = torch.zeros(256)

    def _run(self, stage, feeds):
        self.ran_on.append(stage)
        return {t.name: torch.zeros(t.resolve(IMAGE_SIZE, {"instruments": 1})) for t in GRAPHS[stage].outputs}


def test_graph_calls_wait_on_streams_instead_of_syncing(monkeypatch):
    caller, ours = FakeStream(1), FakeStream(2)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: caller)
    backend = _Recorder(ours)
    backend.encode_image(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert ours.waited_for == [caller]  # graphs start after torch's writes ...
    assert caller.waited_for == [ours]  # ... and torch reads the outputs after the graphs


def test_no_waits_when_the_caller_runs_on_the_backend_stream(monkeypatch):
    ours = FakeStream(2)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ours)
    assert run_on_stream(ours, torch.device("cpu"), lambda: 7) == 7
    assert ours.waited_for == []


def test_warmup_runs_every_graph_and_reports_it():
    backend = _Recorder(None)
    backend.warmup()
    assert backend.ran_on == list(GRAPHS)
    assert backend.describe()["backend_warmup_s"] != ""


# ---- item 3: profiles derived from the configuration --------------------------------------------------
def test_default_profile_is_the_default_config():
    assert profile_dims_for(TrackerConfig()) == DYNAMIC_DIMS


def test_profile_covers_everything_the_tracker_accepts():
    cfg = TrackerConfig(max_instruments=64, divemem=DiveMemConfig(max_cond_frames=10, long_term_enabled=False))
    dims = profile_dims_for(cfg)
    assert dims["instruments"][2] == 64
    assert dims["points"][2] == 64 + 2  # clicks + box corners
    assert dims["mem_frames"][2] == 10 + 6  # conditioning + window (long-term off)
    assert dims["obj_ptrs"][2] == 10 + 15


def test_profile_problems_name_the_short_axes():
    need = profile_dims(max_instruments=16)
    assert profile_problems(DYNAMIC_DIMS, need) == ["instruments max 8 < 16"]
    with pytest.raises(BackendError, match="instruments max 8 < 16"):
        check_profile(DYNAMIC_DIMS, need, "the engines")


def test_engine_profile_shapes_give_the_axes():
    spec = GRAPHS["memory_attention"]
    shapes = spec.profile_shapes(IMAGE_SIZE, profile_dims(max_instruments=5))
    dims = dims_from_profile(spec, shapes, IMAGE_SIZE)
    assert dims["instruments"] == (1, 3, 5)
    assert dims["mem_frames"] == DYNAMIC_DIMS["mem_frames"]


def test_engine_build_takes_the_manifest_profile():
    recorded = {"instruments": (1, 3, 16)}
    dims = tensorrt_build.resolve_dims(recorded, {"points": (1, 2, 8)})
    assert dims["instruments"] == (1, 3, 16)
    assert dims["points"] == (1, 2, 8)


def test_graph_backend_refuses_shapes_outside_its_profile():
    backend = _Recorder(None)
    backend.dims = profile_dims(max_instruments=2)
    feat = torch.zeros(1, 256, IMAGE_SIZE // 16, IMAGE_SIZE // 16)
    with pytest.raises(BackendError, match=r"instruments=3 \(profile 1..2\)"):
        backend.encode_memory(
            types.SimpleNamespace(feat_s2=feat), torch.zeros(3, 1, IMAGE_SIZE, IMAGE_SIZE), torch.zeros(3)
        )


class _LimitedBackend:
    name, image_size, device, max_prompt_points = "limited", IMAGE_SIZE, torch.device("cpu"), 16


def _clicks(n: int, box: bool) -> PromptInput:
    pts = np.full((n, 2), 10.0, np.float32)
    return PromptInput(
        1, PromptMode.NEW, points=pts, labels=np.ones(n, np.int32), box=np.array([1, 1, 50, 50.0]) if box else None
    )


def test_over_long_prompt_is_refused_before_registration():
    tracker = InstrumentTracker(_LimitedBackend(), TrackerConfig(image_size=IMAGE_SIZE))
    tracker.check_prompt(_clicks(14, box=True), (100, 100))  # 16 points: fits
    with pytest.raises(PromptError, match="17 points .*at most 16"):
        tracker.check_prompt(_clicks(15, box=True), (100, 100))
    assert tracker.instrument_ids == []


def test_64_clicks_and_a_box_fit_the_default_limit():
    tracker = InstrumentTracker(
        types.SimpleNamespace(image_size=IMAGE_SIZE, device=torch.device("cpu")), TrackerConfig()
    )
    tracker.check_prompt(_clicks(64, box=True), (100, 100))


# ---- items 4 and 9: native TensorRT contexts, shared scratch, device -----------------------------
class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.memory, self.executed = engine, {}, {}, [], []

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profile[name]
        ok = all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        self.shapes[name] = shape
        return ok

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def update_device_memory_size_for_shapes(self):
        return 1024 * self.shapes["x"][0]  # grows with the batch

    def set_device_memory(self, address, size):
        self.memory.append((address, size))

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def execute_async_v3(self, stream_handle):
        self.executed.append(stream_handle)
        return True


def fake_tensorrt(context_ok: bool = True):
    trt = types.SimpleNamespace(__version__="10.9.0-fake", float32="f32", float16="f16", int32="i32")
    trt.int64, trt.bool, trt.int8 = "i64", "b", "i8"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(STATIC=0, USER_MANAGED=2)

    class Engine:
        num_io_tensors = 2
        profile = {"x": ((1, 4), (2, 4), (8, 4))}
        strategies: list = []

        def get_tensor_name(self, i):
            return ("x", "y")[i]

        def get_tensor_mode(self, name):
            return "in" if name == "x" else "out"

        def get_tensor_shape(self, name):
            return (-1, 4)

        def get_tensor_profile_shape(self, name, index):
            return self.profile[name]

        def get_tensor_dtype(self, name):
            return "f32"

        def create_execution_context(self, strategy=0):
            Engine.strategies.append(strategy)
            return FakeContext(self) if context_ok else None

    trt.Engine = Engine
    trt.runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda data: Engine())
    return trt


def _engine(tmp_path, trt, scratch, name="a"):
    path = tmp_path / f"{name}.engine"
    path.write_bytes(b"engine")
    return trtb._Engine(trt, trt.runtime, path, torch.device("cpu"), scratch)


def test_contexts_are_user_managed_and_share_one_scratch_buffer(tmp_path):
    trt = fake_tensorrt()
    scratch = trtb.SharedScratch(torch.device("cpu"))
    a, b = _engine(tmp_path, trt, scratch, "a"), _engine(tmp_path, trt, scratch, "b")
    assert trt.Engine.strategies == [2, 2]
    a.run({"x": torch.zeros(2, 4)}, 0xBEEF)
    b.run({"x": torch.zeros(1, 4)}, 0xBEEF)
    assert scratch.nbytes == 2048  # sized for the shapes run, not the profile maximum (8)
    assert a.context.memory[0][0] == b.context.memory[0][0] == scratch.buffer.data_ptr()
    assert a.context.executed == [0xBEEF]  # the backend's stream, never 0 (legacy default)
    a.run({"x": torch.zeros(2, 4)}, 0xBEEF)
    assert len(a.context.memory) == 1  # unchanged buffer: not bound again
    a.run({"x": torch.zeros(4, 4)}, 0xBEEF)
    assert scratch.nbytes == 4096
    assert a.context.memory[-1] == (scratch.buffer.data_ptr(), 4096)


def test_a_missing_context_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="could not create an execution context.*out of GPU memory"):
        _engine(tmp_path, fake_tensorrt(context_ok=False), trtb.SharedScratch(torch.device("cpu")))


def test_shapes_outside_the_engine_profile_are_refused(tmp_path):
    engine = _engine(tmp_path, fake_tensorrt(), trtb.SharedScratch(torch.device("cpu")))
    with pytest.raises(BackendError, match="outside the engine's profile"):
        engine.run({"x": torch.zeros(9, 4)}, 1)


def test_engine_profile_reads_dynamic_inputs(tmp_path):
    engine = _engine(tmp_path, fake_tensorrt(), trtb.SharedScratch(torch.device("cpu")))
    assert engine.profile() == {"x": ((1, 4), (2, 4), (8, 4))}


def test_tensorrt_run_enters_the_configured_device(monkeypatch):
    entered = []

    class Device:
        def __init__(self, d):
            entered.append(str(d))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", Device)
    backend = trtb.TensorRTBackend.__new__(trtb.TensorRTBackend)
    backend.device, backend.stream = torch.device("cuda:1"), FakeStream(7)
    seen = []
    backend.engines = {"image_encoder": types.SimpleNamespace(run=lambda feeds, s: seen.append(s) or {})}
    backend._run("image_encoder", {})
    assert entered == ["cuda:1"]
    assert seen == [7]


# ---- item 11: TF32 off for fp32 (parity) engine builds -------------------------------------------------
def test_tf32_is_off_for_fp32_builds_and_on_for_fp16():
    assert not tensorrt_build.tf32_enabled(tensorrt_build.BuildOptions(onnx_dir=Path("."), fp16=False))
    assert tensorrt_build.tf32_enabled(tensorrt_build.BuildOptions(onnx_dir=Path("."), fp16=True))
    assert tensorrt_build.tf32_enabled(tensorrt_build.BuildOptions(onnx_dir=Path("."), fp16=False, tf32=True))


def test_fp32_engine_build_clears_the_tf32_flag(tmp_path):
    flags = []
    trt = types.SimpleNamespace(__version__="10.9.0-fake")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="ws")
    config = types.SimpleNamespace(
        set_memory_pool_limit=lambda *a: None,
        set_flag=lambda f: flags.append(("set", f)),
        clear_flag=lambda f: flags.append(("clear", f)),
        add_optimization_profile=lambda p: None,
        create_timing_cache=lambda data: "cache",
        set_timing_cache=lambda cache, ignore_mismatch: None,
        get_timing_cache=lambda: types.SimpleNamespace(serialize=lambda: b"tc"),
    )
    network = types.SimpleNamespace(num_inputs=0)
    builder = types.SimpleNamespace(
        create_network=lambda flags: network,
        create_builder_config=lambda: config,
        create_optimization_profile=lambda: types.SimpleNamespace(set_shape=lambda *a: None),
        build_serialized_network=lambda n, c: b"plan",
    )
    trt.Builder = lambda logger: builder
    trt.OnnxParser = lambda net, logger: types.SimpleNamespace(parse_from_file=lambda p: True, num_errors=0)
    (tmp_path / "image_encoder.onnx").write_bytes(b"onnx")
    opts = tensorrt_build.BuildOptions(onnx_dir=tmp_path, fp16=False)
    path = tensorrt_build.build_engine(
        trt, None, GRAPHS["image_encoder"], tmp_path, tmp_path / "e.engine", IMAGE_SIZE, opts
    )
    assert ("clear", "TF32") in flags
    assert json.loads(Path(f"{path}.json").read_text())["tf32"] is False


# ---- the GPU-only remainder (conftest skips these without an NVIDIA GPU: "needs CUDA") ------------------
@pytest.mark.gpu
def test_auto_provider_runs_on_the_real_gpu_stack(tmp_path_factory):
    """Real onnxruntime-gpu: auto gives the TensorRT EP where libnvinfer loads, else the CUDA
    EP (never an exception), and its outputs arrive on torch's stream without host syncs."""
    import onnxruntime as ort

    if CUDA_EP not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    from test_onnx_export import IMAGE_SIZE as SIZE
    from test_onnx_export import WEIGHTS, export_once

    from sam2s_ros.backends.torch_backend import TorchBackend
    from sam2s_ros.model.build import build_random_model

    onnx_dir = export_once(tmp_path_factory).out_dir
    backend = ortb.OnnxRuntimeBackend(onnx_dir, SIZE, "tiny", device="cuda", checkpoint_sha256="", weights=WEIGHTS)
    assert backend.provider in ("tensorrt", "cuda")
    assert backend.stream is not None
    ref = TorchBackend(build_random_model("tiny", SIZE, seed=0), device="cuda")
    image = torch.randn(1, 3, SIZE, SIZE, device="cuda")
    ours, theirs = backend.encode_image(image).feat_s2, ref.encode_image(image).feat_s2
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    assert rel < (2e-2 if backend.provider == "tensorrt" else 1e-3)  # relative: TF32 / fp16 tactics

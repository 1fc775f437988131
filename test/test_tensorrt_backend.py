"""TensorRT: clear errors where it is missing (run everywhere), engines and parity on a GPU.

The ``gpu`` tests need an NVIDIA GPU with CUDA torch (conftest skips them otherwise) and
the ``tensorrt`` >= 10 package / onnxruntime-gpu (skipped with the reason when absent);
``scripts/gpu_verify.sh`` runs them. The development and CI machines have neither, so
only the missing-library paths run there.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from test_onnx_export import IMAGE_SIZE, WEIGHTS, export_once

from sam2s_ros.backends import create_backend
from sam2s_ros.backends.tensorrt_backend import TensorRTBackend
from sam2s_ros.errors import BackendError, ExportError
from sam2s_ros.export.contract import GRAPHS
from sam2s_ros.export.tensorrt_build import BuildOptions, build_engines, tensorrt_available
from sam2s_ros.tools import cli

MODEL = types.SimpleNamespace(checkpoint_sha256="", weights=WEIGHTS)
HAS_TRT = tensorrt_available()
needs_no_trt = pytest.mark.skipif(
    HAS_TRT and torch.cuda.is_available(), reason="TensorRT and CUDA are installed: the gpu tests cover this machine"
)


def _identity(**kw):
    return {"image_size": IMAGE_SIZE, "model_size": "tiny", "checkpoint_sha256": "", "weights": WEIGHTS, **kw}


@needs_no_trt
def test_backend_names_what_is_missing(tmp_path):
    with pytest.raises(BackendError) as err:
        TensorRTBackend(tmp_path, device="cuda", **_identity())
    message = str(err.value)
    assert "backend 'tensorrt' needs" in message
    if not HAS_TRT:
        assert "'tensorrt' Python package" in message
        assert "pip install tensorrt-cu12" in message
    if not torch.cuda.is_available():
        assert "a CUDA GPU visible to torch" in message


def test_backend_refuses_cpu(tmp_path):
    with pytest.raises(BackendError, match="CUDA GPU only"):
        TensorRTBackend(tmp_path, device="cpu", **_identity())


@needs_no_trt
def test_create_backend_tensorrt_raises_the_clear_error(tmp_path):
    from sam2s_ros.tracking.config import TrackerConfig

    cfg = TrackerConfig(
        model_size="tiny", image_size=IMAGE_SIZE, backend="tensorrt", device="cuda", onnx_dir=str(tmp_path)
    )
    with pytest.raises(BackendError, match="backend 'tensorrt' needs"):
        create_backend(cfg, MODEL)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_engine_build_names_tensorrt_and_how_to_install(tmp_path):
    with pytest.raises(ExportError, match="'tensorrt' Python package.*pip install tensorrt-cu12"):
        build_engines(BuildOptions(onnx_dir=tmp_path))


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_cli_export_tensorrt_exits_2_before_exporting(tmp_path, capsys):
    out = tmp_path / "onnx"
    assert cli.main(["export", "--random-weights", "--image-size", "256", "--out", str(out), "--tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "sam2s export: error: building TensorRT engines needs the 'tensorrt' Python package" in err
    assert not out.exists()


# ---- on a GPU ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engines_dir(tmp_path_factory):
    if not HAS_TRT:
        pytest.skip("tensorrt >= 10 is not installed (pip install tensorrt-cu12)")
    onnx_dir = export_once(tmp_path_factory).out_dir
    build_engines(BuildOptions(onnx_dir=onnx_dir, fp16=False, force=True))
    return onnx_dir


def _stage_inputs(b: int, gen):
    hw = IMAGE_SIZE // 16
    feats = [torch.randn(1, c, IMAGE_SIZE // s, IMAGE_SIZE // s, generator=gen) for c, s in ((32, 4), (64, 8))]
    coords = torch.rand(b, 3, 2, generator=gen) * IMAGE_SIZE
    labels = torch.randint(0, 4, (b, 3), generator=gen, dtype=torch.int32)
    return hw, feats, coords, labels


@pytest.mark.gpu
@pytest.mark.parametrize("b", [1, 3])
def test_native_tensorrt_matches_torch_on_cuda(engines_dir, b):
    from sam2s_ros.backends.base import ImageFeatures, MemoryInputs
    from sam2s_ros.backends.torch_backend import TorchBackend
    from sam2s_ros.model.build import build_random_model

    trt_backend = TensorRTBackend(engines_dir, device="cuda", precision="fp32", **_identity())
    ref = TorchBackend(build_random_model("tiny", IMAGE_SIZE, seed=0), device="cuda")
    gen = torch.Generator().manual_seed(b)
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).cuda()
    feats = ref.encode_image(image)
    for a, r in zip(trt_backend.encode_image(image), feats):
        assert (a - r).abs().max() < 1e-2
    hw, _, coords, labels = _stage_inputs(b, gen)
    pix = ref.no_memory_features(feats.feat_s2).expand(b, -1, -1, -1)
    for multimask in (True, False):
        ours = trt_backend.decode_masks(pix, feats, coords.cuda(), labels.cuda(), None, multimask)
        theirs = ref.decode_masks(pix, feats, coords.cuda(), labels.cuda(), None, multimask)
        assert (ours.low_res_masks - theirs.low_res_masks).abs().max() < 1e-2
    memory = MemoryInputs(
        torch.randn(b, 7, 64, hw, hw).cuda(),
        torch.randint(0, 7, (b, 7)).cuda(),
        torch.ones(b, 7, dtype=torch.bool).cuda(),
        torch.randn(b, 16, 256).cuda(),
        torch.rand(b, 16).cuda(),
        torch.ones(b, 16, dtype=torch.bool).cuda(),
    )
    got, want = trt_backend.attend_memory(feats, memory).pix_feat, ref.attend_memory(feats, memory).pix_feat
    assert (got - want).abs().max() < 1e-2
    assert isinstance(feats, ImageFeatures)


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_onnxruntime_gpu_providers_match_torch(tmp_path_factory, provider):
    import onnxruntime as ort

    ep = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
    if ep not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no {ep} (install onnxruntime-gpu)")
    from sam2s_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
    from sam2s_ros.backends.torch_backend import TorchBackend
    from sam2s_ros.model.build import build_random_model

    onnx_dir = export_once(tmp_path_factory).out_dir
    backend = OnnxRuntimeBackend(onnx_dir, device="cuda", provider=provider, **_identity())
    ref = TorchBackend(build_random_model("tiny", IMAGE_SIZE, seed=0), device="cuda")
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE).cuda()
    for a, r in zip(backend.encode_image(image), ref.encode_image(image)):
        assert a.is_cuda
        assert (a - r).abs().max() < 1e-2


@pytest.mark.gpu
@pytest.mark.shared_data
@pytest.mark.parametrize("backend_name", ["tensorrt", "onnxruntime"])
def test_tracker_runs_on_gpu_backends(engines_dir, shared_dir, backend_name):
    from sam2s_ros.data import read_davis_sequence
    from sam2s_ros.tracking.config import TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker
    from sam2s_ros.tracking.types import PromptInput, PromptMode

    cfg = TrackerConfig(
        model_size="tiny",
        image_size=IMAGE_SIZE,
        allow_random_weights=True,
        seed=0,
        backend=backend_name,
        device="cuda",
        onnx_dir=str(engines_dir),
        return_mask_logits=True,  # on CUDA only the masks come to the host by default
    )
    if backend_name == "tensorrt":
        cfg.autocast_dtype = "none"  # the engines of engines_dir are fp32
    tracker = InstrumentTracker.from_config(cfg)
    frames = read_davis_sequence(shared_dir / "data" / "cholecseg8k_clip", 8).frames
    box = PromptInput(1, PromptMode.NEW, box=np.array([120.0, 60.0, 420.0, 300.0], np.float32))
    for i, frame in enumerate(frames):
        result = tracker.track(frame, [box] if i == 0 else [])
        assert [r.instrument_id for r in result.instruments] == [1]
        assert np.isfinite(result.instruments[0].mask_logits).all()


def test_every_graph_gets_an_engine():
    assert {g.engine_filename() for g in GRAPHS.values()} == {f"{s}.engine" for s in GRAPHS}

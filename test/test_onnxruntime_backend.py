"""The onnxruntime backend (CPU EP) against the torch backend: every stage, the whole tracker, errors.

Graphs: the session export of test_onnx_export.py (hiera-tiny, random weights seed 0, 256).
"""

from __future__ import annotations

import shutil
import types

import numpy as np
import pytest
import torch
from test_onnx_export import IMAGE_SIZE, WEIGHTS, export_once

from sam2s_ros.backends import create_backend
from sam2s_ros.backends.base import ImageFeatures, MemoryInputs
from sam2s_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from sam2s_ros.backends.torch_backend import TorchBackend
from sam2s_ros.data import read_davis_sequence
from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import GRAPHS, MANIFEST_FILE
from sam2s_ros.model.build import build_random_model
from sam2s_ros.tracking.config import TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import PromptInput, PromptMode

ATOL = 1e-4  # fp32 parity, max abs diff
N_FRAMES = 8
DIMS = [dict(b=1, p=1, f=2, q=1), dict(b=3, p=16, f=7, q=16)]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return export_once(tmp_path_factory).out_dir


@pytest.fixture(scope="module")
def ort_backend(onnx_dir):
    return OnnxRuntimeBackend(onnx_dir, IMAGE_SIZE, "tiny", checkpoint_sha256="", weights=WEIGHTS, num_threads=2)


@pytest.fixture(scope="module")
def torch_backend():
    return TorchBackend(build_random_model("tiny", IMAGE_SIZE, seed=0))


@pytest.fixture(scope="module")
def feats(torch_backend):
    gen = torch.Generator().manual_seed(0)
    return torch_backend.encode_image(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen))


def _close(ours, ref, what):
    ours, ref = torch.as_tensor(ours), torch.as_tensor(ref)
    assert ours.shape == ref.shape, what
    assert ours.dtype == ref.dtype == torch.float32, what
    diff = (ours - ref).abs().max().item()
    assert diff <= ATOL, f"{what}: max |diff| {diff:.2e}"


def _prompts(b: int, p: int, gen):
    coords = torch.rand(b, p, 2, generator=gen) * IMAGE_SIZE
    labels = torch.randint(0, 4, (b, p), generator=gen, dtype=torch.int32)
    labels[:, -1] = torch.where(torch.arange(b) % 2 == 0, -1, labels[:, -1])  # some padding points
    return coords, labels


def test_session_options_do_not_spin(ort_backend):
    assert ort_backend.providers == ["CPUExecutionProvider"]
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert ort_backend.session_options.get_session_config_entry(key) == "0"
    assert ort_backend.session_options.intra_op_num_threads == 2


def test_image_encoder_and_constants(ort_backend, torch_backend, feats):
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    for name, a, b in zip(ImageFeatures._fields, ort_backend.encode_image(image), feats):
        _close(a, b, name)
    _close(ort_backend.maskmem_pos(), torch_backend.maskmem_pos(), "maskmem_pos")
    x = feats.feat_s2.expand(3, -1, -1, -1)
    _close(ort_backend.no_memory_features(x), torch_backend.no_memory_features(x), "no_memory_features")


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "B{b}_P{p}".format(**d))
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_decoder_parity(ort_backend, torch_backend, feats, dims, multimask, with_mask):
    gen = torch.Generator().manual_seed(dims["b"] * 10 + dims["p"])
    b = dims["b"]
    pix = torch.randn(b, 256, IMAGE_SIZE // 16, IMAGE_SIZE // 16, generator=gen)
    coords, labels = _prompts(b, dims["p"], gen)
    mask = torch.randn(b, 1, IMAGE_SIZE // 4, IMAGE_SIZE // 4, generator=gen) * 8 if with_mask else None
    ours = ort_backend.decode_masks(pix, feats, coords, labels, mask, multimask)
    ref = torch_backend.decode_masks(pix, feats, coords, labels, mask, multimask)
    for name, a, r in zip(ours._fields, ours, ref):
        _close(a, r, f"{name} (B={b}, P={dims['p']}, multimask={multimask}, mask={with_mask})")


@pytest.mark.parametrize("b", [1, 3])
def test_mask_prompt_parity(ort_backend, torch_backend, feats, b):
    masks = torch.zeros(b, 1, IMAGE_SIZE, IMAGE_SIZE)
    masks[0, 0, 40:120, 60:200] = 1
    if b > 1:
        masks[1, 0, ::3, ::5] = 1  # aliasing-prone pattern (antialiased downsampling)
    ours, ref = ort_backend.decode_mask_prompt(feats, masks), torch_backend.decode_mask_prompt(feats, masks)
    for name, a, r in zip(ours._fields, ours, ref):
        _close(a, r, f"mask prompt {name} (B={b})")


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "B{b}_F{f}_Q{q}".format(**d))
def test_memory_attention_parity(ort_backend, torch_backend, feats, dims):
    gen = torch.Generator().manual_seed(dims["f"])
    b, f, q, hw = dims["b"], dims["f"], dims["q"], IMAGE_SIZE // 16
    valid = torch.rand(b, f, generator=gen) > 0.3
    valid[:, 0] = True
    ptr_valid = torch.rand(b, q, generator=gen) > 0.3
    ptr_valid[:, 0] = True
    memory = MemoryInputs(
        torch.randn(b, f, 64, hw, hw, generator=gen),
        torch.randint(0, 7, (b, f), generator=gen),
        valid,
        torch.randn(b, q, 256, generator=gen),
        torch.rand(b, q, generator=gen) * 2 - 1,
        ptr_valid,
    )
    _close(
        ort_backend.attend_memory(feats, memory).pix_feat,
        torch_backend.attend_memory(feats, memory).pix_feat,
        f"memory attention B={b} F={f} P={q}",
    )


def test_cpu_memory_attention_runs_per_instrument_with_the_batched_result(ort_backend, feats, monkeypatch):
    """The CPU EP runs memory attention one instrument at a time (batched MatMuls share their
    threads in whole rounds there, benchmarks/ort_batched_matmul.py); rows of a padded batch
    give what one batched run gives."""
    assert ort_backend.memory_attention_rows == 1
    gen = torch.Generator().manual_seed(5)
    hw = IMAGE_SIZE // 16
    valid = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    memory = MemoryInputs(
        torch.randn(3, 3, 64, hw, hw, generator=gen),
        torch.randint(0, 7, (3, 3), generator=gen),
        valid,
        torch.randn(3, 4, 256, generator=gen),
        torch.rand(3, 4, generator=gen) * 2 - 1,
        torch.ones(3, 4, dtype=torch.bool),
        padded=True,
    )
    runs = []
    call = ort_backend._call
    monkeypatch.setattr(ort_backend, "_call", lambda stage, **kw: runs.append(stage) or call(stage, **kw))
    per_row = ort_backend.attend_memory(feats, memory).pix_feat
    assert runs == ["memory_attention"] * 3
    monkeypatch.setattr(OnnxRuntimeBackend, "memory_attention_rows", None)
    batched = ort_backend.attend_memory(feats, memory).pix_feat
    assert runs[3:] == ["memory_attention"]
    _close(per_row, batched, "per-row vs batched memory attention")


@pytest.mark.parametrize("b", [1, 3])
def test_memory_encoder_parity(ort_backend, torch_backend, feats, b):
    gen = torch.Generator().manual_seed(b)
    mask = (torch.rand(b, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen) > 0.5).float() * 20 - 10
    scores = torch.linspace(-1, 1, b)  # absent and present instruments (no_obj_embed_spatial)
    (ours, pos), (ref, ref_pos) = (
        ort_backend.encode_memory(feats, mask, scores),
        torch_backend.encode_memory(feats, mask, scores),
    )
    _close(ours, ref, f"maskmem_features B={b}")
    _close(pos, ref_pos, "maskmem_pos")


def test_fp16_graphs_run_on_cpu(onnx_dir, feats):
    backend = OnnxRuntimeBackend(onnx_dir, IMAGE_SIZE, "tiny", precision="fp16", num_threads=2)
    f16 = backend.encode_image(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert [tuple(t.shape) for t in f16] == [tuple(t.shape) for t in feats]
    gen, b, hw = torch.Generator().manual_seed(3), 2, IMAGE_SIZE // 16
    coords, labels = _prompts(b, 2, gen)
    pix = backend.no_memory_features(f16.feat_s2).expand(b, -1, -1, -1)
    outs = [
        *f16,
        *backend.decode_masks(pix, f16, coords, labels, None, True),
        *backend.decode_masks(pix, f16, coords, labels, torch.randn(b, 1, 64, 64), False),
        *backend.decode_mask_prompt(f16, torch.ones(b, 1, IMAGE_SIZE, IMAGE_SIZE)),
    ]
    memory = MemoryInputs(
        torch.randn(b, 3, 64, hw, hw),
        torch.zeros(b, 3, dtype=torch.int64),
        torch.ones(b, 3, dtype=torch.bool),
        torch.randn(b, 4, 256),
        torch.zeros(b, 4),
        torch.ones(b, 4, dtype=torch.bool),
    )
    attended = backend.attend_memory(f16, memory).pix_feat
    assert attended.shape == (b, 256, hw, hw)
    maskmem, _ = backend.encode_memory(f16, torch.zeros(b, 1, IMAGE_SIZE, IMAGE_SIZE), torch.ones(b))
    assert maskmem.shape == (b, 64, hw, hw)
    assert outs[4].shape == (b, 1, 64, 64)
    assert outs[6].shape == (b, 256)
    for t in [*outs, attended, maskmem]:
        assert t.dtype == torch.float32
        assert torch.isfinite(t).all()


# ---- the whole tracker -----------------------------------------------------------------
def _track(backend_name: str, onnx_dir, frames, prompts, refine):
    cfg = TrackerConfig(
        model_size="tiny",
        image_size=IMAGE_SIZE,
        allow_random_weights=True,
        seed=0,
        backend=backend_name,
        onnx_dir=str(onnx_dir),
    )
    tracker = InstrumentTracker.from_config(cfg)
    assert tracker.backend.name == backend_name
    out = []
    for i, frame in enumerate(frames):
        result = tracker.track(frame, prompts if i == 0 else refine if i == 4 else [])
        assert not result.rejected_prompts
        out.append(np.stack([r.mask_logits for r in result.instruments]))
    return out


@pytest.mark.shared_data
def test_tracker_on_onnxruntime_gives_the_torch_masks(shared_dir, onnx_dir):
    root = shared_dir / "data" / "cholecseg8k_clip"
    clip = read_davis_sequence(root, N_FRAMES)
    frames, gt0 = clip.frames, clip.labels[0]
    ys, xs = np.nonzero(gt0 == 1)  # the grasper
    click = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    prompts = [
        PromptInput(1, PromptMode.NEW, points=click, labels=np.array([1], np.int32)),
        PromptInput(2, PromptMode.NEW, box=np.array([120.0, 60.0, 420.0, 300.0], np.float32)),
    ]
    # a correction click on frame 4: the decoder's mask-input path (previous logits)
    refine = [
        PromptInput(2, PromptMode.REFINE, points=np.array([[300.0, 200.0]], np.float32), labels=np.array([0], np.int32))
    ]
    ref = _track("torch", onnx_dir, frames, prompts, refine)
    ours = _track("onnxruntime", onnx_dir, frames, prompts, refine)
    for i, (a, r) in enumerate(zip(ours, ref)):
        assert a.shape == r.shape == (2, 480, 854)
        # a pixel whose logit is within float round-off of the threshold (|logit| < 1e-5) is a
        # tie, not a difference (see test_tracker_parity.py); the 64x64 logits upsampled to
        # 480x854 leave ~20 such pixels per instrument along smooth boundaries
        decided = np.abs(r) >= 1e-5
        assert np.array_equal((a > 0)[decided], (r > 0)[decided]), f"frame {i}: binary masks differ"
        assert (~decided).mean() <= 1e-4, f"frame {i}: {(~decided).sum()} ties"
        assert np.abs(a - r).max() <= 1e-4, f"frame {i}: max |logit diff| {np.abs(a - r).max():.2e}"
    fractions = [float((ref[-1][k] > 0).mean()) for k in range(2)]
    assert all(0.0 < f < 1.0 for f in fractions), fractions


# ---- errors ------------------------------------------------------------------------------
def _identity(**kw):
    return {"image_size": IMAGE_SIZE, "model_size": "tiny", "checkpoint_sha256": "", "weights": WEIGHTS, **kw}


def test_missing_graphs_are_a_clear_error(tmp_path, onnx_dir):
    with pytest.raises(BackendError, match="does not exist.*sam2s export --model-size tiny --image-size 256"):
        OnnxRuntimeBackend(tmp_path / "none", **_identity())
    with pytest.raises(BackendError, match=f"has no {MANIFEST_FILE}"):
        OnnxRuntimeBackend(tmp_path, **_identity())
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in onnx_dir.iterdir():
        if ".fp16." not in f.name and not f.name.startswith("memory_encoder"):
            (partial / f.name).symlink_to(f)
    with pytest.raises(BackendError, match="lacks memory_encoder.onnx"):
        OnnxRuntimeBackend(partial, **_identity())
    shutil.copy(onnx_dir / "memory_encoder.onnx", partial / "memory_encoder.onnx")
    with pytest.raises(BackendError, match=r"lacks .*fp16\.onnx.*--fp16"):
        OnnxRuntimeBackend(partial, precision="fp16", **_identity())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"image_size": 512}, "image_size 256 \\(config: 512\\)"),
        ({"model_size": "small"}, "model sam2.1_hiera_tiny \\(config: sam2.1_hiera_small\\)"),
        ({"checkpoint_sha256": "ab" * 32}, "checkpoint sha256 random weights \\(loaded: abababababab\\)"),
        ({"weights": "random weights (seed 1)"}, "weights 'random weights \\(seed 0\\)'"),
    ],
)
def test_graphs_of_another_model_are_refused(onnx_dir, kw, message):
    with pytest.raises(BackendError, match=message):
        OnnxRuntimeBackend(onnx_dir, **_identity(**kw))


def test_graph_metadata_is_checked_per_file(tmp_path, onnx_dir):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for f in onnx_dir.iterdir():
        target = onnx_dir / "mask_decoder_single.onnx" if f.name == "mask_decoder_multi.onnx" else f
        (swapped / f.name).symlink_to(target)
    with pytest.raises(BackendError, match="mask_decoder_multi.onnx does not fit: stage/precision mask_decoder_single"):
        OnnxRuntimeBackend(swapped, **_identity())


def _gpu_providers() -> set:
    import onnxruntime

    return {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers())


@pytest.mark.skipif(
    bool(_gpu_providers()),
    reason="onnxruntime-gpu is installed (its GPU providers exist): test_tensorrt_backend.py's gpu tests cover them",
)
def test_missing_execution_provider_names_the_package(onnx_dir):
    with pytest.raises(BackendError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        OnnxRuntimeBackend(onnx_dir, device="cuda", provider="cuda", **_identity())
    with pytest.raises(BackendError, match="TensorrtExecutionProvider.*onnxruntime-gpu"):
        OnnxRuntimeBackend(onnx_dir, device="cuda", provider="tensorrt", **_identity())
    with pytest.raises(BackendError, match="needs device cuda"):
        OnnxRuntimeBackend(onnx_dir, device="cpu", provider="cuda", **_identity())


def test_create_backend_builds_onnxruntime_from_the_config(onnx_dir):
    model = types.SimpleNamespace(checkpoint_sha256="", weights=WEIGHTS)
    cfg = TrackerConfig(model_size="tiny", image_size=IMAGE_SIZE, backend="onnxruntime", onnx_dir=str(onnx_dir))
    backend = create_backend(cfg, model)
    assert backend.name == "onnxruntime"
    assert backend.precision == "fp32"
    cfg.autocast_dtype = "float16"
    assert create_backend(cfg, model).precision == "fp16"
    cfg.autocast_dtype = "int8"
    assert create_backend(cfg, model).precision == "int8"
    cfg.autocast_dtype = "bfloat16"
    with pytest.raises(BackendError, match="no bfloat16 MatMul kernels"):
        create_backend(cfg, model)
    with pytest.raises(BackendError, match="CPU EP"):
        OnnxRuntimeBackend(onnx_dir, device="cuda", precision="int8", **_identity())


def test_int8_graphs_stay_close_to_fp32(onnx_dir, ort_backend, feats):
    """int8 stages (dynamic quantization) against the fp32 graphs: same shapes, small relative error.

    On random weights the error is a loose sanity bound (mean 2 %, max 20 % of the output's
    largest magnitude per stage);
    the accuracy that matters (J&F on real clips, trained weights) is test_reduced_precision.py's.
    """
    int8 = OnnxRuntimeBackend(onnx_dir, precision="int8", num_threads=2, **_identity())
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    pairs = list(zip(int8.encode_image(image), ort_backend.encode_image(image)))
    b, hw = 3, IMAGE_SIZE // 16
    gen = torch.Generator().manual_seed(6)
    memory = MemoryInputs(
        torch.randn(b, 7, 64, hw, hw, generator=gen),
        torch.arange(7).repeat(b, 1),
        torch.ones(b, 7, dtype=torch.bool),
        torch.randn(b, 16, 256, generator=gen),
        torch.arange(16.0).repeat(b, 1),
        torch.ones(b, 16, dtype=torch.bool),
    )
    pairs.append((int8.attend_memory(feats, memory).pix_feat, ort_backend.attend_memory(feats, memory).pix_feat))
    coords, labels = _prompts(b, 2, gen)
    pix = pairs[-1][1]
    pairs += list(
        zip(
            int8.decode_masks(pix, feats, coords, labels, None, True),
            ort_backend.decode_masks(pix, feats, coords, labels, None, True),
        )
    )
    mask = torch.zeros(b, 1, IMAGE_SIZE, IMAGE_SIZE)
    mask[..., 64:160, 64:160] = 1
    pairs.append(
        (int8.encode_memory(feats, mask, torch.ones(b))[0], ort_backend.encode_memory(feats, mask, torch.ones(b))[0])
    )
    for i, (q, ref) in enumerate(pairs):
        assert q.shape == ref.shape
        assert q.dtype == torch.float32
        scale = float(ref.abs().max()) + 1e-6
        err = (q - ref).abs()
        assert float(err.mean()) <= 0.02 * scale, (i, float(err.mean()) / scale)
        assert float(err.max()) <= 0.2 * scale, (i, float(err.max()) / scale)


def test_every_stage_is_covered():
    covered = {
        "image_encoder",
        "mask_decoder_multi",
        "mask_decoder_single",
        "mask_prompt",
        "memory_attention",
        "memory_encoder",
    }
    assert covered == set(GRAPHS)

"""MobileSAM TinyViT image encoder (sam2s_ros.model.tinyvit) against the real MobileSAM weights.

The accuracy check is end to end: our encoder feeds SAM's prompt encoder and mask decoder (the official
``sam2`` package classes, loaded with MobileSAM's ``prompt_encoder.*`` / ``mask_decoder.*`` tensors),
prompted with the true box of the grasper on CholecSeg8k frames; ``../shared/models/README.md`` gives
mean J 0.744 for this oracle over the whole clip at 1024 (SAM-1 longest-side resize + padding). Measured with
this encoder over all 72 frames: 0.744 with the single-mask output (the README's setting), 0.757 with the
best-of-3 multimask output; 0.746 / 0.762 on the 6 test frames.

Key mapping for the mask decoder: SAM 1's two-way transformer MLP is ``mlp.lin1`` / ``mlp.lin2``; SAM 2's
is ``mlp.layers.0`` / ``mlp.layers.1`` (same shapes, same ReLU); every other key is identical.

Skips with a reason when ``<repo>/../shared/models/mobile_sam.pt`` or the clip is absent.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CKPT = SHARED / "models" / "mobile_sam.pt"
CLIP = SHARED / "data" / "cholecseg8k_clip"
GRASPER = 1
SAM_SIZE = 1024

pytestmark = [
    pytest.mark.skipif(not CKPT.is_file(), reason=f"MobileSAM weights not found at {CKPT} (../shared absent)"),
    pytest.mark.shared_data,
]


def _read_sd() -> dict[str, torch.Tensor]:
    return torch.load(str(CKPT), map_location="cpu", weights_only=True)


def load_frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H, W, 3] and the grasper mask (bool [H, W]) of clip frame ``i``."""
    from PIL import Image

    rgb = np.asarray(Image.open(CLIP / "frames" / f"{i:05d}.png").convert("RGB"))
    gt = np.asarray(Image.open(CLIP / "masks_instruments" / f"{i:05d}.png")) == GRASPER
    return rgb, gt


def preprocess(rgb: np.ndarray, squash: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM-1 input [1, 3, 1024, 1024] and the resized (unpadded) size (h, w).

    padded: longest side to 1024 keeping the aspect, normalise, zero-pad bottom/right;
    squash: resize straight to 1024 x 1024 (as SAM 2 does).
    """
    from PIL import Image

    from sam2s_ros.model.tinyvit import PIXEL_MEAN, PIXEL_STD

    h, w = rgb.shape[:2]
    if squash:
        nh = nw = SAM_SIZE
    else:
        scale = SAM_SIZE / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    img = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    img = (img - np.array(PIXEL_MEAN, np.float32)) / np.array(PIXEL_STD, np.float32)
    x = torch.zeros(1, 3, SAM_SIZE, SAM_SIZE)
    x[0, :, :nh, :nw] = torch.from_numpy(img).permute(2, 0, 1)
    return x, (nh, nw)


def box_of(mask: np.ndarray) -> np.ndarray:
    """Tight xyxy box (pixel indices) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


@torch.inference_mode()
def segment(encoder, pe, md, rgb: np.ndarray, box: np.ndarray, squash: bool) -> dict[str, np.ndarray]:
    """Masks (bool [H, W]) for the box prompt: 'multi' = best predicted IoU of 3, 'single' = single-mask output."""
    h, w = rgb.shape[:2]
    x, (nh, nw) = preprocess(rgb, squash)
    embed = encoder(x)[2]
    b = torch.from_numpy(box * np.array([nw / w, nh / h, nw / w, nh / h], np.float32))[None]
    sparse, dense = pe(points=None, boxes=b, masks=None)
    out = {}
    for name, multi in (("multi", True), ("single", False)):
        low, iou = md(embed, pe.get_dense_pe(), sparse, dense, multimask_output=multi, repeat_image=False)[:2]
        low = low[:, int(iou[0].argmax())][:, None]
        up = F.interpolate(low, (SAM_SIZE, SAM_SIZE), mode="bilinear", align_corners=False)[..., :nh, :nw]
        out[name] = (F.interpolate(up, (h, w), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()
    return out


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def oracle_mean_j(frames: list[int], squash: bool, img_size: int = SAM_SIZE) -> dict[str, float]:
    """Mean J over ``frames`` of the true-box oracle, for both mask choices ('multi', 'single')."""
    from sam2s_ros.model.tinyvit import load_mobilesam_image_encoder

    encoder = load_mobilesam_image_encoder(str(CKPT), img_size)
    from sam2s_ros.model.mobile import build_mobilesam_heads

    pe, md = build_mobilesam_heads(_read_sd())
    js: dict[str, list[float]] = {"multi": [], "single": []}
    for i in frames:
        rgb, gt = load_frame(i)
        for name, pred in segment(encoder, pe, md, rgb, box_of(gt), squash).items():
            js[name].append(jaccard(pred, gt))
    return {name: float(np.mean(v)) for name, v in js.items()}


TEST_FRAMES = [0, 14, 28, 43, 57, 71]


def test_strict_load_and_shapes():
    from sam2s_ros.model.tinyvit import TinyViT, load_mobilesam_image_encoder

    enc_keys = {k[len("image_encoder.") :] for k in _read_sd() if k.startswith("image_encoder.")}
    assert len(enc_keys) == 302
    assert set(TinyViT(512).state_dict()) == enc_keys
    encoder = load_mobilesam_image_encoder(str(CKPT), 512)
    with torch.inference_mode():
        t0 = time.perf_counter()
        outs = encoder(torch.randn(1, 3, 512, 512))
        print(f"TinyViT encoder at 512: {time.perf_counter() - t0:.2f} s")
    assert [tuple(o.shape) for o in outs] == [(1, 64, 128, 128), (1, 128, 64, 64), (1, 256, 32, 32)]
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outs)


def test_bad_checkpoint_raises(tmp_path):
    from sam2s_ros.errors import CheckpointError
    from sam2s_ros.model.tinyvit import load_mobilesam_image_encoder

    with pytest.raises(CheckpointError, match="does not exist"):
        load_mobilesam_image_encoder(str(tmp_path / "nope.pt"), 512)
    sd = {k: v for k, v in _read_sd().items() if k.startswith("image_encoder.") and "neck.3" not in k}
    torch.save(sd, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="neck.3"):
        load_mobilesam_image_encoder(str(tmp_path / "cut.pt"), 512)


@pytest.mark.slow
@pytest.mark.skipif(not (CLIP / "frames").is_dir(), reason=f"CholecSeg8k clip not found at {CLIP}")
def test_box_oracle_accuracy_padded():
    j = oracle_mean_j(TEST_FRAMES, squash=False)
    print(
        f"true-box oracle, padded 1024, frames {TEST_FRAMES}: mean J multimask {j['multi']:.3f}, "
        f"single {j['single']:.3f} (README, 72 frames: 0.744)"
    )
    assert j["single"] >= 0.6, j  # single-mask output is what reproduces the README's 0.744 over 72 frames


@pytest.mark.slow
@pytest.mark.skipif(not (CLIP / "frames").is_dir(), reason=f"CholecSeg8k clip not found at {CLIP}")
def test_box_oracle_accuracy_squashed():
    j = oracle_mean_j(TEST_FRAMES, squash=True)
    print(
        f"true-box oracle, squashed 1024x1024, frames {TEST_FRAMES}: mean J multimask {j['multi']:.3f}, "
        f"single {j['single']:.3f}"
    )
    assert all(np.isfinite(v) for v in j.values())


def test_readout_baseline_follows_the_grasper():
    """The training-free baseline (evaluation/readout_baseline.py) tracks the grasper over 6 frames at 512.

    Measured 2026-12-03 with benchmarks/readout_baseline.py: mean J 0.72 over frames 1..10 at 512
    (box prompt on frame 0); the bound leaves room for BLAS differences, not for a broken readout.
    """
    from sam2s_ros.evaluation.readout_baseline import ReadoutBaseline

    tracker = ReadoutBaseline(str(CKPT), image_size=512)
    js = []
    for i in range(6):
        rgb, gt = load_frame(i)
        pred = tracker.track(rgb, box_of(gt) if i == 0 else None)
        if i > 0:
            js.append(jaccard(pred, gt))
    assert np.mean(js) >= 0.5, js

"""The sam2s_mobile family: MobileSAM weights mapped in, the four-stage contract, ONNX + onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2s_ros.data import read_rgb
from sam2s_ros.export.onnx_export import ExportOptions, export_model
from sam2s_ros.model.build import build_random_model, build_sam2_base
from sam2s_ros.model.mobile import MOBILE_MODEL, init_from_mobilesam, mobilesam_to_sam2s_mobile
from sam2s_ros.model.readout import is_readout_model
from sam2s_ros.tracking.config import TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker
from sam2s_ros.tracking.types import PromptInput, PromptMode

SIZE = 128


def test_builds_with_the_documented_parts():
    sam = build_sam2_base(MOBILE_MODEL, SIZE)
    assert type(sam).__name__ == "SAM2Base"
    assert is_readout_model(sam)
    assert len(sam.memory_attention.layers) == 0
    assert sam.mem_dim == 64  # same memory shape as SAM 2.1: bank, DiveMem and state files unchanged
    dec = sam.sam_mask_decoder
    assert (dec.conv_s0.in_channels, dec.conv_s1.in_channels) == (64, 128)
    assert float(dec.conv_s0.weight.abs().sum()) == 0.0  # zero-initialised skips: MobileSAM's decoder
    assert not dec.pred_obj_scores
    assert not dec.iou_prediction_head.sigmoid_output
    assert float(sam.no_mem_embed.abs().sum()) == 0.0  # conditioning frames see MobileSAM's features
    n = sum(p.numel() for p in sam.parameters())
    assert 8e6 < n < 12e6, n


def test_mobilesam_keys_are_renamed():
    fake = {
        "image_encoder.patch_embed.seq.0.c.weight": torch.zeros(1),
        "mask_decoder.transformer.layers.0.mlp.lin1.weight": torch.zeros(1),
        "prompt_encoder.no_mask_embed.weight": torch.zeros(1),
    }
    assert sorted(mobilesam_to_sam2s_mobile(fake)) == [
        "image_encoder.trunk.patch_embed.seq.0.c.weight",
        "sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight",
        "sam_prompt_encoder.no_mask_embed.weight",
    ]


@pytest.mark.shared_data
def test_mobilesam_initialisation_loads_every_pretrained_tensor(shared_dir):
    sam = build_sam2_base(MOBILE_MODEL, SIZE)
    new = init_from_mobilesam(sam, str(shared_dir / "models" / "mobile_sam.pt"))
    assert not any(k.startswith(("image_encoder.", "sam_prompt_encoder.")) for k in new)
    assert all(
        k.startswith(
            (
                "memory_",
                "mask",
                "no_",
                "obj_",
                "sam_mask_decoder.conv_s",
            )
        )
        for k in new
    ), new


@pytest.mark.shared_data
@pytest.mark.slow
def test_tracker_on_onnxruntime_gives_the_torch_masks(shared_dir, tmp_path):
    """Export all graphs of a random sam2s_mobile, track 5 real frames on both runtimes."""
    sam = build_random_model(MOBILE_MODEL, SIZE, seed=0)
    opts = ExportOptions(out_dir=tmp_path / "onnx", model_size=MOBILE_MODEL, image_size=SIZE, random_weights=True)
    export_model(sam, opts, checkpoint_sha256="", weights="random weights (seed 0)")
    root = shared_dir / "data" / "cholecseg8k_clip"
    frames = [read_rgb(root / "frames" / f"{i:05d}.png") for i in range(5)]
    prompt = [PromptInput(1, PromptMode.NEW, box=np.array([120.0, 60.0, 420.0, 300.0], np.float32))]
    logits = {}
    for backend in ("torch", "onnxruntime"):
        cfg = TrackerConfig(
            model_size=MOBILE_MODEL,
            image_size=SIZE,
            allow_random_weights=True,
            seed=0,
            backend=backend,
            onnx_dir=str(tmp_path / "onnx"),
        )
        tracker = InstrumentTracker.from_config(cfg)
        assert tracker.describe()["model"] == MOBILE_MODEL
        logits[backend] = [
            tracker.track(f, prompt if i == 0 else []).instruments[0].mask_logits for i, f in enumerate(frames)
        ]
    for i, (a, r) in enumerate(zip(logits["onnxruntime"], logits["torch"])):
        decided = np.abs(r) >= 1e-4
        assert np.array_equal((a > 0)[decided], (r > 0)[decided]), f"frame {i}: binary masks differ"
        assert np.abs(a - r).max() <= 1e-3, f"frame {i}: max |logit diff| {np.abs(a - r).max():.2e}"

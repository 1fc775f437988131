"""ARL Gaussian label softening and SAM 2's mask / IoU / object-score losses."""

from __future__ import annotations

import pytest
import torch

from sam2s_ros.training.config import LossConfig
from sam2s_ros.training.losses import frame_losses, gaussian_kernel1d, gaussian_soften


def _square(size: int = 64, lo: int = 20, hi: int = 40) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., lo:hi, lo:hi] = 1.0
    return m


def test_kernel_is_normalised_and_symmetric():
    k = gaussian_kernel1d(2.0)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(k, k.flip(0))


@pytest.mark.parametrize("sigma", [0.7, 2.0, 4.0])
def test_softening_is_symmetric_under_mirroring(sigma):
    m = torch.zeros(1, 1, 48, 48)
    m[..., 10:30, 5:17] = 1.0
    assert torch.allclose(gaussian_soften(m.flip(-1), sigma), gaussian_soften(m, sigma).flip(-1), atol=1e-6)
    assert torch.allclose(
        gaussian_soften(m.transpose(-1, -2), sigma), gaussian_soften(m, sigma).transpose(-1, -2), atol=1e-6
    )


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_softening_preserves_mass_away_from_the_border(sigma):
    m = _square()
    soft = gaussian_soften(m, sigma)
    assert float(soft.sum()) == pytest.approx(float(m.sum()), rel=1e-5)
    assert float(soft.min()) >= 0.0
    assert float(soft.max()) <= 1.0 + 1e-6


def test_softening_blurs_only_near_the_boundary():
    m = _square()
    soft = gaussian_soften(m, 1.0)
    assert float(soft[0, 0, 30, 30]) == pytest.approx(1.0, abs=1e-4)  # interior, 10 px from the edge
    assert float(soft[0, 0, 5, 5]) == pytest.approx(0.0, abs=1e-4)  # far outside
    assert 0.2 < float(soft[0, 0, 30, 20]) < 0.8  # on the edge


def test_sigma_to_zero_gives_the_hard_mask():
    m = _square()
    assert torch.equal(gaussian_soften(m, 0.0), m)
    assert torch.allclose(gaussian_soften(m, 0.05), m, atol=1e-6)


def test_losses_prefer_the_right_mask_and_pick_the_best_output():
    gt = _square()
    good = gt * 20 - 10
    bad = -good
    cfg = LossConfig(arl_sigma_px=0.0)
    multi = torch.cat([bad, good, bad], dim=1)  # [1, 3, H, W]: output 1 is right
    ious = torch.tensor([[0.0, 1.0, 0.0]])
    out = frame_losses(multi, ious, torch.tensor([[5.0]]), gt, cfg)
    only_bad = frame_losses(torch.cat([bad] * 3, 1), ious, torch.tensor([[5.0]]), gt, cfg)
    assert float(out["mask"]) < 1e-3
    assert float(out["dice"]) < 1e-3
    assert float(out["iou"]) < 1e-3  # predicted IoUs equal the actual ones
    assert float(only_bad["mask"]) > 100 * float(out["mask"])
    assert float(out["object_score"]) < 0.01


def test_absent_object_counts_only_the_object_score():
    gt = torch.zeros(1, 1, 32, 32)
    multi = torch.full((1, 3, 32, 32), 5.0)
    out = frame_losses(multi, torch.zeros(1, 3), torch.tensor([[3.0]]), gt, LossConfig())
    assert float(out["mask"]) == 0.0
    assert float(out["dice"]) == 0.0
    assert float(out["iou"]) == 0.0
    assert float(out["object_score"]) > 2.0  # predicted present, is absent

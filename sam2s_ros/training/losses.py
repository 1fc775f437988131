"""SAM 2's training losses plus SAM2S's ambiguity-resilient label softening (ARL).

SAM 2 (``training/loss_fns.py``, ``MultiStepMultiMasksAndIous``): sigmoid focal loss
(alpha 0.25, gamma 2) and dice on masks, L1 on the predicted IoU of every multimask output,
BCE on the object score; weights 20 : 1 : 1 : 1. With several mask outputs the mask terms use
the output with the lowest weighted focal + dice loss; mask, dice and IoU terms count only
where the object is in the ground truth.

ARL (SAM2S, arXiv 2511.16618): annotations of the same boundary disagree across datasets, so
the focal term's target is the ground truth blurred by a Gaussian of ``sigma`` pixels
(:func:`gaussian_soften`); dice and the IoU target use the hard mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ceil(3 sigma) (sum 1, symmetric)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_soften(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """ARL soft target: separable Gaussian blur of a binary mask.

    Args:
        mask: [B, 1, H, W] float in {0, 1}.
        sigma: standard deviation in pixels; 0 returns the mask unchanged.

    Returns:
        [B, 1, H, W] float in [0, 1]. Symmetric (a mirrored mask gives the mirrored target);
        the sum (mass) is preserved wherever the mask lies at least 3 sigma from the image
        border (zero padding: mass blurred past the border is lost).
    """
    if sigma <= 0:
        return mask
    k = gaussian_kernel1d(sigma).to(mask)
    r = (k.numel() - 1) // 2
    out = F.conv2d(mask, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(out, k.view(1, 1, -1, 1), padding=(r, 0))


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-sample mean sigmoid focal loss (RetinaNet form, soft targets allowed).

    Args:
        logits, target: [B, M, H, W]; target in [0, 1].

    Returns:
        [B, M] mean over pixels.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, M, H, W] logits and {0,1} target -> [B, M] dice loss (SAM 2's +1 smoothing)."""
    prob = logits.sigmoid().flatten(2)
    tgt = target.flatten(2)
    num = 2 * (prob * tgt).sum(-1)
    den = prob.sum(-1) + tgt.sum(-1)
    return 1 - (num + 1) / (den + 1)


def actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, M, H, W] logits (thresholded at 0) vs {0,1} target -> [B, M] IoU (1 when both empty)."""
    pred = (logits > 0).flatten(2).float()
    tgt = target.flatten(2)
    inter = (pred * tgt).sum(-1)
    union = pred.sum(-1) + tgt.sum(-1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def frame_losses(
    multi_logits: torch.Tensor, pred_ious: torch.Tensor, object_score_logits: torch.Tensor, gt: torch.Tensor, cfg
) -> dict[str, torch.Tensor]:
    """Losses of one frame's decoder output for B objects.

    Args:
        multi_logits: [B, M, S, S] mask logits at model resolution (M = 1 or 3 outputs).
        pred_ious: [B, M] predicted IoUs (sigmoid already applied by the model).
        object_score_logits: [B, 1] or [B].
        gt: [B, 1, S, S] float {0, 1}.
        cfg: a LossConfig.

    Returns:
        {"mask", "dice", "iou", "object_score"}: each a [B] tensor (unweighted); the mask
        terms of the best output (lowest weighted focal + dice), zero where the object is
        absent from ``gt``.
    """
    present = (gt.flatten(1).sum(-1) > 0).float()  # [B]
    soft = gaussian_soften(gt, cfg.arl_sigma_px)
    m = multi_logits.shape[1]
    focal = sigmoid_focal_loss(multi_logits, soft.expand(-1, m, -1, -1), cfg.focal_alpha, cfg.focal_gamma)
    dice = dice_loss(multi_logits, gt.expand(-1, m, -1, -1))
    combo = cfg.mask * focal + cfg.dice * dice
    best = combo.argmin(dim=1, keepdim=True)
    with torch.no_grad():
        ious = actual_iou(multi_logits, gt.expand(-1, m, -1, -1))
    iou_l1 = (pred_ious - ious).abs().mean(-1)
    obj = F.binary_cross_entropy_with_logits(object_score_logits.reshape(-1), present, reduction="none")
    return {
        "mask": focal.gather(1, best)[:, 0] * present,
        "dice": dice.gather(1, best)[:, 0] * present,
        "iou": iou_l1 * present,
        "object_score": obj,
    }

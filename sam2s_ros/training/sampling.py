"""Training clips: which frames (hybrid temporal sampling), which objects, which prompt, augmentation.

Everything random here draws from one ``numpy.random.Generator`` that the trainer seeds per
(seed, rank, step), so a resumed run samples exactly the clips an uninterrupted one would.

Hybrid temporal sampling (SAM2S DiveMem; the paper names it, the numbers are ours): a clip of
N frames is the prompt frame ``s``, ``far_frames`` frames drawn uniformly from far back between
``s`` and the recent window, and a dense recent window of the remaining frames with a random
stride. The memory bank therefore holds frames at very different distances, which is what
long-term memory must cope with at inference.

Augmentation works on what the trainer sees: with a frozen encoder, on cached features.
- horizontal flip of features and masks together (TinyViT's attention biases are symmetric
  in x; its convolutions are not exactly, so this is an approximation of re-encoding);
- a random affine (zoom, shift) of the whole clip plus a small per-frame drift, applied with
  ``grid_sample`` to every feature level and (nearest) to the masks: synthetic camera motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from sam2s_ros.training.config import DataConfig, PromptConfig

#: prompt kinds of the first frame (SAM 2.1 training: mask, box, clicks)
TRAIN_PROMPT_KINDS = ("mask", "box", "clicks")


@dataclass
class ClipBatch:
    """One micro-batch: B rows (one object of one clip each), T frames.

    Attributes:
        feats: {"s4": [B, T, C4, S/4, S/4], "s8": [B, T, C8, S/8, S/8], "s16": [B, T, 256, h, w]}
            float32 encoder outputs (None when ``images`` is set).
        images: [B, T, 3, S, S] float32 normalised frames (trainable encoder), else None.
        gt: [B, T, 1, S, S] float32 {0, 1}.
        prompt_kind: one of TRAIN_PROMPT_KINDS (shared by the batch).
        point_coords: [B, P, 2] float32 model pixels (x, y) or None for a mask prompt.
        point_labels: [B, P] int32 (1 positive, 2/3 box corners) or None.
        class_ids: [B] int64 vocabulary class id (1-based) or -1.
        names: "sequence:object" per row (for logs).
        row_ids: [B] int64 index of each row in the global batch (seeds per-row randomness, so
            a row draws the same corrective clicks on whichever rank it lands).
    """

    feats: Optional[dict]
    images: Optional[torch.Tensor]
    gt: torch.Tensor
    prompt_kind: str
    point_coords: Optional[torch.Tensor]
    point_labels: Optional[torch.Tensor]
    class_ids: torch.Tensor
    names: list[str]
    row_ids: torch.Tensor


def clip_indices(num_frames: int, data: DataConfig, rng: np.random.Generator) -> list[int]:
    """Frame indices of one clip in playing order (module docstring).

    Sequences shorter than the clip repeat their last frame (clips keep their length).
    """
    n = data.clip_frames
    if num_frames <= n:
        idx = list(range(num_frames)) + [num_frames - 1] * (n - num_frames)
    elif data.hybrid_sampling and data.far_frames > 0:
        n_recent = n - 1 - data.far_frames
        stride = int(rng.integers(1, data.max_stride + 1))
        span_recent = (n_recent - 1) * stride + 1
        while stride > 1 and span_recent + data.far_frames + 1 > num_frames:
            stride -= 1
            span_recent = (n_recent - 1) * stride + 1
        s = int(rng.integers(0, num_frames - span_recent - data.far_frames))
        win_start = int(rng.integers(s + data.far_frames + 1, num_frames - span_recent + 1))
        far = sorted(rng.choice(np.arange(s + 1, win_start), size=data.far_frames, replace=False).tolist())
        idx = [s, *far, *range(win_start, win_start + span_recent, stride)]
    else:
        stride = int(rng.integers(1, data.max_stride + 1))
        while stride > 1 and (n - 1) * stride + 1 > num_frames:
            stride -= 1
        s = int(rng.integers(0, num_frames - (n - 1) * stride))
        idx = list(range(s, s + (n - 1) * stride + 1, stride))
    if rng.random() < data.reverse_prob:
        idx = idx[::-1]
    return idx


def _affine_thetas(t: int, data: DataConfig, rng: np.random.Generator) -> Optional[torch.Tensor]:
    """[T, 2, 3] affine_grid matrices (zoom + shift + per-frame drift), or None."""
    if rng.random() >= data.affine_prob:
        return None
    lo, hi = data.affine_scale
    zoom = float(rng.uniform(lo, hi))
    shift = rng.uniform(-data.affine_translate, data.affine_translate, size=2) * 2  # normalised coords
    drift = rng.normal(0.0, data.affine_translate * 0.2, size=(t, 2)).cumsum(0)
    theta = torch.zeros(t, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = torch.from_numpy(shift[None] + drift).float()
    return theta


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _box_prompt(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy box (SAM 2: noise std 10 % of the side, at most 20 px) as two corner points."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2, dtype=np.float32)
    box = box + np.clip(rng.normal(0, 0.1, 4) * side, -20, 20)
    s = mask.shape[0] - 1
    box = np.clip(box, 0, s)
    return box.reshape(2, 2), np.array([2, 3], dtype=np.int32)


def _click_prompt(mask: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(mask)
    pick = rng.choice(len(xs), size=n, replace=len(xs) < n)
    return np.stack([xs[pick], ys[pick]], 1).astype(np.float32), np.ones(n, dtype=np.int32)


def sample_batch(
    sequences,
    weights: np.ndarray,
    cache,
    data: DataConfig,
    prompts: PromptConfig,
    vocabulary: list[str],
    batch_size: int,
    rng: np.random.Generator,
    shard: tuple[int, int] = (0, 1),
) -> ClipBatch:
    """Draw a global batch of ``batch_size * N`` clips and build shard I's ``batch_size`` of them.

    Every rank draws the same global batch from the same generator (clip choices, augmentation
    and the prompt kind are drawn for all clips) and materialises only its own slice, so N
    ranks together see exactly the batch one process would see with ``batch_size * N``.

    Args:
        sequences: training Sequences. weights: [len(sequences)] sampling probabilities.
        cache: a FeatureCache (frozen encoder) or None (frames are returned as images).
        shard: (I, N) = (rank, world size).
    """
    from sam2s_ros.tracking.preprocess import to_model_input

    rows_feats, rows_imgs, rows_gt, names, class_ids, row_ids = [], [], [], [], [], []
    index, count = shard
    mine = range(index * batch_size, (index + 1) * batch_size)
    for clip in range(batch_size * count):
        seq = sequences[int(rng.choice(len(sequences), p=weights))]
        idx = clip_indices(seq.num_frames, data, rng)
        visible = [o for o in seq.object_ids if (seq.labels[idx[0]] == o).any()]
        if not visible:  # the prompt frame must show the object: fall back to its first frame
            first = int(np.flatnonzero((seq.labels == seq.object_ids[0]).reshape(seq.num_frames, -1).any(1))[0])
            idx = [first, *[i for i in idx[1:]]]
            visible = [o for o in seq.object_ids if (seq.labels[idx[0]] == o).any()]
        objs = rng.permutation(visible)[: data.max_objects].tolist()
        flip = rng.random() < data.hflip_prob
        theta = _affine_thetas(len(idx), data, rng)
        if clip not in mine:
            continue
        labels = torch.from_numpy(seq.labels[idx].astype(np.int64))  # [T, S, S]
        if theta is not None:  # the prompt frame must keep every object: else no affine for this clip
            first = torch.stack([(labels[0] == o).float() for o in objs])[:, None]
            kept = _warp(first.flip(-1) if flip else first, theta[:1].expand(len(objs), -1, -1), "nearest")
            if bool((kept.flatten(1).sum(1) == 0).any()):
                theta = None
        if cache is not None:
            per = [cache.get(seq, i) for i in idx]
            feats = {k: torch.stack([p[k] for p in per]).float() for k in ("s4", "s8", "s16")}
            if flip:
                feats = {k: v.flip(-1) for k, v in feats.items()}
            if theta is not None:
                feats = {k: _warp(v, theta, "bilinear") for k, v in feats.items()}
        else:
            imgs = torch.cat([to_model_input(seq.read_frame(i), seq.labels.shape[1], torch.device("cpu")) for i in idx])
            imgs = imgs.flip(-1) if flip else imgs
            imgs = _warp(imgs, theta, "bilinear") if theta is not None else imgs
        for j, o in enumerate(objs):
            row_ids.append(clip * data.max_objects + j)
            gt = (labels == o).float()[:, None]
            gt = gt.flip(-1) if flip else gt
            gt = (_warp(gt, theta, "nearest") > 0.5).float() if theta is not None else gt
            rows_gt.append(gt)
            if cache is not None:
                rows_feats.append(feats)
            else:
                rows_imgs.append(imgs)
            names.append(f"{seq.name}:{o}")
            cls = seq.classes.get(int(o), "")
            class_ids.append(vocabulary.index(cls) + 1 if cls in vocabulary else -1)
    gt = torch.stack(rows_gt)
    kind = "mask"
    if rng.random() < prompts.prob_points:
        kind = "box" if rng.random() < prompts.prob_box else "clicks"
    prompt_seed = int(rng.integers(2**31))
    coords = labels_t = None
    if kind != "mask":
        draw = _box_prompt if kind == "box" else (lambda m, r: _click_prompt(m, prompts.num_init_clicks, r))
        pts = [
            draw(gt[b, 0, 0].numpy() > 0, np.random.default_rng([prompt_seed, row_ids[b]])) for b in range(gt.shape[0])
        ]
        coords = torch.from_numpy(np.stack([p[0] for p in pts]))
        labels_t = torch.from_numpy(np.stack([p[1] for p in pts]))
    feats_out = {k: torch.stack([f[k] for f in rows_feats]) for k in ("s4", "s8", "s16")} if rows_feats else None
    images = torch.stack(rows_imgs) if rows_imgs else None
    return ClipBatch(
        feats_out,
        images,
        gt,
        kind,
        coords,
        labels_t,
        torch.tensor(class_ids),
        names,
        torch.tensor(row_ids, dtype=torch.int64),
    )

"""The memory of ``sam2s_mobile`` (release 2): an affinity readout that prompts SAM's decoder.

Release 1 trained SAM 2's memory attention from scratch on 12 DAVIS sequences; it learned
their object prior and failed zero-shot on surgical video (CholecSeg8k J&F 0.018, model card).
MobileSAM's own features already track: a cosine-affinity readout of the memory, turned into
a box, a click and a mask prompt for SAM's decoder, scores 0.784 there with no training
(:mod:`sam2s_ros.evaluation.readout_baseline`). Release 2 makes that readout the model's
memory, inside SAM 2's four-stage contract:

- **memory encoder** (:class:`ReadoutMemoryEncoder`): per memory frame, a 64-channel
  memory [B, 64, h, w]: channels 0..62 the L2-normalised *key* of each cell (a 1x1
  projection of the L2-normalised image embedding, fitted by PCA on DAVIS train features,
  :func:`fit_key_projection`), channel 63 the *value*: the frame's mask max-pooled to the
  stride-16 grid from the decoder's S/4 grid (thin instruments cover one or two cells; area
  averaging would erase them).
  Same shape as SAM 2's memory, so the memory bank, DiveMem and state files are unchanged.
- **memory attention** (:class:`MemoryReadout`): per cell of the current frame, cosine
  affinity to every valid memory cell; the ``topk`` largest, softmax-weighted at
  ``temperature``, average the memory values (top-k filtering as in Cheng et al., MiVOS,
  CVPR 2021). The readout map is divided by its maximum and thresholded at ``threshold``;
  its box (two corner points, labels 2/3), a positive click at its peak (label 1; the first
  cell in raster order within ``PEAK_TOLERANCE`` of it), and the
  readout as mask-prompt logits (``gain * (readout - threshold)`` at the decoder's S/4 grid)
  are the decoder's prompt on a tracked frame. The image features go to the decoder
  unchanged (MobileSAM's decoder expects them).
- **object presence**: the readout finds the object when some cell passes the threshold;
  otherwise the frame's mask is empty and its object score negative (the tracker applies it).

Numbers: ``topk`` 30, ``temperature`` 0.05, ``threshold`` 0.5 are ``../shared/models/README.md``'s
(its "readout + SAM decoder" measurement); ``gain`` 20 is ours. On six DAVIS *train*
sequences (40 frames, 512²) the 63-d PCA keys score mean J&F 0.856 (0.8555), the full 256-d
features 0.856 (PCA keeps 91.7 % of the variance), 2026-12-03, ``benchmarks/readout_keys.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: memory channels (SAM 2.1 mem_dim): READOUT_KEY_DIM key channels + 1 value channel
READOUT_MEM_DIM = 64
READOUT_KEY_DIM = READOUT_MEM_DIM - 1
#: embedding channels of MobileSAM's encoder, stride of its grid in model pixels
EMBED_DIM, EMBED_STRIDE = 256, 16
#: the memory value is the mask at the decoder's grid (S/MASK_POOL) max-pooled to the stride-16
#: grid; max-pooling the S x S upsampled mask directly spills thin masks into neighbouring cells
MASK_POOL = 4
#: readout settings (module doc: README measurement, gain ours)
READOUT_TOPK = 30
READOUT_TEMPERATURE = 0.05
READOUT_THRESHOLD = 0.5
MASK_PROMPT_GAIN = 20.0
#: cells whose normalised readout is within this of the peak count as the peak (click choice)
PEAK_TOLERANCE = 1e-3
#: object score logit the tracker reports where the readout finds nothing (SAM 2 uses -10 for
#: an empty mask prompt, ``SAM2Base._use_mask_as_output``)
ABSENT_SCORE = -10.0
#: mask logits of an absent object (sam2.modeling.sam2_base.NO_OBJ_SCORE)
NO_OBJ_SCORE = -1024.0


class ReadoutMemoryEncoder(nn.Module):
    """Key + value memory of a frame (module doc); replaces SAM 2's MemoryEncoder.

    ``out_proj`` is a 1x1 conv from [256 L2-normalised embedding channels + 1 mask channel] to
    64 memory channels; :func:`init_key_projection` sets rows 0..62 to the key projection and
    row 63 to pass the mask through. ``SAM2Base`` reads ``mem_dim`` from ``out_proj``.

    forward(pix_feat [B, 256, h, w], masks [B, 1, S, S] float32 memory-encoder input (> 0 =
    object; the tracker's ``mask * 20 - 10``), skip_mask_sigmoid ignored) ->
        {"vision_features": [B, 64, h, w] (keys L2-normalised over channels 0..62, value in 63),
         "vision_pos_enc": [[B, 64, h, w] sine encoding]} (SAM 2 MemoryEncoder's contract).
    """

    def __init__(self):
        super().__init__()
        from sam2.modeling.position_encoding import PositionEmbeddingSine

        self.out_proj = nn.Conv2d(EMBED_DIM + 1, READOUT_MEM_DIM, kernel_size=1)
        self.position_encoding = PositionEmbeddingSine(num_pos_feats=READOUT_MEM_DIM, normalize=True, temperature=10000)
        init_key_projection(self, torch.eye(EMBED_DIM)[:, :READOUT_KEY_DIM])

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = True) -> dict:
        h, w = pix_feat.shape[-2:]
        # the mask at the decoder's S/4 grid (where its logits live), then any cell of the stride-16 grid
        low = F.avg_pool2d((masks > 0).to(pix_feat.dtype), MASK_POOL) > 0.5
        value = F.max_pool2d(low.to(pix_feat.dtype), EMBED_STRIDE // MASK_POOL)  # [B, 1, S/16, S/16]
        mem = self.out_proj(torch.cat([F.normalize(pix_feat, dim=1), value], dim=1))
        mem = torch.cat([F.normalize(mem[:, :READOUT_KEY_DIM], dim=1), mem[:, READOUT_KEY_DIM:]], dim=1)
        return {"vision_features": mem, "vision_pos_enc": [self.position_encoding(mem).to(mem.dtype)]}


def init_key_projection(encoder: ReadoutMemoryEncoder, basis: torch.Tensor) -> None:
    """Set the memory encoder's projection: keys = ``basis``ᵀ · embedding, value = mask.

    Args:
        encoder: the memory encoder to change in place.
        basis: [256, 63] float, columns the key directions (e.g. PCA components).

    Raises:
        ValueError: ``basis`` is not [256, 63].
    """
    if tuple(basis.shape) != (EMBED_DIM, READOUT_KEY_DIM):
        raise ValueError(f"key basis must be [{EMBED_DIM}, {READOUT_KEY_DIM}], got {list(basis.shape)}")
    weight = torch.zeros(READOUT_MEM_DIM, EMBED_DIM + 1)
    weight[:READOUT_KEY_DIM, :EMBED_DIM] = basis.T.float()
    weight[READOUT_KEY_DIM, EMBED_DIM] = 1.0
    with torch.no_grad():
        encoder.out_proj.weight.copy_(weight[:, :, None, None])
        encoder.out_proj.bias.zero_()


def fit_key_projection(embeddings: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, float]:
    """PCA key basis of L2-normalised embedding cells (the only fitted part of the readout).

    Args:
        embeddings: [N, 256] float cells of MobileSAM embeddings (any scale; normalised here).
        seed: seed of the randomised PCA.

    Returns:
        (basis [256, 63] float32, fraction of the centred variance it keeps).
    """
    x = F.normalize(embeddings.float(), dim=1)
    x = x - x.mean(0)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        _, s, v = torch.pca_lowrank(x, q=min(128, EMBED_DIM), center=False)
    finally:
        torch.random.set_rng_state(gen_state)
    kept = float((s[:READOUT_KEY_DIM] ** 2).sum() / (x**2).sum())
    return v[:, :READOUT_KEY_DIM].contiguous(), kept


class MemoryReadout(nn.Module):
    """The model's ``memory_attention``: holds the readout settings (module doc).

    ``d_model`` (256) and the empty ``layers`` are what ``SAM2Base`` and the random-weight
    helpers read. The computation is :meth:`readout`, run by
    :class:`sam2s_ros.model.stages.MemoryReadoutStage`.
    """

    def __init__(
        self,
        topk: int = READOUT_TOPK,
        temperature: float = READOUT_TEMPERATURE,
        threshold: float = READOUT_THRESHOLD,
        gain: float = MASK_PROMPT_GAIN,
    ):
        super().__init__()
        self.d_model = EMBED_DIM
        self.layers = nn.ModuleList()
        self.topk, self.temperature, self.threshold, self.gain = int(topk), float(temperature), float(threshold), gain
        # labels of the prompt's points: click, box top-left, box bottom-right (SAM's convention)
        self.register_buffer("point_labels", torch.tensor([1, 2, 3], dtype=torch.int32), persistent=False)

    def readout(self, query_keys: torch.Tensor, mem: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Readout map of B instruments.

        Args:
            query_keys: [B, hw, 63] L2-normalised keys of the current frame's cells.
            mem: [B, K, 64] memory cells (keys 0..62, value 63), K = F * hw.
            valid: [B, K] bool, False on padding frames.

        Returns:
            [B, hw] float32 readout: softmax-weighted mean of the top-k memory values.
        """
        keys, values = mem[..., :READOUT_KEY_DIM], mem[..., READOUT_KEY_DIM]
        affinity = torch.bmm(query_keys, keys.transpose(1, 2)) / self.temperature  # [B, hw, K]
        affinity = affinity.masked_fill(~valid[:, None, :], float("-inf"))
        top, idx = affinity.topk(min(self.topk, mem.shape[1]), dim=2)
        weights = top.softmax(dim=2)  # padding only where fewer valid cells than topk: weight 0
        picked = torch.gather(values[:, None, :].expand(-1, idx.shape[1], -1), 2, idx)
        return (weights * picked).nan_to_num(0.0).sum(dim=2)

    def prompt(self, readout: torch.Tensor, grid: int):
        """Decoder prompt from a readout map.

        Args:
            readout: [B, g*g] float32 from :meth:`readout`.
            grid: g, cells per side.

        Returns:
            point_coords [B, 3, 2] float32 model pixels (click, box top-left, box
            bottom-right), point_labels [B, 3] int32 (1, 2, 3; all -1 where absent),
            mask_input [B, 1, 4g, 4g] float32 logits, present [B] bool.
        """
        b = readout.shape[0]
        peak = readout.max(dim=1, keepdim=True).values
        norm = readout / peak.clamp_min(1e-6)
        on = (norm > self.threshold) & (peak > 0)
        present = on.any(dim=1)
        cell = torch.arange(grid * grid, device=readout.device)
        xs, ys = (cell % grid).float()[None], (cell // grid).float()[None]
        big = float(grid)
        x0 = torch.where(on, xs, big).min(dim=1).values
        y0 = torch.where(on, ys, big).min(dim=1).values
        x1 = torch.where(on, xs, -1.0).max(dim=1).values + 1
        y1 = torch.where(on, ys, -1.0).max(dim=1).values + 1
        # click: the first cell (raster order) within PEAK_TOLERANCE of the peak, so runtimes
        # that round differently pick the same cell among near-ties (whole-object readouts are flat)
        best = (norm >= 1.0 - PEAK_TOLERANCE).to(norm.dtype).argmax(dim=1)
        click = torch.stack([(best % grid).float() + 0.5, (best // grid).float() + 0.5], dim=1)
        box = torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y1], 1)], dim=1)
        coords = torch.cat([click[:, None], box], dim=1) * EMBED_STRIDE  # [B, 3, 2]
        coords = torch.where(present[:, None, None], coords, torch.zeros_like(coords))
        labels = self.point_labels.expand(b, -1)
        labels = torch.where(present[:, None], labels, torch.full_like(labels, -1))
        grid_map = norm.view(b, 1, grid, grid)
        mask = F.interpolate(grid_map, (4 * grid, 4 * grid), mode="bilinear", align_corners=False)
        return coords, labels, self.gain * (mask - self.threshold), present


def is_readout_model(sam: nn.Module) -> bool:
    """True for models whose memory is the readout of this module (sam2s_mobile release 2)."""
    return isinstance(getattr(sam, "memory_attention", None), MemoryReadout)

"""A training clip tracked frame by frame, with gradients, through the inference code paths.

:class:`ClipModel` wraps a ``SAM2Base`` (plus an optional trainable semantic head) and its
``forward(batch)`` returns the clip's losses. It tracks the clip the way
:class:`sam2s_ros.tracking.tracker.InstrumentTracker` tracks a stream:

- frame 0 is a conditioning frame: the true mask used as output, or a box / clicks decoded
  on the no-memory features, followed by corrective clicks sampled from the error region
  (SAM 2's interactive training), each correction decoded with the previous logits;
- every later frame: memory attention over the instrument's memory bank, then the mask
  decoder with multimask output and no prompt (readout models, sam2s_ros.model.readout:
  single-mask output with the readout's prompt);
- after each frame the memory encoder writes the frame into the bank.

The memory bank is the inference one (:class:`sam2s_ros.tracking.memory_bank.InstrumentMemory`,
DiveMem selection included) and the memory-attention input is built by the same
:func:`~sam2s_ros.tracking.memory_bank.build_memory_inputs`; the stages are the export
stages of :mod:`sam2s_ros.model.stages`. Memory stays float32 and is not detached, so
gradients flow back through the clip (as in SAM 2's training).

Differences from inference, all as in SAM 2's training: masks written to memory are always
the sigmoid of the logits (no binarisation), and the mask decoder runs in training mode
(no stability-based single-mask fallback).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sam2s_ros.model import stages
from sam2s_ros.tracking.config import DiveMemConfig
from sam2s_ros.tracking.memory_bank import InstrumentMemory, build_memory_inputs
from sam2s_ros.tracking.tracker import MEM_MASK_BIAS, MEM_MASK_SCALE, PREV_LOGITS_CLAMP
from sam2s_ros.training.losses import frame_losses


class TrainableSemanticHead(nn.Module):
    """TSL head in the layout :class:`sam2s_ros.model.semantic_head.SemanticHead` loads.

    ``proj`` [D, 256] on the object pointer; ``class_embeddings`` [C, D] (a fixed buffer
    when given, e.g. CLIP text embeddings; a learned parameter otherwise); ``logit_scale``
    fixed at 100 as CLIP's. forward(obj_ptrs [B, 256]) -> logits [B, C].
    """

    def __init__(self, num_classes: int, dim: int, class_embeddings: Optional[torch.Tensor] = None):
        super().__init__()
        if class_embeddings is not None:
            dim = int(class_embeddings.shape[1])
        self.proj = nn.Linear(256, dim)
        if class_embeddings is not None:
            self.register_buffer("class_embeddings", class_embeddings.float().clone())
            self.learned = False
        else:
            self.class_embeddings = nn.Parameter(torch.randn(num_classes, dim) * 0.02)
            self.learned = True
        self.register_buffer("logit_scale", torch.tensor(100.0))

    def forward(self, obj_ptrs: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.proj(obj_ptrs), dim=-1)
        return self.logit_scale * z @ F.normalize(self.class_embeddings, dim=-1).T


class ClipModel(nn.Module):
    """SAM2Base + semantic head, trained on clips (module docstring).

    Args:
        sam: SAM2Base (train mode is set by the trainer).
        memory: DiveMemConfig for the training memory bank (memory_dtype float32).
        prompts: PromptConfig (corrective clicks). loss: LossConfig.
        semantic_head: TrainableSemanticHead or None.
    """

    def __init__(self, sam: nn.Module, memory: DiveMemConfig, prompts, loss, semantic_head=None):
        super().__init__()
        self.sam = sam
        self.semantic_head = semantic_head
        self.memory_cfg = memory
        self.prompts = prompts
        self.loss_cfg = loss
        feat_hw = sam.image_size // 16
        self.feat_hw = feat_hw
        self.memory_attention = stages.memory_stage(sam, feat_hw)
        self.memory_encoder = stages.MemoryEncoderStage(sam)
        self.no_memory = stages.NoMemoryStage(sam)

    # ---- features --------------------------------------------------------------------
    def _frame_feats(self, batch, t: int):
        sam = self.sam
        if batch.feats is not None:
            s4, s8, s16 = batch.feats["s4"][:, t], batch.feats["s8"][:, t], batch.feats["s16"][:, t]
        else:
            out = sam.image_encoder(batch.images[:, t])
            s4, s8, s16 = out["backbone_fpn"][0], out["backbone_fpn"][1], out["backbone_fpn"][-1]
        dec = sam.sam_mask_decoder
        pos = sam.image_encoder.position_encoding(s16[:1]).to(s16.dtype)
        return dec.conv_s0(s4), dec.conv_s1(s8), s16, pos

    # ---- corrective clicks -------------------------------------------------------------
    def _correction_clicks(self, logits: torch.Tensor, gt: torch.Tensor, gens: list[torch.Generator]):
        """One click per row from the error region (label 1 on misses, 0 on false alarms), or
        from the ground truth with probability prob_click_from_gt / when there is no error.
        ``gens``: one CPU generator per row."""
        s = gt.shape[-1]
        pred = logits.detach() > 0
        truth = gt[:, 0] > 0.5
        err = (pred[:, 0] ^ truth).flatten(1).float()
        from_gt = torch.cat([torch.rand(1, generator=g) for g in gens]).to(gt.device) < self.prompts.prob_click_from_gt
        no_err = err.sum(1) == 0
        use_gt = from_gt | no_err
        src = torch.where(use_gt[:, None], truth.flatten(1).float(), err)
        src = torch.where(src.sum(1, keepdim=True) > 0, src, torch.ones_like(src)).cpu()
        idx = torch.cat([torch.multinomial(src[i], 1, generator=g) for i, g in enumerate(gens)]).to(gt.device)
        ys, xs = idx // s, idx % s
        label = torch.where(use_gt, torch.ones_like(idx), truth.flatten(1).gather(1, idx[:, None])[:, 0].long())
        return torch.stack([xs, ys], 1).float()[:, None], label.int()[:, None]

    # ---- the clip ------------------------------------------------------------------------
    def forward(self, batch, seed: int = 0) -> dict[str, torch.Tensor]:
        """Track the batch's clips; returns mean losses {"total", "mask", "dice", "iou",
        "object_score", "semantic"} (scalars) and "mean_iou" (diagnostic, no gradient)."""
        sam, lc = self.sam, self.loss_cfg
        gens = [torch.Generator().manual_seed(seed * 1000003 + int(r)) for r in batch.row_ids]
        b, t_len = batch.gt.shape[0], batch.gt.shape[1]
        mems = [InstrumentMemory(self.memory_cfg) for _ in range(b)]
        terms: dict[str, list[torch.Tensor]] = {"mask": [], "dice": [], "iou": [], "object_score": []}
        sem_terms: list[torch.Tensor] = []
        ious_seen: list[torch.Tensor] = []
        maskmem_pos = None
        for t in range(t_len):
            s0, s1, s16, pos = self._frame_feats(batch, t)
            gt = batch.gt[:, t]
            hr = [s0, s1]
            if t == 0:
                is_cond = True
                if batch.prompt_kind == "mask":
                    out = sam._use_mask_as_output(s16, hr, gt)
                else:
                    coords, labels = batch.point_coords, batch.point_labels
                    pix = self.no_memory(s16)
                    out = sam._forward_sam_heads(
                        pix,
                        {"point_coords": coords, "point_labels": labels},
                        None,
                        hr,
                        multimask_output=coords.shape[1] <= 1,
                    )
                    self._add_losses(out, gt, terms, ious_seen)
                    for _ in range(self.prompts.clicks_per_correction if self.prompts.correct_frames else 0):
                        c, lab = self._correction_clicks(out[4], gt, gens)
                        coords, labels = torch.cat([coords, c], 1), torch.cat([labels, lab], 1)
                        prev = out[3].clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
                        out = sam._forward_sam_heads(
                            pix, {"point_coords": coords, "point_labels": labels}, prev, hr, multimask_output=False
                        )
                        self._add_losses(out, gt, terms, ious_seen)
            else:
                is_cond = False
                memory = build_memory_inputs(mems, t, self.feat_hw, self.memory_cfg.max_obj_ptrs, gt.device)
                if maskmem_pos is None:
                    raise RuntimeError("memory positional encoding missing after the first frame")
                att = self.memory_attention(
                    s16,
                    pos,
                    memory.mem_feats,
                    maskmem_pos,
                    memory.mem_tpos_index,
                    memory.mem_valid,
                    memory.obj_ptrs,
                    memory.obj_ptr_pos,
                    memory.ptr_valid,
                )
                if isinstance(att, tuple):  # readout models: decode with the readout prompt
                    pix, coords, labels, mask_in, _ = att
                    prompt = {"point_coords": coords, "point_labels": labels}
                    out = sam._forward_sam_heads(pix, prompt, mask_in, hr, multimask_output=False)
                else:
                    out = sam._forward_sam_heads(att, None, None, hr, multimask_output=True)
                self._add_losses(out, gt, terms, ious_seen)
            _, _, ious, low_res, high_res, obj_ptr, obj_score = out
            if self.semantic_head is not None:
                known = (batch.class_ids > 0) & (gt.flatten(1).sum(1) > 0)
                if bool(known.any()):
                    logits = self.semantic_head(obj_ptr[known])
                    sem_terms.append(F.cross_entropy(logits, batch.class_ids[known] - 1))
            mask_for_mem = torch.sigmoid(high_res) * MEM_MASK_SCALE + MEM_MASK_BIAS
            maskmem, maskmem_pos = self.memory_encoder(s16, mask_for_mem, obj_score[:, 0])
            best_iou = ious.max(dim=1).values.detach()
            for i, m in enumerate(mems):
                add = m.add_conditioning if is_cond else m.add_tracked
                add(t, maskmem[i], obj_ptr[i], float(obj_score[i, 0].detach()), float(best_iou[i]))
        losses = {k: torch.stack(v).mean() if v else s16.new_zeros(()) for k, v in terms.items()}
        losses["semantic"] = torch.stack(sem_terms).mean() if sem_terms else s16.new_zeros(())
        losses["total"] = (
            lc.mask * losses["mask"]
            + lc.dice * losses["dice"]
            + lc.iou * losses["iou"]
            + lc.object_score * losses["object_score"]
            + lc.semantic * losses["semantic"]
        )
        losses["mean_iou"] = torch.cat(ious_seen).mean() if ious_seen else s16.new_zeros(())
        return losses

    def _add_losses(self, out, gt, terms, ious_seen) -> None:
        multi_low, multi_high, ious, _, _, _, obj_score = out
        if multi_high.shape[-1] != gt.shape[-1]:
            multi_high = F.interpolate(multi_low, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        fl = frame_losses(multi_high, ious, obj_score, gt, self.loss_cfg)
        for k, v in fl.items():
            terms[k].append(v.mean())
        with torch.no_grad():
            best = ious.argmax(dim=1)
            chosen = multi_high[torch.arange(gt.shape[0]), best][:, None]
            pred, tgt = chosen > 0, gt > 0.5
            inter = (pred & tgt).flatten(1).sum(1).float()
            union = (pred | tgt).flatten(1).sum(1).float()
            ious_seen.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))

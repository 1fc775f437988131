"""The ``sam2s train`` loop: data, model, optimiser, distribution, checkpoints, logs, validation.

- One process, or many through ``torchrun`` (DDP; gloo on CPU, NCCL on CUDA). Every rank
  draws its own clips, seeded by (seed, rank, step, micro-batch); the loss is a mean over
  the micro-batch, so DDP's gradient average equals one process on the concatenated batch.
- Mixed precision: bf16 autocast on CUDA (``amp: bfloat16``); fp32 on CPU.
- Gradient accumulation, AdamW with per-group learning rates (pretrained vs new modules;
  no weight decay on biases and norms), linear warm-up then cosine decay, gradient clipping.
- Resumable: ``<out_dir>/checkpoints/last.pt`` holds model, optimiser, scheduler, step and
  RNG states; a run restarted with the same config continues where it stopped and draws
  the same clips it would have drawn.
- Logs: a tqdm progress bar (loss, clips/s), ``<out_dir>/log.csv`` and TensorBoard event
  files (``<out_dir>/tb``, written with tensorboardX).
- Validation: held-out sequences tracked by the normal :class:`InstrumentTracker`
  (box prompt from the ground truth on frame 0, nothing after), scored with
  :mod:`sam2s_ros.evaluation.davis` at model resolution.
- Output: ``<out_dir>/<model_size>.safetensors`` (fp16, the node's checkpoint format, the
  semantic head under ``semantic_head.*``) and ``<out_dir>/model_card.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from sam2s_ros.errors import ConfigError
from sam2s_ros.training.config import TrainConfig

log = logging.getLogger(__name__)

#: name patterns of parameters without weight decay (SAM 2.1: biases and norms)
NO_DECAY_MARKERS = ("bias", "norm", "embed", "tpos_enc", "token")
#: readout key fit: every this many training frames (DAVIS 2016 at 512²: ~300 frames, ~300k cells)
READOUT_FIT_STRIDE = 3


# ---- distribution -----------------------------------------------------------------------------
def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world, device)."""
    rank, world, local = dist_info()
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


# ---- model ----------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, set[str], str]:
    """SAM2Base of ``cfg.model_size`` with the ``init`` weights.

    Returns:
        (sam, names of tensors that came from a pretrained file, description of the base).
    """
    from sam2s_ros.model.build import build_random_model, build_sam2_base
    from sam2s_ros.model.checkpoint import file_sha256, load_sam_weights, read_state_dict, split_semantic_head

    torch.manual_seed(cfg.seed)
    if cfg.init == "random":
        sam = build_random_model(cfg.model_size, cfg.image_size, seed=cfg.seed)
        return sam, set(), f"random (seed {cfg.seed})"
    kind, path = cfg.init.split(":", 1)
    sam = build_sam2_base(cfg.model_size, cfg.image_size)
    if kind == "mobilesam":
        from sam2s_ros.model.mobile import MOBILE_MODEL, init_from_mobilesam

        if cfg.model_size != MOBILE_MODEL:
            raise ConfigError(f"init mobilesam:... needs model_size {MOBILE_MODEL}, got {cfg.model_size}")
        new = set(init_from_mobilesam(sam, path))
        pretrained = set(sam.state_dict()) - new
    else:
        sam_state, _ = split_semantic_head(read_state_dict(path))
        load_sam_weights(sam, sam_state, path)
        pretrained = set(sam.state_dict())
    return sam, pretrained, f"{kind} {Path(path).name} (sha256 {file_sha256(path)[:16]})"


def param_groups(model: torch.nn.Module, pretrained: set[str], cfg: TrainConfig) -> list[dict]:
    """AdamW groups: (pretrained | new) x (decay | no decay), trainable parameters only."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        sam_name = name[len("sam.") :] if name.startswith("sam.") else None
        is_pre = sam_name is not None and sam_name in pretrained
        no_decay = p.ndim <= 1 or any(m in name for m in NO_DECAY_MARKERS)
        groups.setdefault((is_pre, no_decay), []).append(p)
    o = cfg.optim
    return [
        {
            "params": ps,
            "lr": o.lr_pretrained if pre else o.lr,
            "base_lr": o.lr_pretrained if pre else o.lr,
            "weight_decay": 0.0 if nd else o.weight_decay,
        }
        for (pre, nd), ps in sorted(groups.items())
    ]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine to ``lr_min_ratio`` at the last step."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps)
    return o.lr_min_ratio + (1 - o.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def apply_freeze(sam: torch.nn.Module, names: list[str]) -> None:
    for n in names:
        if n != "semantic_head":
            for p in getattr(sam, n).parameters():
                p.requires_grad_(False)


def step_rng(seed: int, rank: int, step: int, micro: int) -> np.random.Generator:
    """The generator of one micro-batch: a pure function of its position in the run.

    ``rank`` is part of the key for generators that must differ per rank; the training batch
    uses rank 0's on every rank (see sampling.sample_batch: one global batch, sliced)."""
    return np.random.default_rng([seed, rank, step, micro])


# ---- the trainer -------------------------------------------------------------------------------------
class Trainer:
    """Builds everything from a TrainConfig; :meth:`run` trains (see module docstring)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True):
        from sam2s_ros.training.datasets import load_all, split_sequences
        from sam2s_ros.training.features import FeatureCache
        from sam2s_ros.training.unroll import ClipModel, TrainableSemanticHead

        cfg.validate()
        self.cfg = cfg
        self.progress = progress
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.rank, self.world, self.device = init_distributed(cfg.device)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        seqs = load_all(cfg.data, cfg.image_size)
        self.train_seqs, self.val_seqs = split_sequences(seqs, cfg.data, cfg.seed)
        w = np.array([cfg.data.sources[s.source_index].weight for s in self.train_seqs], dtype=np.float64)
        per_source = {i: sum(1 for s in self.train_seqs if s.source_index == i) for i in range(len(cfg.data.sources))}
        w = w / np.array([per_source[s.source_index] for s in self.train_seqs])  # weight per source, not per sequence
        self.weights = w / w.sum()
        sam, self.pretrained, self.base = build_model(cfg)
        apply_freeze(sam, cfg.freeze)
        self.sam = sam
        head = None
        if cfg.class_vocabulary:
            emb = None
            if cfg.class_embeddings:
                from sam2s_ros.model.checkpoint import read_state_dict

                emb = read_state_dict(cfg.class_embeddings).get("class_embeddings")
                if emb is None or emb.shape[0] != len(cfg.class_vocabulary):
                    raise ConfigError(
                        f"{cfg.class_embeddings} must hold 'class_embeddings' [C={len(cfg.class_vocabulary)}, D]"
                    )
            head = TrainableSemanticHead(len(cfg.class_vocabulary), cfg.semantic_dim, emb)
            if "semantic_head" in cfg.freeze:
                head.requires_grad_(False)
        self.model = ClipModel(sam, cfg.memory, cfg.prompts, cfg.loss, head).to(self.device)
        self.cache = None
        if "image_encoder" in cfg.freeze:
            self.cache = FeatureCache(cfg.feature_cache or None, sam, cfg.image_size)
        self.opt = torch.optim.AdamW(param_groups(self.model, self.pretrained, cfg), betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.step = 0
        self.history: list[dict] = []
        self.val_history: list[dict] = []

    # ---- state ---------------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items()}

    def save_checkpoint(self) -> None:
        """Resumable checkpoint (rank 0 only), written atomically."""
        if self.rank != 0:
            return
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": self.step,
            "history": self.history,
            "val_history": self.val_history,
            "config": asdict(self.cfg),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)

    def resume(self) -> bool:
        """Load ``last.pt`` when it exists; returns True if the run continues from it."""
        if not self.ckpt_path.is_file():
            return False
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.val_history = list(state.get("val_history", []))
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return True

    # ---- one step --------------------------------------------------------------------------------
    def _to_device(self, batch):
        if self.device.type == "cpu":
            return batch

        def move(x):
            return x.to(self.device, non_blocking=True) if isinstance(x, torch.Tensor) else x

        batch.gt, batch.class_ids = move(batch.gt), move(batch.class_ids)
        batch.point_coords, batch.point_labels, batch.images = map(
            move, (batch.point_coords, batch.point_labels, batch.images)
        )
        if batch.feats is not None:
            batch.feats = {k: move(v) for k, v in batch.feats.items()}
        return batch

    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns logged scalars."""
        from sam2s_ros.training.sampling import sample_batch

        cfg = self.cfg
        self.model.train()
        self.sam.image_encoder.train("image_encoder" not in cfg.freeze)
        net = self.ddp or self.model
        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if cfg.amp == "bfloat16" and self.device.type == "cuda"
            else nullcontext()
        )
        sums: dict[str, float] = {}
        accum = cfg.optim.grad_accum
        t0 = time.perf_counter()
        for micro in range(accum):
            rng = step_rng(cfg.seed, 0, self.step, micro)
            batch = self._to_device(
                sample_batch(
                    self.train_seqs,
                    self.weights,
                    self.cache,
                    cfg.data,
                    cfg.prompts,
                    list(cfg.class_vocabulary),
                    cfg.batch_size,
                    rng,
                    (self.rank, self.world),
                )
            )
            sync = self.ddp.no_sync() if (self.ddp is not None and micro < accum - 1) else nullcontext()
            with sync, amp:
                losses = net(batch, seed=int(rng.integers(2**31)))
                (losses["total"] / accum).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
        params = [p for p in self.model.parameters() if p.requires_grad and p.grad is not None]
        sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step += 1
        sums["lr"] = self.opt.param_groups[0]["lr"]
        dt = time.perf_counter() - t0
        sums.update({"s_per_step": dt, "clips_per_s": cfg.batch_size * accum * self.world / dt})
        self.history.append({"step": self.step, **{k: round(v, 6) for k, v in sums.items()}})
        return sums

    # ---- validation -------------------------------------------------------------------------------
    def validate(self) -> Optional[dict]:
        """J&F of the held-out sequences (rank 0; None without validation sequences)."""
        if not self.val_seqs or self.rank != 0:
            return None
        from sam2s_ros.training.validation import track_and_score

        self.model.eval()
        result = track_and_score(self.sam, self.model.semantic_head, self.val_seqs, self.cfg, self.device)
        result["step"] = self.step
        self.val_history.append(result)
        return result

    # ---- the run -------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to ``cfg.steps`` (resuming if a checkpoint exists), validate, export; returns the card."""
        from tqdm import tqdm

        cfg = self.cfg
        resumed = self.resume()
        if self.cache is not None and self.rank == 0:
            self.cache.fill(self.train_seqs, progress=self.progress)
        if self.world > 1:
            dist.barrier()
        if not resumed:
            self.readout_fit = self.fit_readout_keys()
        writer = self._tb_writer()
        csv_path = self.out / "log.csv"
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not self.progress or self.rank != 0,
            unit="step",
            desc="resumed" if resumed else "training",
        )
        while self.step < cfg.steps:
            scalars = self.train_step()
            row = self.history[-1]
            if self.rank == 0:
                self._log(csv_path, writer, row)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{scalars['total']:.3f}",
                    iou=f"{scalars['mean_iou']:.2f}",
                    clips_s=f"{scalars['clips_per_s']:.2f}",
                )
            if cfg.val_every and self.step % cfg.val_every == 0 and self.step < cfg.steps:
                v = self.validate()
                if v is not None and writer is not None:
                    writer.add_scalar("val/J&F", v["J&F"], self.step)
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        final_val = self.validate()
        if writer is not None:
            if final_val is not None:
                writer.add_scalar("val/J&F", final_val["J&F"], self.step)
            writer.close()
        card = self.export(final_val) if self.rank == 0 else {}
        if self.world > 1:
            dist.barrier()
        return card

    def fit_readout_keys(self) -> Optional[dict]:
        """Readout models with ``readout_keys: pca``: fit the memory's key projection
        (sam2s_ros.model.readout.fit_key_projection) on the stride-16 features of every
        READOUT_FIT_STRIDE-th training frame. Deterministic, so every DDP rank fits the same.

        Returns:
            {"frames", "cells", "variance_kept"} or None when nothing was fitted.
        """
        from sam2s_ros.model.readout import fit_key_projection, init_key_projection, is_readout_model
        from sam2s_ros.training.features import FeatureCache

        if not is_readout_model(self.sam) or self.cfg.readout_keys != "pca":
            return None
        cache = self.cache or FeatureCache(None, self.sam, self.cfg.image_size)
        cells = []
        for seq in self.train_seqs:
            for i in range(0, seq.num_frames, READOUT_FIT_STRIDE):
                s16 = cache.get(seq, i)["s16"].float()  # [256, h, w]
                cells.append(s16.flatten(1).T)
        basis, kept = fit_key_projection(torch.cat(cells), seed=self.cfg.seed)
        init_key_projection(self.sam.memory_encoder, basis)
        info = {"frames": len(cells), "cells": int(sum(c.shape[0] for c in cells)), "variance_kept": round(kept, 4)}
        if self.rank == 0:
            log.info("readout keys: PCA on %(cells)d cells of %(frames)d frames keeps %(variance_kept).3f", info)
        return info

    def _tb_writer(self):
        if self.rank != 0:
            return None
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboardX is in requirements/runtime.txt
            return None
        return SummaryWriter(str(self.out / "tb"))

    def _log(self, csv_path: Path, writer, row: dict) -> None:
        new = not csv_path.is_file()
        with csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if writer is not None:
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, row["step"])

    # ---- output ----------------------------------------------------------------------------------------
    def export(self, final_val: Optional[dict]) -> dict:
        """Write the node-loadable fp16 safetensors checkpoint and its JSON model card."""
        from safetensors.torch import save_file

        from sam2s_ros.model.checkpoint import file_sha256

        cfg = self.cfg
        state = {k: v.detach().half().contiguous() for k, v in self.sam.state_dict().items()}
        head = self.model.semantic_head
        if head is not None:
            state["semantic_head.proj.weight"] = head.proj.weight.detach().half().contiguous()
            state["semantic_head.proj.bias"] = head.proj.bias.detach().half().contiguous()
            state["semantic_head.class_embeddings"] = head.class_embeddings.detach().half().contiguous()
            state["semantic_head.logit_scale"] = head.logit_scale.detach().half().contiguous()
        path = self.out / f"{cfg.model_size}.safetensors"
        meta = {
            "format": "sam2s_ros.checkpoint",
            "model_size": cfg.model_size,
            "image_size": str(cfg.image_size),
            "steps": str(self.step),
            "base": self.base,
        }
        save_file(state, str(path), metadata=meta)
        card = {
            "model": cfg.model_size,
            "file": path.name,
            "sha256": file_sha256(str(path)),
            "image_size": cfg.image_size,
            "base_checkpoint": self.base,
            "steps": self.step,
            "clips_seen": self.step * cfg.batch_size * cfg.optim.grad_accum * self.world,
            "data_sources": [
                {"kind": s.kind, "path": s.path, "weight": s.weight, "licence": s.licence, "exclude": list(s.exclude)}
                for s in cfg.data.sources
            ],
            "train_sequences": [s.name for s in self.train_seqs],
            "val_sequences": [s.name for s in self.val_seqs],
            "switches": {
                "divemem_in_training": cfg.memory.long_term_enabled,
                "hybrid_temporal_sampling": cfg.data.hybrid_sampling,
                "tsl_semantic_head": head is not None,
                "tsl_class_embeddings": (
                    None if head is None else ("learned" if head.learned else f"given: {cfg.class_embeddings}")
                ),
                "arl_sigma_px": cfg.loss.arl_sigma_px,
                "freeze": list(cfg.freeze),
            },
            "readout_keys": getattr(self, "readout_fit", None),
            "validation": final_val,
            "validation_history": self.val_history,
            "final_train_loss": self.history[-1]["total"] if self.history else None,
            "config": asdict(cfg),
        }
        (self.out / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        return card

"""``sam2s train``: fine-tune a checkpoint into SAM2S on recorded masklets (sam2s_ros.training)."""

from __future__ import annotations

import argparse
import json

COMMAND = "train"

EPILOG = """examples:
  sam2s train --config config/train/sam2s_mobile.yaml
  sam2s train --config config/train/sam2s_mobile.yaml steps=50 out_dir=runs/try image_size=256
  sam2s train --config config/train/sam2s_mobile.yaml --cache-only --shard 0/2   # fill the feature cache
  torchrun --nproc_per_node 2 -m sam2s_ros.tools.cli train --config config/train/sam2s_mobile.yaml

A run folder holds checkpoints/last.pt (resumed automatically), log.csv, tb/ (TensorBoard),
the exported <model>.safetensors (fp16, loads in sam2s_node) and model_card.json.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        COMMAND,
        help="train / fine-tune a SAM2S checkpoint on recorded masklets",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="training YAML (see config/train/ and sam2s_ros/training/config.py)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 data.clip_frames=6")
    p.add_argument("--cache-only", action="store_true", help="only fill the frozen-encoder feature cache, then exit")
    p.add_argument("--shard", default="0/1", help="with --cache-only: this process encodes shard I of N (I/N)")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="write <out_dir>/<model>.safetensors + model_card.json from checkpoints/last.pt, no training",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.csv)")
    return p


def run(args: argparse.Namespace) -> int:
    from sam2s_ros.errors import ConfigError
    from sam2s_ros.training.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    if args.cache_only:
        try:
            index, count = (int(x) for x in args.shard.split("/"))
        except ValueError as exc:
            raise ConfigError(f"--shard must look like I/N, got {args.shard!r}") from exc
        if not 0 <= index < count:
            raise ConfigError(f"--shard {args.shard}: need 0 <= I < N")
        return _fill_cache(cfg, index, count, not args.no_progress)
    from sam2s_ros.training.trainer import Trainer

    trainer = Trainer(cfg, progress=not args.no_progress)
    if args.export_only:
        if not trainer.resume():
            raise ConfigError(f"--export-only: no checkpoint at {trainer.ckpt_path}")
        card = trainer.export(trainer.val_history[-1] if trainer.val_history else None)
    else:
        card = trainer.run()
    if card:
        print(
            json.dumps({k: card[k] for k in ("model", "file", "sha256", "steps", "validation")}, indent=2, default=str)
        )
    return 0


def _fill_cache(cfg, index: int, count: int, progress: bool) -> int:
    import torch

    from sam2s_ros.errors import ConfigError
    from sam2s_ros.training.datasets import load_all
    from sam2s_ros.training.features import FeatureCache
    from sam2s_ros.training.trainer import build_model

    if "image_encoder" not in cfg.freeze or not cfg.feature_cache:
        raise ConfigError("--cache-only needs freeze: [image_encoder, ...] and a feature_cache folder")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    sam, _, _ = build_model(cfg)
    seqs = load_all(cfg.data, cfg.image_size)
    cache = FeatureCache(cfg.feature_cache, sam, cfg.image_size)
    jobs = [(s, i) for s in seqs for i in range(s.num_frames)][index::count]
    from tqdm import tqdm

    for s, i in tqdm(jobs, desc=f"cache shard {index}/{count}", disable=not progress, unit="frame"):
        cache.get(s, i)
    print(
        f"shard {index}/{count}: {cache.computed} frames encoded, {len(jobs) - cache.computed} already cached "
        f"in {cache.dir}"
    )
    return 0

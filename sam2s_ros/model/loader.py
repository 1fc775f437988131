"""From a TrackerConfig to a SAM 2.1 network with weights (checkpoint or explicit random)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from sam2s_ros.errors import CheckpointError
from sam2s_ros.model.build import build_random_model, build_sam2_base
from sam2s_ros.model.checkpoint import file_sha256, load_sam_weights, read_state_dict, split_semantic_head
from sam2s_ros.model.semantic_head import SemanticHead
from sam2s_ros.tracking.config import TrackerConfig


@dataclass
class LoadedModel:
    """A SAM 2.1 network ready to run.

    Attributes:
        sam: ``SAM2Base`` in eval mode on CPU.
        semantic_head: trained class head or None (no trained weights -> no model classes).
        weights: human-readable origin: "checkpoint <path>" or "random weights (seed N)".
        checkpoint_sha256: hash of the checkpoint file ("" for random weights); saved states
            record it so a state is never loaded onto other weights.
        random_weights: True when the weights are random.
    """

    sam: torch.nn.Module
    semantic_head: Optional[SemanticHead]
    weights: str
    checkpoint_sha256: str
    random_weights: bool


def load_model(cfg: TrackerConfig) -> LoadedModel:
    """Build the network of ``cfg.model_size`` at ``cfg.image_size`` and load its weights.

    Raises:
        CheckpointError: no checkpoint and random weights not allowed; unreadable, unsafe
            or mismatched checkpoint.
        ConfigError / BackendError: from building the network.
    """
    if not cfg.checkpoint:
        if not cfg.allow_random_weights:
            raise CheckpointError(
                "no checkpoint configured: put a SAM 2.1 / SAM2S checkpoint in models/ (see models/README.md) "
                "and set the 'checkpoint' parameter, or explicitly allow random weights for a pipeline test"
            )
        sam = build_random_model(cfg.model_size, cfg.image_size, seed=cfg.seed)
        return LoadedModel(sam, None, f"random weights (seed {cfg.seed})", "", True)
    state = read_state_dict(cfg.checkpoint)
    sam_state, head_state = split_semantic_head(state)
    sam = build_sam2_base(cfg.model_size, cfg.image_size)
    load_sam_weights(sam, sam_state, cfg.checkpoint)
    head = SemanticHead.from_state(head_state, len(cfg.class_vocabulary)) if head_state else None
    return LoadedModel(sam.eval(), head, f"checkpoint {cfg.checkpoint}", file_sha256(cfg.checkpoint), False)

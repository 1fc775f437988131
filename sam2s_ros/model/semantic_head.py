"""Instrument classification from a checkpoint's trained semantic head (SAM2S TSL).

SAM2S learns instrument semantics with CLIP-aligned CLS tokens (temporal semantic
learning); its released key layout is not available on our machines, so sam2s_ros defines
and documents the layout it loads (keys under ``semantic_head.`` in the checkpoint):

- ``semantic_head.proj.weight`` [D, 256] and ``semantic_head.proj.bias`` [D]: projection
  of the instrument's object pointer (SAM 2's per-object output token, 256-d);
- ``semantic_head.class_embeddings`` [C, D]: one (e.g. CLIP text) embedding per class of
  the vocabulary, in vocabulary order (class id = row + 1);
- ``semantic_head.logit_scale`` [] (optional, default 100 like CLIP): temperature.

Class probabilities = softmax(logit_scale * cos(proj(obj_ptr), class_embeddings)).
A checkpoint without these keys has no trained head: the tracker then reports the class
given with the prompt (class_source PROMPT) or none, never an untrained guess.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2s_ros.errors import CheckpointError


class SemanticHead(nn.Module):
    """Cosine classifier over object pointers (layout in the module docstring)."""

    def __init__(
        self,
        proj_weight: torch.Tensor,
        proj_bias: torch.Tensor,
        class_embeddings: torch.Tensor,
        logit_scale: float = 100.0,
    ):
        super().__init__()
        self.proj = nn.Linear(proj_weight.shape[1], proj_weight.shape[0])
        with torch.no_grad():
            self.proj.weight.copy_(proj_weight)
            self.proj.bias.copy_(proj_bias)
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self.logit_scale = float(logit_scale)

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    @torch.inference_mode()
    def forward(self, obj_ptrs: torch.Tensor) -> torch.Tensor:
        """obj_ptrs [B, 256] float32 -> class probabilities [B, C] float32."""
        z = F.normalize(self.proj(obj_ptrs.float()), dim=-1)
        return torch.softmax(self.logit_scale * z @ self.class_embeddings.T, dim=-1)

    @classmethod
    def from_state(
        cls, head_state: dict[str, torch.Tensor], vocabulary_size: int, hidden_dim: int = 256
    ) -> "SemanticHead":
        """Build from checkpoint keys (prefix removed).

        Raises:
            CheckpointError: keys missing, shapes inconsistent, or class count not equal
                to the configured vocabulary size.
        """
        need = {"proj.weight", "proj.bias", "class_embeddings"}
        missing = need - set(head_state)
        extra = set(head_state) - need - {"logit_scale"}
        if missing or extra:
            raise CheckpointError(
                f"semantic head keys do not match the documented layout: missing "
                f"{sorted(missing)}, unexpected {sorted(extra)}"
            )
        w, b, emb = head_state["proj.weight"], head_state["proj.bias"], head_state["class_embeddings"]
        if (
            w.dim() != 2
            or w.shape[1] != hidden_dim
            or b.shape != (w.shape[0],)
            or emb.dim() != 2
            or emb.shape[1] != w.shape[0]
        ):
            raise CheckpointError(
                f"semantic head shapes inconsistent: proj.weight {tuple(w.shape)}, "
                f"proj.bias {tuple(b.shape)}, class_embeddings {tuple(emb.shape)}"
            )
        if emb.shape[0] != vocabulary_size:
            raise CheckpointError(
                f"semantic head has {emb.shape[0]} classes but class_vocabulary has {vocabulary_size}"
            )
        scale = float(head_state["logit_scale"]) if "logit_scale" in head_state else 100.0
        return cls(w, b, emb, scale)

"""Loading and checking SAM 2.1 / SAM2S checkpoints safely.

Accepted files:
- torch files (.pt / .pth / .ckpt) holding ``{"model": state_dict}`` (the official SAM 2.1
  layout) or a bare state dict; always read with ``torch.load(weights_only=True)``, so a
  pickle that tries to run code is refused;
- ``.safetensors`` files holding the state dict.

Key layout: the official SAM2Base names (``image_encoder.*``, ``memory_attention.*``,
``memory_encoder.*``, ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``maskmem_tpos_enc``,
``no_mem_embed``, ``obj_ptr_proj.*``, ...). SAM2S checkpoints add a semantic head; we load
any keys under ``semantic_head.`` into :class:`sam2s_ros.model.semantic_head.SemanticHead`
(layout documented there). Everything else must match the model exactly: a checkpoint of
another model size or with missing/unexpected keys is refused with the offending keys.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from typing import Optional

import torch

from sam2s_ros.errors import CheckpointError

SEMANTIC_PREFIX = "semantic_head."
_MAX_LISTED = 8


def file_sha256(path: str, limit_bytes: Optional[int] = None) -> str:
    """Hex SHA-256 of a file (of its first ``limit_bytes`` bytes when given)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = limit_bytes
        while True:
            chunk = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat {name: tensor} dict.

    Raises:
        CheckpointError: missing file, unreadable/corrupt file, a pickle holding anything
            but tensors and plain containers (possible code), or no state dict inside.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist (see models/README.md for how to get one)")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover
            raise CheckpointError("reading .safetensors needs the 'safetensors' package") from exc
        try:
            return dict(load_file(path, device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
            raise CheckpointError(f"checkpoint {path!r} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused checkpoint {path!r}: it holds Python objects other than tensors "
            f"(a pickle that may run code); only weights are accepted ({exc})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a torch file: {exc}") from exc
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path!r} does not hold a state dict ({{'model': {{name: tensor}}}})")
    return obj


def _listing(names) -> str:
    names = sorted(names)
    more = f" … (+{len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def split_semantic_head(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Split a state dict into (SAM 2.1 weights, semantic head weights without the prefix)."""
    sam = {k: v for k, v in state.items() if not k.startswith(SEMANTIC_PREFIX)}
    head = {k[len(SEMANTIC_PREFIX) :]: v for k, v in state.items() if k.startswith(SEMANTIC_PREFIX)}
    return sam, head


def load_sam_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy SAM 2.1 weights into ``model``, refusing any mismatch.

    Raises:
        CheckpointError: naming missing keys, unexpected keys and shape mismatches (a
            checkpoint of another model size shows up as shape mismatches / missing keys).
    """
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched[:_MAX_LISTED])}")
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        raise CheckpointError(
            f"checkpoint {source!r} does not fit this model (wrong model_size or not a SAM 2.1 "
            f"checkpoint): " + " | ".join(parts)
        )
    model.load_state_dict(state, strict=True)

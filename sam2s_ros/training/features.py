"""Frozen image-encoder features: computed once per frame, kept in a disk cache.

With ``freeze: [image_encoder]`` the encoder's output for a frame never changes, so training
reads it from disk instead of running the encoder again. A cache entry is keyed by

- the encoder weights (sha256 over the frozen encoder's tensors, so a different checkpoint
  can never reuse stale features),
- the model input size and the version of the input transform (``PREPROCESS_VERSION``),
- the frame (its file path, size and mtime, or bag path and stamp),

and holds the raw encoder outputs the trainable parts consume, in float16 safetensors files:
``s4`` [C4, S/4, S/4], ``s8`` [C8, S/8, S/8] (before the decoder's trainable ``conv_s0`` /
``conv_s1``) and ``s16`` [256, S/16, S/16].
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch

from sam2s_ros.tracking.preprocess import PREPROCESS_VERSION, to_model_input


def encoder_sha256(encoder: torch.nn.Module) -> str:
    """Hex sha256 over an encoder's state dict (names, shapes, dtypes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def raw_encoder_outputs(sam: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s4, s8, s16) of the image encoder, before the decoder's high-res projections.

    Args:
        sam: SAM2Base; image: [B, 3, S, S] normalised.
    """
    out = sam.image_encoder(image)
    s4, s8, s16 = out["backbone_fpn"][0], out["backbone_fpn"][1], out["backbone_fpn"][-1]
    return s4, s8, s16


class FeatureCache:
    """Disk cache of frozen encoder outputs (module docstring).

    Args:
        folder: cache root ("" or None: no disk cache, features computed on demand).
        sam: the model (its image encoder must be frozen and stay so).
        image_size: model input side S.
    """

    def __init__(self, folder: Optional[str], sam: torch.nn.Module, image_size: int):
        self.sam = sam
        self.image_size = image_size
        self.encoder_hash = encoder_sha256(sam.image_encoder)
        key = f"{self.encoder_hash[:16]}_{image_size}_p{PREPROCESS_VERSION}"
        self.dir = Path(folder) / key if folder else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.computed = 0  # frames encoded by this process (0 after a warm cache)

    def _path(self, frame_key: str) -> Optional[Path]:
        if self.dir is None:
            return None
        return self.dir / (hashlib.sha256(frame_key.encode()).hexdigest()[:32] + ".safetensors")

    @torch.no_grad()
    def _encode(self, frame) -> dict[str, torch.Tensor]:
        x = to_model_input(frame, self.image_size, torch.device("cpu"))
        s4, s8, s16 = raw_encoder_outputs(self.sam, x)
        self.computed += 1
        return {"s4": s4[0].half(), "s8": s8[0].half(), "s16": s16[0].half()}

    def get(self, seq, index: int) -> dict[str, torch.Tensor]:
        """Features of frame ``index`` of ``seq`` (a training Sequence), from disk or computed."""
        from safetensors.torch import load_file, save_file

        path = self._path(seq.frame_keys[index])
        if path is not None and path.is_file():
            return load_file(str(path))
        feats = self._encode(seq.read_frame(index))
        if path is not None:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file(feats, str(tmp))
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written entry
        return feats

    def fill(self, sequences, progress: bool = True) -> int:
        """Encode every frame of ``sequences`` that is not cached yet; returns frames encoded."""
        from tqdm import tqdm

        todo = [
            (s, i)
            for s in sequences
            for i in range(s.num_frames)
            if self._path(s.frame_keys[i]) is None or not self._path(s.frame_keys[i]).is_file()
        ]
        before = self.computed
        for s, i in tqdm(todo, desc="caching encoder features", disable=not progress or not todo, unit="frame"):
            self.get(s, i)
        return self.computed - before

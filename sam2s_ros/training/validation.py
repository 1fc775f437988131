"""Validation during training: held-out sequences through the normal streaming tracker.

Each object is prompted once, on its first visible frame, with the box of its ground truth;
the tracker (:class:`~sam2s_ros.tracking.tracker.InstrumentTracker` on a
:class:`~sam2s_ros.backends.torch_backend.TorchBackend` sharing the weights being trained)
then follows it with no further prompt. Masks are scored with the package's DAVIS
evaluator (:mod:`sam2s_ros.evaluation.davis`, first and last frame dropped) against the
ground truth at model resolution (S x S), which is what the training data holds.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from sam2s_ros.evaluation import davis


def track_and_score(sam, semantic_head, sequences, cfg, device: torch.device) -> dict:
    """Track every object of ``sequences``; returns {"J&F", "J", "F", "per_sequence": {...}}.

    Args:
        sam: SAM2Base being trained (left in eval mode).
        semantic_head: unused for scoring (classes are not part of J&F); kept for symmetry.
        sequences: validation Sequences. cfg: the TrainConfig (image size, model size,
            ``val_frames``).
    """
    from sam2s_ros.backends.torch_backend import TorchBackend
    from sam2s_ros.tracking.config import TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker
    from sam2s_ros.tracking.types import PromptInput, PromptMode

    tcfg = TrackerConfig(
        model_size=cfg.model_size, image_size=cfg.image_size, allow_random_weights=True, device=str(device)
    )
    backend = TorchBackend(sam, device=str(device))
    per_seq = {}
    js, fs = [], []
    s = cfg.image_size
    for seq in sequences:
        n = seq.num_frames if not cfg.val_frames else min(cfg.val_frames, seq.num_frames)
        for obj in seq.object_ids:
            present = np.flatnonzero((seq.labels[:n] == obj).reshape(n, -1).any(1))
            if len(present) == 0 or n - present[0] < 3:
                continue
            start = int(present[0])
            tracker = InstrumentTracker(backend, tcfg, weights="training")
            preds, gts = [], []
            for i in range(start, n):
                frame = seq.read_frame(i)
                prompts = []
                if i == start:
                    h, w = frame.shape[:2]
                    ys, xs = np.nonzero(seq.labels[i] == obj)
                    box = np.array(
                        [xs.min() * w / s, ys.min() * h / s, (xs.max() + 1) * w / s, (ys.max() + 1) * h / s], np.float32
                    )
                    prompts = [PromptInput(instrument_id=1, mode=PromptMode.NEW, box=box)]
                res = tracker.track(frame, prompts)
                mask = res.instruments[0].mask if res.instruments else np.zeros(frame.shape[:2], bool)
                preds.append(cv2.resize(mask.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST) > 0)
                gts.append(seq.labels[i] == obj)
            ev = davis.evaluate_object(preds, gts)
            per_seq[f"{seq.name}:{obj}"] = {"J": ev.J.mean, "F": ev.F.mean, "J&F": ev.jf}
            js.append(ev.J.mean)
            fs.append(ev.F.mean)
    if not js:
        return {"J&F": float("nan"), "J": float("nan"), "F": float("nan"), "per_sequence": per_seq}
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J&F": (j + f) / 2, "J": j, "F": f, "per_sequence": per_seq}

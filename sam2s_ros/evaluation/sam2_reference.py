"""The official SAM 2.1 video predictor (sam2 1.1.0) as an oracle for parity tests and benchmarks.

The oracle gets exactly our random weights and our preprocessed frames (its own JPEG
loading/resizing is replaced), so a difference can only come from the tracking logic.
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np
import torch

from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig
from sam2s_ros.tracking.preprocess import to_model_input

SAM21_TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


def sam21_config(image_size: int, **overrides) -> TrackerConfig:
    """Our tracker configured exactly as SAM 2.1 (long-term memory off, no hole filling)."""
    mem = DiveMemConfig(long_term_enabled=False, max_cond_frames=64, memory_dtype="bfloat16")
    return TrackerConfig(
        model_size="tiny",
        image_size=image_size,
        allow_random_weights=True,
        seed=0,
        fill_hole_area=0,
        divemem=mem,
        **overrides,
    )


def official_predictor(state_dict: dict, image_size: int):
    """SAM2VideoPredictor with the given weights, hole filling off (its CUDA op is absent)."""
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        SAM21_TINY, ckpt_path=None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"]
    )
    predictor.load_state_dict(state_dict)
    predictor.fill_hole_area = 0
    return predictor.eval()


def official_init_state(predictor, frames: list[np.ndarray], tmp_dir: pathlib.Path):
    """init_state on JPEG copies of ``frames``, then our preprocessed tensors swapped in."""
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_dir / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    state = predictor.init_state(str(tmp_dir))
    images = torch.cat([to_model_input(f, predictor.image_size, torch.device("cpu")) for f in frames])
    state["images"] = images
    state["cached_features"] = {}  # init_state warmed up frame 0 from the JPEG copy
    return state


@torch.inference_mode()
def official_track(predictor, state, prompts: dict) -> list[np.ndarray]:
    """Prompts on frame 0 ({obj_id: dict(points=, labels=) | dict(box=)}), then propagate.

    Returns:
        per frame: [n_obj, H, W] float32 video-resolution logits, objects in id order.
    """
    for obj_id, kw in sorted(prompts.items()):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, **kw)
    out = []
    for _, obj_ids, logits in predictor.propagate_in_video(state):
        order = np.argsort(obj_ids)
        out.append(logits[:, 0].float().cpu().numpy()[order])
    return out

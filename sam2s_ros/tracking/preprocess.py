"""Frame checks and the SAM 2 input transform (source RGB image -> model input tensor)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from sam2s_ros.errors import FrameError
from sam2s_ros.tracking import transfer

#: ImageNet mean / std used by SAM 2 (sam2/utils/misc.py, load_video_frames)
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


def check_frame(image) -> tuple[int, int]:
    """Validate a source frame and return its (H, W) in pixels.

    Raises:
        FrameError: not a numpy array, not [H, W, 3] uint8 RGB, or zero-size.
    """
    if not isinstance(image, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise FrameError(f"frame must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"frame must have shape [H, W, 3] (RGB), got {list(image.shape)}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise FrameError(f"frame is empty ({h}x{w} pixels)")
    return int(h), int(w)


def to_model_input(image: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """Resize to image_size x image_size (bilinear, aspect ratio not kept — as SAM 2's video
    predictor does) and normalise.

    Args:
        image: [H, W, 3] uint8 RGB source frame.
        image_size: model input side S in pixels.

    Returns:
        [1, 3, S, S] float32 on ``device``.
    """
    resized = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    x = transfer.upload(resized, device).permute(2, 0, 1).float().div_(255.0)
    mean = transfer.constant(IMG_MEAN, torch.float32, device)[:, None, None]
    std = transfer.constant(IMG_STD, torch.float32, device)[:, None, None]
    return ((x - mean) / std).unsqueeze(0)

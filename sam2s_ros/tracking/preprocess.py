"""Frame checks and the SAM 2 input transform (source RGB image -> model input tensor)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


#: version of :func:`to_model_input`'s resampling; part of the training feature-cache key
#: (3: antialiased bilinear, on the CPU from uint8; 1 was OpenCV bilinear without antialiasing)
PREPROCESS_VERSION = 3


def to_model_input(image: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """Resize to image_size x image_size (bilinear, antialiased along the axes that shrink,
    aspect ratio not kept — as SAM 2's video predictor does with PIL) and normalise.

    Antialiasing matters: a 1280 px frame shrunk to 512 without it aliases thin instruments
    (on DAVIS drift-chicane, sam2s_mobile's J&F went 0.34 -> 0.72 with it, 2026-12-03). On the
    CPU the resize runs on uint8 (torch's vectorised uint8 path: 1.3 ms for 1280x1024 -> 512
    against 15 ms in float32, results within 1 grey level), elsewhere on float32.

    Args:
        image: [H, W, 3] uint8 RGB source frame.
        image_size: model input side S in pixels.

    Returns:
        [1, 3, S, S] float32 on ``device``.
    """
    x = transfer.upload(image, device).permute(2, 0, 1).unsqueeze(0)  # uint8, channels-last memory
    if tuple(image.shape[:2]) != (image_size, image_size):
        if x.device.type != "cpu":
            x = x.float()
        x = F.interpolate(x, (image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = transfer.constant(IMG_MEAN, torch.float32, device)[:, None, None] * 255.0
    std = transfer.constant(IMG_STD, torch.float32, device)[:, None, None] * 255.0
    return (x.float() - mean) / std

"""Build the SAM 2.1 network (the official ``sam2`` package's modules) for a model size.

The architecture is the official one (``sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``),
instantiated with hydra as ``sam2.modeling.sam2_base.SAM2Base`` plus the overrides the
official ``build_sam2_video_predictor`` applies (dynamic multimask via stability,
binarized masks from clicks for the memory encoder). ``image_size`` may differ from 1024
(e.g. 512 on CPU); positional encodings adapt to the feature grid.
"""

from __future__ import annotations

import torch

from sam2s_ros.errors import ConfigError
from sam2s_ros.tracking.config import MOBILE_MODEL, MODEL_SIZES, image_size_problem

#: model size -> official SAM 2.1 config name inside the sam2 package
SAM21_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

#: overrides of the official video predictor (sam2/build_sam.py, apply_postprocessing=True),
#: except fill_hole_area, which the tracker applies itself (it needs no CUDA extension).
VIDEO_PREDICTOR_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
)


def build_sam2_base(model_size: str, image_size: int, device: str = "cpu") -> torch.nn.Module:
    """Instantiate an untrained SAM 2.1 network in eval mode.

    Args:
        model_size: one of MODEL_SIZES ("tiny", "small", "base_plus", "large" or "sam2s_mobile",
            see sam2s_ros.model.mobile).
        image_size: square model input side in pixels (multiple of 32).
        device: torch device string.

    Returns:
        ``sam2.modeling.sam2_base.SAM2Base`` with random initial weights.

    Raises:
        ConfigError: unknown model size or bad image size.
        BackendError: the ``sam2`` package is not installed.
    """
    if model_size not in MODEL_SIZES:
        raise ConfigError(f"model_size must be one of {MODEL_SIZES}, got {model_size!r}")
    if image_size_problem(image_size):
        raise ConfigError(f"image_size {image_size_problem(image_size)}")
    if model_size == MOBILE_MODEL:
        from sam2s_ros.model.mobile import build_mobile_base

        return build_mobile_base(image_size).to(device).eval()
    try:
        import sam2  # noqa: F401  (initialises hydra's config module)
        from hydra import compose
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
    except ImportError as exc:  # pragma: no cover - depends on the installation
        from sam2s_ros.errors import BackendError

        raise BackendError(
            "the official 'sam2' package is required for the torch model: "
            "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0 "
            "(scripts/setup.sh does this)"
        ) from exc
    overrides = [*VIDEO_PREDICTOR_OVERRIDES, f"++model.image_size={image_size}"]
    cfg = compose(config_name=SAM21_CONFIGS[model_size], overrides=overrides)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    return model.to(device).eval()


def reinitialize_memory_attention_layers(model: torch.nn.Module, seed: int) -> None:
    """Give each memory-attention layer its own random weights.

    SAM 2 builds its 4 memory-attention layers as deep copies of one layer, so a freshly
    built random model has identical layers, and a test could not notice layers applied in
    the wrong order. Used for random-weight models only (tests, demos).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.memory_attention.layers:
            for p in layer.parameters():
                if p.dim() >= 2:
                    bound = 1.0 / max(1, p.shape[1]) ** 0.5
                    p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
                else:
                    p.add_(torch.empty_like(p).normal_(0.0, 0.02, generator=gen))


def build_random_model(model_size: str, image_size: int, seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """Random-weight SAM 2.1 network (deterministic for a seed) for tests and demos.

    Outputs of such a model are meaningless; callers must say "random weights".
    """
    torch.manual_seed(seed)
    model = build_sam2_base(model_size, image_size, device="cpu")
    reinitialize_memory_attention_layers(model, seed + 1)
    return model.to(device).eval()

"""Configuration of ``sam2s train``: one YAML file (config/train/*.yaml) plus ``key=value`` overrides.

The YAML mirrors these dataclasses; OmegaConf (already used through sam2/hydra) merges the
file and the overrides onto them, so an unknown key or a wrong type is an error, not a
silent default. Every key is documented here (the YAML files repeat the important ones).
Numbers marked [SAM 2.1] come from SAM 2.1's fine-tuning configuration
(``sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml``, ``training/loss_fns.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from sam2s_ros.errors import ConfigError
from sam2s_ros.tracking.config import DiveMemConfig

#: source kinds a data source may have
SOURCE_KINDS = ("davis", "bag")
#: TrainConfig.readout_keys choices
READOUT_KEY_CHOICES = ("pca", "keep")
#: modules that ``freeze`` may name (top-level SAM2Base children)
FREEZABLE = (
    "image_encoder",
    "sam_prompt_encoder",
    "sam_mask_decoder",
    "memory_attention",
    "memory_encoder",
    "obj_ptr_proj",
    "semantic_head",
)


@dataclass
class SourceConfig:
    """One data source.

    Attributes:
        kind: "davis" (``SEQ/frames/*.jpg|png`` + ``SEQ/masks/*.png`` with instance ids 1..N
            under ``path``) or "bag" (a rosbag2 written by ``sam2s make-bag`` with ground truth;
            ``path`` is one bag or a folder of bags).
        path: folder (relative paths are taken from the current directory).
        weight: relative sampling weight of this source when several are mixed.
        sequences: only these sequence names (empty = all).
        exclude: never these sequence names (e.g. the evaluation clips).
        licence: free text copied into the model card (e.g. "CC BY 4.0").
        class_map: optional YAML/JSON file {sequence: {instance_id: class name}} (TSL labels).
    """

    kind: str = "davis"
    path: str = ""
    weight: float = 1.0
    sequences: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    licence: str = ""
    class_map: Optional[str] = None


@dataclass
class DataConfig:
    """Sampling of training clips.

    Attributes:
        sources: data sources, mixed by weight.
        val_sequences: sequence names held out for validation (split by sequence).
        val_fraction: when ``val_sequences`` is empty, this fraction of sequences (rounded,
            by a seeded shuffle; 0 = no validation).
        clip_frames: frames per training clip [SAM 2.1: 8].
        max_objects: objects per clip at most [SAM 2.1: 3].
        hybrid_sampling: DiveMem's hybrid temporal sampling (SAM2S): a dense recent window
            plus frames sampled from far back in the sequence; off = consecutive frames
            with a random stride up to ``max_stride``.
        far_frames: frames drawn from far back (hybrid sampling) between the prompt frame and
            the recent window.
        max_stride: largest frame stride of the recent window.
        reverse_prob: probability of playing a clip backwards (VOS training habit).
        hflip_prob: probability of a horizontally flipped clip (flipped frames are encoded
            for real; their features are cached like the others).
        affine_prob: probability of a feature-space random affine (scale, translation) of
            the whole clip plus a small per-frame drift (synthetic camera motion); applied
            to the cached encoder features and the masks alike.
        affine_scale: (min, max) zoom of that affine.
        affine_translate: largest shift as a fraction of the image side.
        max_frames_per_sequence: use only the first N frames of each sequence (0 = all);
            used by the learning test.
    """

    sources: list[SourceConfig] = field(default_factory=list)
    val_sequences: list[str] = field(default_factory=list)
    val_fraction: float = 0.0
    clip_frames: int = 8
    max_objects: int = 3
    hybrid_sampling: bool = True
    far_frames: int = 2
    max_stride: int = 2
    reverse_prob: float = 0.3
    hflip_prob: float = 0.5
    affine_prob: float = 0.5
    affine_scale: tuple[float, float] = (0.85, 1.2)
    affine_translate: float = 0.1
    max_frames_per_sequence: int = 0


@dataclass
class PromptConfig:
    """Prompts of a training clip [SAM 2.1 values].

    Attributes:
        prob_points: probability that the first frame is prompted with points rather than
            the true mask [0.5]; of those, ``prob_box`` use a box instead of clicks [0.5].
        prob_box: see above.
        num_init_clicks: clicks of a click prompt [1].
        correct_frames: frames receiving corrective clicks, the first frame included [SAM 2.1
            draws 1-2; we use this fixed count to keep steps comparable].
        clicks_per_correction: corrective clicks per corrected frame [7; fewer is cheaper].
        prob_click_from_gt: probability a corrective click comes from the ground truth rather
            than the error region [0.1].
    """

    prob_points: float = 0.5
    prob_box: float = 0.5
    num_init_clicks: int = 1
    correct_frames: int = 1
    clicks_per_correction: int = 2
    prob_click_from_gt: float = 0.1


@dataclass
class LossConfig:
    """Loss weights and the SAM2S additions.

    Attributes:
        mask: sigmoid focal loss weight [20]; focal_alpha [0.25], focal_gamma [2].
        dice: dice weight [1]. iou: IoU-prediction L1 weight [1]. object_score: BCE weight [1].
        arl_sigma_px: ARL (ambiguity-resilient learning) Gaussian label softening: the focal
            term's target is the ground truth blurred with this sigma in model-input pixels
            (0 = hard targets, SAM 2). The SAM2S paper names Gaussian softening of boundary
            labels but not sigma; 2 px at 512² is our choice.
        semantic: TSL class-loss weight (cross-entropy of the semantic head, averaged over the
            clip's frames where the object is visible); 0 or no class labels = off.
    """

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    arl_sigma_px: float = 2.0
    semantic: float = 1.0


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule and linear warm-up.

    Attributes:
        lr: peak learning rate of modules trained from scratch (memory, pointers, scores).
        lr_pretrained: peak learning rate of modules initialised from a checkpoint (prompt
            encoder, mask decoder, image encoder when not frozen) [SAM 2.1: 5e-6 / 3e-6 for
            fine-tuning already trained SAM 2 weights].
        lr_min_ratio: final lr = peak * this [SAM 2.1: 0.1].
        warmup_steps: linear warm-up.
        weight_decay: [SAM 2.1: 0.1]; 0 for biases and norms.
        grad_clip: max gradient norm [SAM 2.1: 0.1].
        grad_accum: micro-batches per optimiser step.
    """

    lr: float = 3e-4
    lr_pretrained: float = 3e-5
    lr_min_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1


@dataclass
class MemoryConfig(DiveMemConfig):
    """DiveMem bank used while unrolling a training clip: the inference DiveMemConfig (every
    key documented there) with training defaults. Short clips need a small candidate pool and
    a low IoU bar for long-term memory to be used at all; memory is kept in float32 so
    gradients flow through it (``validate`` refuses another dtype).
    """

    long_term_frames: int = 2
    candidate_pool_size: int = 2
    iou_threshold: float = 0.5
    memory_dtype: str = "float32"

    def validate(self) -> None:
        super().validate()
        if self.memory_dtype != "float32":
            raise ConfigError("memory.memory_dtype must be float32 in training (gradients flow through memory)")


@dataclass
class TrainConfig:
    """Everything ``sam2s train`` needs.

    Attributes:
        model_size: TrackerConfig model family ("sam2s_mobile", "tiny", ...).
        image_size: square model input side in pixels.
        init: where weights start: "mobilesam:<path>" (MobileSAM file mapped onto
            sam2s_mobile), "checkpoint:<path>" (a SAM 2.1 / SAM2S / sam2s_mobile checkpoint in
            the node's format) or "random" (seeded).
        freeze: module names frozen (see FREEZABLE); a frozen image encoder enables the cache.
        feature_cache: folder of the frozen-encoder feature cache ("" = no cache).
        out_dir: run folder (checkpoints, logs, the exported model and its card).
        steps: optimiser steps. batch_size: clips per micro-batch per process.
        seed: global seed; each step's sampling is seeded by (seed, rank, step), so a resumed
            run draws the same clips as an uninterrupted one.
        device: "cpu" or "cuda[:N]" (with torchrun, each rank takes cuda:LOCAL_RANK).
        amp: "none" or "bfloat16" (autocast on CUDA only).
        num_threads: torch CPU threads (0 = leave torch's default).
        log_every / ckpt_every / val_every: steps between progress lines, resumable
            checkpoints and validation runs (0 = never; validation also runs at the end).
        val_frames: frames per validation sequence (0 = all).
        class_vocabulary: class names for TSL (id = index + 1); empty = no semantic head.
        class_embeddings: optional .pt/.safetensors file with a [C, D] tensor
            "class_embeddings" (e.g. CLIP text embeddings computed elsewhere); none = learned.
        semantic_dim: D of learned class embeddings.
        readout_keys: readout models (sam2s_ros.model.readout) only: "pca" fits the memory's key
            projection by PCA on the training frames' features before the first step; "keep"
            leaves the initial one.
        data, prompts, loss, optim, memory: see their classes.
    """

    model_size: str = "sam2s_mobile"
    image_size: int = 512
    init: str = "random"
    freeze: list[str] = field(default_factory=lambda: ["image_encoder"])
    feature_cache: str = ""
    out_dir: str = "runs/train"
    steps: int = 1000
    batch_size: int = 2
    seed: int = 123
    device: str = "cpu"
    amp: str = "none"
    num_threads: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    val_every: int = 0
    val_frames: int = 0
    class_vocabulary: list[str] = field(default_factory=list)
    class_embeddings: Optional[str] = None
    semantic_dim: int = 256
    readout_keys: str = "pca"
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid value."""
        from sam2s_ros.tracking.config import MODEL_SIZES

        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if self.image_size < 128 or self.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32 and >= 128, got {self.image_size}")
        if not (self.init == "random" or self.init.startswith(("mobilesam:", "checkpoint:"))):
            raise ConfigError(f"init must be 'random', 'mobilesam:<path>' or 'checkpoint:<path>', got {self.init!r}")
        bad = sorted(set(self.freeze) - set(FREEZABLE))
        if bad:
            raise ConfigError(f"freeze names unknown modules {bad}; choose from {FREEZABLE}")
        if self.readout_keys not in READOUT_KEY_CHOICES:
            raise ConfigError(f"readout_keys must be one of {READOUT_KEY_CHOICES}, got {self.readout_keys!r}")
        if self.steps < 0 or self.batch_size < 1 or self.optim.grad_accum < 1:
            raise ConfigError("steps must be >= 0, batch_size and optim.grad_accum >= 1")
        if self.amp not in ("none", "bfloat16"):
            raise ConfigError(f"amp must be 'none' or 'bfloat16', got {self.amp!r}")
        if self.data.clip_frames < 2:
            raise ConfigError("data.clip_frames must be >= 2")
        if self.data.hybrid_sampling and self.data.far_frames > self.data.clip_frames - 2:
            raise ConfigError("data.far_frames must leave room for the prompt frame and one recent frame")
        if not self.data.sources:
            raise ConfigError("data.sources is empty: name at least one DAVIS folder or bag")
        for s in self.data.sources:
            if s.kind not in SOURCE_KINDS:
                raise ConfigError(f"data source kind must be one of {SOURCE_KINDS}, got {s.kind!r}")
            if not s.path:
                raise ConfigError("every data source needs a path")
            if s.weight <= 0:
                raise ConfigError(f"data source weight must be > 0, got {s.weight} for {s.path!r}")
        self.memory.validate()
        if self.loss.arl_sigma_px < 0:
            raise ConfigError("loss.arl_sigma_px must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_train_config(path: Optional[str], overrides: list[str] = ()) -> TrainConfig:
    """Read a training YAML and apply ``key=value`` overrides (OmegaConf dot-list syntax).

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or invalid value.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        schema = OmegaConf.structured(TrainConfig)
        parts = [schema]
        if path:
            parts.append(OmegaConf.load(path))
        if overrides:
            parts.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*parts)
        cfg = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise ConfigError(f"training config {path or '(defaults)'}: {exc}") from exc
    cfg.validate()
    return cfg

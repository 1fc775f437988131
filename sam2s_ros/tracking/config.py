"""Configuration of the tracking engine: model, memory (DiveMem) limits and thresholds.

Every limit and threshold carries the SAM 2.1 value it corresponds to (from the official
``sam2/configs/sam2.1/sam2.1_hiera_*.yaml`` and ``SAM2Base`` defaults) and, for DiveMem,
the value from the SAM2S / ReSurgSAM2 papers.
The ROS node fills these from its parameters (config/sam2s.yaml); this module is the only
place that defines the defaults and validates them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Optional

from sam2s_ros.errors import ConfigError

#: SAM 2.1 Hiera sizes (official checkpoints) and the MobileSAM-based family trained here
#: (sam2s_ros.model.mobile); the node's ``model_size`` parameter takes any of them.
SAM21_SIZES = ("tiny", "small", "base_plus", "large")
MOBILE_MODEL = "sam2s_mobile"
MODEL_SIZES = (*SAM21_SIZES, MOBILE_MODEL)
MEMORY_ATTENTION_BATCHING = ("auto", "batched", "per_instrument")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
#: reduced precision (TrackerConfig.autocast_dtype): bfloat16 = torch autocast (CPU, CUDA);
#: float16 = torch autocast / fp16 graphs / fp16 engines (CUDA); int8 = the int8 graphs of
#: ``sam2s export --int8`` (onnxruntime on CPU)
AUTOCAST_DTYPES = ("none", "bfloat16", "float16", "int8")
#: onnxruntime CUDA EP settings (backend onnxruntime on cuda)
ORT_ARENA_EXTEND_STRATEGIES = ("kSameAsRequested", "kNextPowerOfTwo")
ORT_CUDNN_CONV_ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")
#: valid image sizes: multiples of IMAGE_SIZE_STEP (the image encoder's stride) from IMAGE_SIZE_MIN on
IMAGE_SIZE_MIN, IMAGE_SIZE_STEP = 128, 32


def image_size_problem(image_size: int) -> Optional[str]:
    """None for a valid model input size, else why it is not (for an error message)."""
    if image_size < IMAGE_SIZE_MIN or image_size % IMAGE_SIZE_STEP != 0:
        return f"must be a multiple of {IMAGE_SIZE_STEP} and >= {IMAGE_SIZE_MIN}, got {image_size}"
    return None


def model_name(model_size: str) -> str:
    """Human-readable model name: ``sam2.1_hiera_tiny`` ... or ``sam2s_mobile``."""
    return model_size if model_size == MOBILE_MODEL else f"sam2.1_hiera_{model_size}"


# EndoVis 2017 robotic instrument types (Allan et al., arXiv:1902.06426), ids 1..7.
ENDOVIS17_CLASSES = (
    "bipolar_forceps",
    "prograsp_forceps",
    "large_needle_driver",
    "vessel_sealer",
    "grasping_retractor",
    "monopolar_curved_scissors",
    "other",
)


@dataclass
class DiveMemConfig:
    """Per-instrument memory bank limits (SAM 2.1 value in brackets).

    Attributes:
        num_maskmem: memory frames incl. the current one [7]: the short-term window holds
            num_maskmem - 1 recent frames.
        max_cond_frames: conditioning (prompted) frames kept [-1 = unlimited in SAM 2.1;
            we cap it so memory stays bounded]; the first prompt frame and the most recent
            ones are kept.
        max_obj_ptrs: object pointers attended to [16].
        long_term_enabled: DiveMem long-term memory on/off [off = SAM 2.1 behaviour].
        long_term_frames: K diverse long-term frames [SAM2S/ReSurgSAM2: 3].
        candidate_pool_size: high-confidence candidates considered [ReSurgSAM2: 5].
        iou_threshold: minimum predicted IoU for a candidate [ReSurgSAM2: 0.95 on trained
            weights; our default 0.8 for generality].
        object_score_threshold: minimum object-score logit for a candidate [0.0 = visible].
        memory_dtype: storage dtype of spatial memories ["bfloat16", as the official video
            predictor stores them].
    """

    num_maskmem: int = 7
    max_cond_frames: int = 4
    max_obj_ptrs: int = 16
    long_term_enabled: bool = True
    long_term_frames: int = 3
    candidate_pool_size: int = 5
    iou_threshold: float = 0.8
    object_score_threshold: float = 0.0
    memory_dtype: str = "bfloat16"

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work."""
        if not 2 <= self.num_maskmem <= 7:
            raise ConfigError(
                f"num_maskmem must be 2..7 (the checkpoint has 7 temporal encodings), got {self.num_maskmem}"
            )
        if self.max_cond_frames < 1:
            raise ConfigError(f"max_cond_frames must be >= 1, got {self.max_cond_frames}")
        if self.max_obj_ptrs < 1:
            raise ConfigError(f"max_obj_ptrs must be >= 1, got {self.max_obj_ptrs}")
        if self.long_term_frames < 0 or self.candidate_pool_size < 1:
            raise ConfigError("long_term_frames must be >= 0 and candidate_pool_size >= 1")
        if self.memory_dtype not in ("bfloat16", "float16", "float32"):
            raise ConfigError(f"memory_dtype must be bfloat16, float16 or float32, got {self.memory_dtype!r}")


@dataclass
class TrackerConfig:
    """Everything needed to build an :class:`~sam2s_ros.tracking.tracker.InstrumentTracker`.

    Attributes:
        model_size: one of MODEL_SIZES (SAM 2.1 hiera tiny / small / base+ / large, or
            sam2s_mobile: MobileSAM's encoder with SAM 2's memory, sam2s_ros.model.mobile).
        image_size: model input side in pixels [1024]; a multiple of 32 (e.g. 512 on CPU).
        checkpoint: path of a SAM 2.1 / SAM2S checkpoint (.pt/.pth torch file holding
            {"model": state_dict}, or .safetensors); None means none.
        allow_random_weights: with no checkpoint, build random weights (tests, demos)
            instead of raising CheckpointError. Outputs are then meaningless.
        seed: torch seed for random weights.
        backend: "torch", "onnxruntime" or "tensorrt".
        device: "cpu" or "cuda[:N]".
        autocast_dtype: reduced precision, one of AUTOCAST_DTYPES: "none" (fp32),
            "bfloat16" (torch backend, CPU or CUDA), "float16" (CUDA: torch autocast, fp16
            graphs / engines) or "int8" (onnxruntime backend on CPU: int8 graphs).
        onnx_dir: folder with exported ONNX graphs / engines for non-torch backends.
        max_instruments: most instruments tracked at once.
        mask_threshold: logit threshold for binary masks [0.0].
        fill_hole_area: fill holes up to this many pixels in low-res masks [8 in the
            official video predictor; needs no CUDA here].
        class_vocabulary: class names, id = index + 1.
        class_smoothing_frames: frames averaged for model class scores.
        memory_attention_batching: how instruments with memory go through memory attention:
            "batched" (default) = one call with batch = instruments, memories padded to a
            common size (padded keys masked); "per_instrument" = one call per instrument on
            its own unpadded memory (same masks to float tolerance); "auto" = batched on
            CUDA, per instrument on CPU. On a CPU the batched call can be slower, because
            glibc malloc mmaps and page-faults its larger temporaries on every call with
            its default settings; sam2s_node and sam2s tune malloc at start
            (sam2s_ros.allocator), which removes the gap (measurements: docs/backends.md).
        return_mask_logits: keep the logits in every InstrumentResult (``mask_logits``,
            computed on access from the decoder's [h, w] logits, which are copied to the host:
            64 KB per instrument at 512²). The masks are then upsampled on the host inside
            each mask's window only (sam2s_ros.tracking.upsample: 1280x1024 with masks of a few
            % of the frame, ~0.2 ms against ~5 ms for full frames). False: masks and overlap
            owners are computed for the whole frame on the device and copied (B x H x W bool +
            H x W uint8). None = True on the CPU, False on a GPU (where full frames cost little).
        ort_arena_extend_strategy: onnxruntime CUDA EP arena growth ["kSameAsRequested";
            onnxruntime's default kNextPowerOfTwo doubles it beside torch's allocator].
        ort_gpu_mem_limit_mb: onnxruntime CUDA EP arena limit in MiB, 0 = none.
        ort_cudnn_conv_algo_search: onnxruntime CUDA EP cuDNN search ["HEURISTIC";
            EXHAUSTIVE re-benchmarks every new input shape, e.g. each new instrument count].
        divemem: memory limits, see DiveMemConfig.
    """

    model_size: str = "tiny"
    image_size: int = 1024
    checkpoint: Optional[str] = None
    allow_random_weights: bool = False
    seed: int = 0
    backend: str = "torch"
    device: str = "cpu"
    autocast_dtype: str = "none"
    onnx_dir: Optional[str] = None
    max_instruments: int = 8
    mask_threshold: float = 0.0
    fill_hole_area: int = 0
    class_vocabulary: tuple[str, ...] = ENDOVIS17_CLASSES
    class_smoothing_frames: int = 10
    memory_attention_batching: str = "batched"
    return_mask_logits: Optional[bool] = None
    ort_arena_extend_strategy: str = "kSameAsRequested"
    ort_gpu_mem_limit_mb: int = 0
    ort_cudnn_conv_algo_search: str = "HEURISTIC"
    divemem: DiveMemConfig = field(default_factory=DiveMemConfig)

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid value."""
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if image_size_problem(self.image_size):
            raise ConfigError(f"image_size {image_size_problem(self.image_size)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}, got {self.backend!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ConfigError(
                f"autocast_dtype must be {', '.join(AUTOCAST_DTYPES[:-1])} or {AUTOCAST_DTYPES[-1]}, "
                f"got {self.autocast_dtype!r}"
            )
        if not 1 <= self.max_instruments <= 64:
            raise ConfigError(f"max_instruments must be 1..64, got {self.max_instruments}")
        if self.fill_hole_area < 0:
            raise ConfigError("fill_hole_area must be >= 0")
        if self.class_smoothing_frames < 1:
            raise ConfigError("class_smoothing_frames must be >= 1")
        if self.memory_attention_batching not in MEMORY_ATTENTION_BATCHING:
            raise ConfigError(
                f"memory_attention_batching must be one of {MEMORY_ATTENTION_BATCHING}, "
                f"got {self.memory_attention_batching!r}"
            )
        if self.return_mask_logits not in (None, True, False):
            raise ConfigError(f"return_mask_logits must be true, false or none (auto), got {self.return_mask_logits!r}")
        if self.ort_arena_extend_strategy not in ORT_ARENA_EXTEND_STRATEGIES:
            raise ConfigError(f"ort_arena_extend_strategy must be one of {ORT_ARENA_EXTEND_STRATEGIES}")
        if self.ort_cudnn_conv_algo_search not in ORT_CUDNN_CONV_ALGO_SEARCH:
            raise ConfigError(f"ort_cudnn_conv_algo_search must be one of {ORT_CUDNN_CONV_ALGO_SEARCH}")
        if self.ort_gpu_mem_limit_mb < 0:
            raise ConfigError("ort_gpu_mem_limit_mb must be >= 0 (0 = no limit)")
        if len(set(self.class_vocabulary)) != len(self.class_vocabulary):
            raise ConfigError("class_vocabulary has duplicate names")
        self.divemem.validate()

    def update(self, values: dict) -> None:
        """Change settings in place (keys as in :meth:`from_dict`), all or none.

        In place, because the tracker and every instrument's memory bank hold this object
        (and its ``divemem``): the next frame sees the new values. The caller makes sure no
        frame is being tracked meanwhile (the node holds its tracker lock).

        Raises:
            ConfigError: an unknown key or an invalid value; nothing is changed then.
        """
        trial = copy.deepcopy(self)
        trial._assign(values)
        trial.validate()
        self._assign(values)

    def _assign(self, values: dict) -> None:
        top = {f.name for f in fields(self)} - {"divemem"}
        mem = {f.name for f in fields(DiveMemConfig)}
        for key, value in values.items():
            name = key.split(".", 1)[1] if key.startswith("divemem.") else None
            if name is not None and name in mem:
                setattr(self.divemem, name, value)
            elif name is None and key in top:
                setattr(self, key, tuple(value) if key == "class_vocabulary" else value)
            else:
                raise ConfigError(f"unknown tracker setting {key!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrackerConfig":
        """Build from a flat dict; DiveMem keys may be given as 'divemem.<name>'.

        Raises ConfigError on unknown keys or invalid values.
        """
        top = {f.name for f in fields(cls)} - {"divemem"}
        mem = {f.name for f in fields(DiveMemConfig)}
        kw, dm = {}, {}
        for key, value in values.items():
            if key.startswith("divemem."):
                name = key.split(".", 1)[1]
                if name not in mem:
                    raise ConfigError(f"unknown DiveMem setting {key!r}")
                dm[name] = value
            elif key in top:
                kw[key] = value
            else:
                raise ConfigError(f"unknown tracker setting {key!r}")
        if "class_vocabulary" in kw:
            kw["class_vocabulary"] = tuple(kw["class_vocabulary"])
        cfg = cls(**kw, divemem=DiveMemConfig(**dm))
        cfg.validate()
        return cfg

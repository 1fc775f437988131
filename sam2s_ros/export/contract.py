"""The exported graphs' contract: stage names, tensor names, shapes, dtypes, metadata.

This module is the single source of the I/O names that the exporter
(:mod:`sam2s_ros.export.onnx_export`), the TensorRT engine builder
(:mod:`sam2s_ros.export.tensorrt_build`) and the onnxruntime / TensorRT backends share.
It imports neither torch nor onnx.

Graphs (one ONNX file per entry of :data:`GRAPHS`, ``<stage>.onnx``; fp16 variants
``<stage>.fp16.onnx``; int8 variants ``<stage>.int8.onnx`` of the stages in
:data:`INT8_STAGES`, the others run their fp32 graph in an int8 set) plus ``constants.npz``
(``no_mem_embed`` [256] and ``maskmem_pos`` [1, 64, h, w] float32: the NoMemoryStage addend
and the memory positional encoding, both constant for a fixed image size) and
``manifest.json`` (the metadata below, file names).

Why six graphs and not four: the prompt decoder exists twice (``mask_decoder_multi``,
``mask_decoder_single``) because SAM 2.1 picks the output mask differently (best of three
by predicted IoU vs. one mask with the stability fallback) after one transformer pass; a
runtime switch would have to run both selections or re-implement SAM 2's head logic in the
export wrapper. Both take the previous-logits mask input with a per-instrument
``has_mask`` flag instead of doubling again. ``mask_prompt`` (a mask used as the output,
SAM 2.1 ``_use_mask_as_output``) is a different computation (mask downsampler + decoder
for the object pointer only) and needs its own graph.
The graphs take batch-1 image features and broadcast them to the B instruments inside.

Shapes use symbols: ``S`` image_size, ``S/4``, ``S/8``, ``S/16`` (= h = w) and the dynamic
axes of :data:`DYNAMIC_DIMS`. Every float tensor is float32 at the graph boundary, also in
the fp16 graphs (their insides are float16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

#: version of this I/O contract; stored in every graph, checked by the backends
GRAPH_FORMAT = "1"

#: where ``sam2s export`` writes and the graph backends look by default (relative to the working directory)
DEFAULT_ONNX_DIR = "models/onnx"

#: ONNX opsets the TorchScript exporter of torch 2.13 writes and the backends accept, and the default
MIN_OPSET, MAX_OPSET = 17, 20
DEFAULT_OPSET = 17

#: most clicks in one prompt (tracker.check_prompt refuses more); a box adds BOX_POINTS
MAX_PROMPT_CLICKS = 64
#: a box prompt enters the decoder as two points (corners, labels 2 and 3)
BOX_POINTS = 2
#: longest point sequence of one prompt: the decoder profile's "points" maximum
MAX_PROMPT_POINTS = MAX_PROMPT_CLICKS + BOX_POINTS
#: typical sizes TensorRT tunes its kernels for (the profiles' "opt"), capped at the maxima
OPT_DIMS = {"instruments": 3, "points": 2, "mem_frames": 7, "obj_ptrs": 16}


def profile_dims(
    max_instruments: int = 8,
    num_maskmem: int = 7,
    max_cond_frames: int = 4,
    max_obj_ptrs: int = 16,
    long_term_enabled: bool = True,
    long_term_frames: int = 3,
    max_points: int = MAX_PROMPT_POINTS,
) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per dynamic axis for the largest inputs a tracker configuration produces.

    The maxima are exactly what ``InstrumentTracker`` can feed (no more, so that TensorRT
    reserves no memory for shapes that never occur):
    instruments = max_instruments; points = clicks + box corners of one prompt;
    mem_frames = conditioning (max_cond_frames) + long-term (long_term_frames, DiveMem on)
    + short-term window (num_maskmem - 1); obj_ptrs = conditioning + long-term pointers +
    max_obj_ptrs - 1 recent ones (sam2s_ros.tracking.memory_bank.InstrumentMemory.gather).
    The defaults are TrackerConfig's.
    """
    long_term = long_term_frames if long_term_enabled else 0
    hi = {
        "instruments": max_instruments,
        "points": max_points,
        "mem_frames": max_cond_frames + long_term + num_maskmem - 1,
        "obj_ptrs": max(max_cond_frames + long_term + max_obj_ptrs - 1, 1),
    }
    return {k: (1, min(OPT_DIMS[k], v), v) for k, v in hi.items()}


def profile_dims_for(cfg) -> dict[str, tuple[int, int, int]]:
    """:func:`profile_dims` of a TrackerConfig (duck-typed: this module imports no tracker code)."""
    m = cfg.divemem
    return profile_dims(
        cfg.max_instruments, m.num_maskmem, m.max_cond_frames, m.max_obj_ptrs, m.long_term_enabled, m.long_term_frames
    )


def profile_problems(have: Mapping[str, Sequence[int]], need: Mapping[str, Sequence[int]]) -> list[str]:
    """Axes whose maximum in ``have`` (graphs / engines) is below the maximum in ``need`` (config)."""
    problems = []
    for name, (_, _, hi) in sorted(need.items()):
        got = have.get(name)
        if got is None or int(got[2]) < int(hi):
            problems.append(f"{name} max {got[2] if got is not None else '?'} < {hi}")
    return problems


#: dynamic axis name -> (min, opt, max) used for TensorRT optimization profiles when no
#: configuration is given: those of the default TrackerConfig
DYNAMIC_DIMS: dict[str, tuple[int, int, int]] = profile_dims()

#: metadata_props keys written into every graph (and manifest.json)
META_KEYS = (
    "stage",
    "model",
    "model_size",
    "image_size",
    "opset",
    "precision",
    "checkpoint_sha256",
    "weights",
    "sam2s_ros_version",
    "graph_format",
)

CONSTANTS_FILE = "constants.npz"
MANIFEST_FILE = "manifest.json"
TENSORRT_SUBDIR = "tensorrt"  # native engines: <onnx_dir>/tensorrt/<stage>.engine (+ .json)
TRT_CACHE_SUBDIR = "trt_cache"  # onnxruntime TensorRT EP engine + timing cache

Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: tensor name in the ONNX graph and TensorRT engine.
        shape: ints and symbols ("S", "S/4", "S/8", "S/16" or a DYNAMIC_DIMS name).
        dtype: numpy dtype name: "float32", "int32", "int64" or "bool".
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def dynamic_axes(self) -> dict[int, str]:
        """{axis: name} of the dynamic axes (for torch.onnx.export)."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str) and d in DYNAMIC_DIMS}

    def resolve(self, image_size: int, dims: Mapping[str, int]) -> tuple[int, ...]:
        """Concrete shape for an image size and values of the dynamic axes."""
        return tuple(_resolve_dim(d, image_size, dims) for d in self.shape)


def _resolve_dim(d: Dim, image_size: int, dims: Mapping[str, int]) -> int:
    if isinstance(d, int):
        return d
    if d in dims:
        return int(dims[d])
    fixed = {"S": image_size, "S/4": image_size // 4, "S/8": image_size // 8, "S/16": image_size // 16}
    if d not in fixed:
        raise KeyError(f"no value for dimension {d!r}")
    return fixed[d]


@dataclass(frozen=True)
class GraphSpec:
    """One exported stage graph."""

    stage: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def filename(self, precision: str = "fp32") -> str:
        """``<stage>.onnx`` (fp32), ``<stage>.fp16.onnx`` or ``<stage>.int8.onnx``."""
        return f"{self.stage}.onnx" if precision == "fp32" else f"{self.stage}.{precision}.onnx"

    def engine_filename(self) -> str:
        """``<stage>.engine`` (inside TENSORRT_SUBDIR)."""
        return f"{self.stage}.engine"

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx.export ``dynamic_axes`` for every tensor with a dynamic axis."""
        return {t.name: t.dynamic_axes() for t in (*self.inputs, *self.outputs) if t.dynamic_axes()}

    def profile_shapes(
        self, image_size: int, dims: Optional[Mapping[str, tuple[int, int, int]]] = None
    ) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Per dynamic input: (min, opt, max) shapes (TensorRT optimization profile).

        Args:
            image_size: S.
            dims: (min, opt, max) per dynamic axis; DYNAMIC_DIMS for those not given.
        """
        ranges = {**DYNAMIC_DIMS, **(dims or {})}
        out = {}
        for t in self.inputs:
            if t.dynamic_axes():
                out[t.name] = tuple(t.resolve(image_size, {k: v[i] for k, v in ranges.items()}) for i in range(3))
        return out


def bind_dims(spec: GraphSpec, shapes: Mapping[str, tuple[int, ...]], image_size: int) -> dict[str, int]:
    """Values of the dynamic axes of ``spec`` from concrete input shapes; checks fixed axes.

    Args:
        spec: the graph.
        shapes: {input name: shape} of every input.
        image_size: S.

    Raises:
        ValueError: a missing input, a wrong rank or fixed size, or one dynamic axis with two values.
    """
    dims: dict[str, int] = {}
    for t in spec.inputs:
        if t.name not in shapes:
            raise ValueError(f"{spec.stage}: input {t.name!r} missing")
        shape = tuple(int(x) for x in shapes[t.name])
        if len(shape) != len(t.shape):
            raise ValueError(f"{spec.stage}: input {t.name} must have rank {len(t.shape)} {t.shape}, got {shape}")
        for d, n in zip(t.shape, shape):
            if isinstance(d, str) and d in DYNAMIC_DIMS:
                if dims.setdefault(d, n) != n:
                    raise ValueError(f"{spec.stage}: axis {d!r} is {dims[d]} in one input and {n} in {t.name}")
            elif _resolve_dim(d, image_size, {}) != n:
                raise ValueError(
                    f"{spec.stage}: input {t.name} must have shape {t.shape} with S = {image_size}, got {shape}"
                )
    return dims


def dims_from_profile(
    spec: GraphSpec, shapes: Mapping[str, Sequence[Sequence[int]]], image_size: int
) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per dynamic axis from an engine's profile shapes {input: (min, opt, max) shape}.

    Where inputs disagree on one axis, the narrowest range (what every input accepts) counts.
    """
    dims: dict[str, tuple[int, int, int]] = {}
    for t in spec.inputs:
        if t.name not in shapes:
            continue
        for axis, name in t.dynamic_axes().items():
            lo, opt, hi = (int(shapes[t.name][i][axis]) for i in range(3))
            if name in dims:
                lo, hi = max(lo, dims[name][0]), min(hi, dims[name][2])
            dims[name] = (lo, opt, hi)
    return dims


_B, _P, _F, _Q = "instruments", "points", "mem_frames", "obj_ptrs"
_F32 = "float32"


def _t(name: str, *shape: Dim, dtype: str = _F32) -> TensorSpec:
    return TensorSpec(name, tuple(shape), dtype)


_FEAT_S0 = _t("feat_s0", 1, 32, "S/4", "S/4")
_FEAT_S1 = _t("feat_s1", 1, 64, "S/8", "S/8")
_FEAT_S2 = _t("feat_s2", 1, 256, "S/16", "S/16")
_POS_S2 = _t("pos_s2", 1, 256, "S/16", "S/16")
_DECODER_OUT = (
    _t("low_res_masks", _B, 1, "S/4", "S/4"),
    _t("ious", _B),
    _t("obj_ptrs", _B, 256),
    _t("object_score_logits", _B),
)
_DECODER_IN = (
    _t("pix_feat", _B, 256, "S/16", "S/16"),
    _FEAT_S0,
    _FEAT_S1,
    _t("point_coords", _B, _P, 2),
    _t("point_labels", _B, _P, dtype="int32"),
    _t("mask_input", _B, 1, "S/4", "S/4"),
    _t("has_mask", _B, dtype="bool"),
)

IMAGE_ENCODER = GraphSpec("image_encoder", (_t("image", 1, 3, "S", "S"),), (_FEAT_S0, _FEAT_S1, _FEAT_S2, _POS_S2))
MASK_DECODER_MULTI = GraphSpec("mask_decoder_multi", _DECODER_IN, _DECODER_OUT)
MASK_DECODER_SINGLE = GraphSpec("mask_decoder_single", _DECODER_IN, _DECODER_OUT)
# the object pointer of a mask prompt does not depend on the high-res features (they only
# refine the decoder's masks, which a mask prompt replaces), so they are no inputs
MASK_PROMPT = GraphSpec("mask_prompt", (_FEAT_S2, _t("mask", _B, 1, "S", "S")), _DECODER_OUT)
MEMORY_ATTENTION = GraphSpec(
    "memory_attention",
    (
        _FEAT_S2,
        _POS_S2,
        _t("mem_feats", _B, _F, 64, "S/16", "S/16"),
        _t("mem_tpos_index", _B, _F, dtype="int64"),
        _t("mem_valid", _B, _F, dtype="bool"),
        _t("obj_ptrs", _B, _Q, 256),
        _t("obj_ptr_pos", _B, _Q),
        _t("ptr_valid", _B, _Q, dtype="bool"),
    ),
    (_t("pix_feat_with_mem", _B, 256, "S/16", "S/16"),),
)
# readout models (sam2s_mobile, sam2s_ros.model.readout): the readout needs only the image
# features and the spatial memories (the exporter drops unused inputs); outputs the decoder
# prompt of the tracked frame besides the features, which pass through unchanged
MEMORY_READOUT = GraphSpec(
    "memory_attention",
    tuple(t for t in MEMORY_ATTENTION.inputs if t.name in ("feat_s2", "mem_feats", "mem_valid")),
    (
        _t("pix_feat_with_mem", _B, 256, "S/16", "S/16"),
        _t("point_coords", _B, 3, 2),  # click, box top-left, box bottom-right (MemoryReadout.prompt)
        _t("point_labels", _B, 3, dtype="int32"),
        _t("mask_input", _B, 1, "S/4", "S/4"),
        _t("present", _B, dtype="bool"),
    ),
)
MEMORY_ENCODER = GraphSpec(
    "memory_encoder",
    (_FEAT_S2, _t("mask_for_mem", _B, 1, "S", "S"), _t("object_score_logits", _B)),
    (_t("maskmem_features", _B, 64, "S/16", "S/16"),),
)

#: every exported graph, by stage name
GRAPHS: dict[str, GraphSpec] = {
    g.stage: g
    for g in (IMAGE_ENCODER, MASK_DECODER_MULTI, MASK_DECODER_SINGLE, MASK_PROMPT, MEMORY_ATTENTION, MEMORY_ENCODER)
}

#: the graphs of readout models: GRAPHS with MEMORY_READOUT as the memory attention
READOUT_GRAPHS: dict[str, GraphSpec] = {**GRAPHS, MEMORY_READOUT.stage: MEMORY_READOUT}


def graphs_for(model_size: str) -> dict[str, GraphSpec]:
    """The graph contract of a model family: READOUT_GRAPHS for ``sam2s_mobile``, else GRAPHS."""
    from sam2s_ros.tracking.config import MOBILE_MODEL

    return READOUT_GRAPHS if model_size == MOBILE_MODEL else GRAPHS


#: graph precisions: float32, float16 (CUDA; fp32 I/O) and int8 (CPU: dynamic quantization,
#: int8 weights of MatMul/Gemm, activations quantized per call; fp32 I/O)
PRECISIONS = ("fp32", "fp16", "int8")
#: stages that get an int8 graph: every stage, chosen by measurement (benchmarks/README.md,
#: issue #17): on the 2-core AMD EPYC (AVX-512 VNNI) each ran 1.5-2.8x faster than fp32 with
#: weight-only dynamic quantization, Conv quantization (ConvInteger) was slower. A new stage
#: joins by being measured: then list the int8 ones here instead of all.
INT8_STAGES = tuple(GRAPHS)


def stage_precision(stage: str, precision: str) -> str:
    """Precision of the graph file a ``precision`` set runs for ``stage`` (int8 sets keep
    fp32 graphs for stages outside :data:`INT8_STAGES`)."""
    return "fp32" if precision == "int8" and stage not in INT8_STAGES else precision


def model_name(model_size: str) -> str:
    """Name stored in the graphs' metadata, e.g. ``sam2.1_hiera_tiny`` (tracking.config.model_name)."""
    from sam2s_ros.tracking.config import model_name as _name

    return _name(model_size)


__all__ = [
    "CONSTANTS_FILE",
    "DYNAMIC_DIMS",
    "GRAPHS",
    "GRAPH_FORMAT",
    "GraphSpec",
    "IMAGE_ENCODER",
    "MANIFEST_FILE",
    "MASK_DECODER_MULTI",
    "MASK_DECODER_SINGLE",
    "MASK_PROMPT",
    "MEMORY_ATTENTION",
    "MEMORY_ENCODER",
    "MEMORY_READOUT",
    "READOUT_GRAPHS",
    "graphs_for",
    "MAX_PROMPT_CLICKS",
    "MAX_PROMPT_POINTS",
    "BOX_POINTS",
    "META_KEYS",
    "OPT_DIMS",
    "PRECISIONS",
    "INT8_STAGES",
    "stage_precision",
    "TENSORRT_SUBDIR",
    "TRT_CACHE_SUBDIR",
    "TensorSpec",
    "bind_dims",
    "dims_from_profile",
    "profile_dims",
    "profile_dims_for",
    "profile_problems",
    "model_name",
]

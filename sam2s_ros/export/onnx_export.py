"""Export the SAM 2.1 stages (sam2s_ros.model.stages) to ONNX for onnxruntime / TensorRT.

One graph per entry of :data:`sam2s_ros.export.GRAPHS` (see that module for the I/O
contract and why there are six), exported with the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``), simplified with onnxslim, checked with
``onnx.checker`` and stamped with metadata_props (model, image_size, opset, precision,
checkpoint sha256, weights, sam2s_ros version, stage, graph format). Optional fp16 variants
and int8 variants (onnxruntime dynamic quantization of the MatMul/Gemm weights, for the CPU
EP; stages in ``contract.INT8_STAGES``) keep float32 inputs/outputs. ``constants.npz`` holds
what the graphs do not compute (no_mem_embed, maskmem_pos) so the runtimes need no torch weights.

Export-only adaptations (torch numerics unchanged, checked by test/test_onnx_export.py):
* SAM 2's antialiased bilinear downsampling (``F.interpolate(..., antialias=True)`` in
  ``_use_mask_as_output``) has no ONNX symbolic; it is exported as two MatMuls with the
  exact interpolation matrices that torch itself computes (static spatial sizes).
* The prompt decoder's optional mask input becomes a tensor plus a per-instrument
  ``has_mask`` flag: the prompt encoder's dense embedding is chosen per row.
* ``scaled_dot_product_attention`` is exported without the NaN guard torch adds for
  boolean masks (no row of the memory attention is ever fully masked), see _sdpa_symbolic.

Usage::

    from sam2s_ros.export.onnx_export import ExportOptions, export_onnx
    export_onnx(ExportOptions(out_dir=Path("models/onnx"), model_size="tiny", image_size=512,
                              random_weights=True, fp16=True))
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam2s_ros import __version__
from sam2s_ros.errors import ExportError
from sam2s_ros.export.contract import (
    CONSTANTS_FILE,
    DEFAULT_OPSET,
    DYNAMIC_DIMS,
    GRAPH_FORMAT,
    GRAPHS,
    INT8_STAGES,
    MANIFEST_FILE,
    MAX_OPSET,
    MIN_OPSET,
    PRECISIONS,
    READOUT_GRAPHS,
    TENSORRT_SUBDIR,
    TRT_CACHE_SUBDIR,
    GraphSpec,
    model_name,
)
from sam2s_ros.model import stages
from sam2s_ros.model.readout import is_readout_model
from sam2s_ros.model.stages import memory_positional_encoding
from sam2s_ros.tracking.config import MODEL_SIZES, TrackerConfig, image_size_problem

#: example sizes of the dynamic axes while tracing (all != 1 so nothing specialises to 1)
TRACE_DIMS = {"instruments": 2, "points": 3, "mem_frames": 3, "obj_ptrs": 4}


@dataclass
class ExportOptions:
    """Inputs of :func:`export_onnx` (the ``sam2s export`` arguments).

    Attributes:
        out_dir: folder for the graphs (created; must be empty unless ``force``).
        model_size: "tiny", "small", "base_plus" or "large".
        image_size: model input side in pixels (multiple of 32, >= 128).
        checkpoint: SAM 2.1 / SAM2S checkpoint, or None with ``random_weights``.
        random_weights: export random weights (seed ``seed``) for pipeline tests.
        seed: seed of the random weights.
        fp16: also write ``<stage>.fp16.onnx``.
        int8: also write ``<stage>.int8.onnx`` for the stages in ``contract.INT8_STAGES``
            (the onnxruntime CPU EP's reduced-precision path, see :func:`quantize_int8`).
        opset: ONNX opset (MIN_OPSET..MAX_OPSET).
        force: replace earlier exports in ``out_dir``.
        simplify: run onnxslim on every graph.
        profile_dims: (min, opt, max) per dynamic axis that TensorRT engines of this export
            are built for, recorded in manifest.json (contract.profile_dims(...) of the
            TrackerConfig the graphs will run with; default that of the default config).
    """

    out_dir: Path
    model_size: str = "tiny"
    image_size: int = TrackerConfig.image_size
    checkpoint: Optional[str] = None
    random_weights: bool = False
    seed: int = 0
    fp16: bool = False
    int8: bool = False
    opset: int = DEFAULT_OPSET
    force: bool = False
    simplify: bool = True
    profile_dims: dict = field(default_factory=lambda: dict(DYNAMIC_DIMS))


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        out_dir: the output folder.
        graphs: {(stage, precision): path}.
        metadata: the common metadata (without ``stage`` / ``precision``).
        seconds: {stage: export seconds}.
    """

    out_dir: Path
    graphs: dict[tuple[str, str], Path] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ---- export-only adaptations ----------------------------------------------------------
def antialias_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_in, n_out] float32 weights of torch's 1-D antialiased bilinear resize (align_corners=False).

    Computed by resizing the identity with torch itself, so the weights are exactly torch's.
    """
    eye = torch.eye(n_in).reshape(n_in, 1, 1, n_in)
    out = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(n_in, n_out).contiguous()


def _upsample_bilinear2d_aa_symbolic(g, x, output_size, align_corners, scale_factors):
    from torch.onnx import symbolic_helper as sh

    in_sizes = sh._get_tensor_sizes(x)
    out_sizes = sh._get_tensor_sizes(g.original_node.output())
    if in_sizes is None or out_sizes is None or None in (*in_sizes[-2:], *out_sizes[-2:]):
        raise ExportError("antialiased resize needs static spatial sizes to be exported")
    if sh._maybe_get_const(align_corners, "b"):
        raise ExportError("antialiased resize with align_corners=True is not supported by the exporter")
    (h_in, w_in), (h_out, w_out) = in_sizes[-2:], out_sizes[-2:]
    rows = g.op("MatMul", x, g.op("Constant", value_t=antialias_matrix(w_in, w_out)))  # [.., H, w_out]
    return g.op("MatMul", g.op("Constant", value_t=antialias_matrix(h_in, h_out).t().contiguous()), rows)


def _sdpa_symbolic(g, query, key, value, attn_mask=None, dropout_p=None, is_causal=None, scale=None, enable_gqa=None):
    """scaled_dot_product_attention without the exporter's NaN guard, for masks that never empty a row.

    torch's symbolic follows a boolean-mask softmax with ``Where(IsNaN(w), 0, w)`` over the
    whole [B, heads, Lq, Lk] weight matrix (for rows whose keys are all masked). The memory
    attention always has at least one valid memory per instrument, so here the guard is
    left out (its cost: docs/backends.md) and the query alone is scaled.
    Other uses (dropout, causal, explicit scale, float masks) go to torch's symbolic.
    """
    from torch.onnx import symbolic_helper as sh

    try:
        from torch.onnx._internal.torchscript_exporter import symbolic_opset14
    except ImportError:  # torch < 2.9
        from torch.onnx import symbolic_opset14
    rank = sh._get_tensor_rank(query)
    bool_mask = not sh._is_none(attn_mask) and attn_mask.type().scalarType() == "Bool"
    plain = (
        sh._maybe_get_const(dropout_p, "f") in (0, 0.0)
        and not sh._maybe_get_const(is_causal, "b")
        and sh._is_none(scale)
        and not (enable_gqa is not None and sh._maybe_get_const(enable_gqa, "b"))
    )
    if not (plain and rank and (bool_mask or sh._is_none(attn_mask))):
        return symbolic_opset14.scaled_dot_product_attention(
            g, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa
        )
    perm = [*range(rank - 2), rank - 1, rank - 2]
    q = g.op("Mul", query, symbolic_opset14._attention_scale(g, query))  # 1 / sqrt(head dim), folded
    scores = g.op("MatMul", q, g.op("Transpose", key, perm_i=perm))
    if bool_mask:
        additive = g.op(
            "Where",
            attn_mask,
            g.op("Constant", value_t=torch.tensor([0.0])),
            g.op("Constant", value_t=torch.tensor([-float("inf")])),
        )
        scores = g.op("Add", scores, additive)
    return g.op("MatMul", g.op("Softmax", scores, axis_i=-1), value)


def register_export_symbolics(opset: int) -> None:
    """Teach the TorchScript exporter the antialiased bilinear resize and a leaner SDPA (idempotent)."""
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _upsample_bilinear2d_aa_symbolic, opset)
    torch.onnx.register_custom_op_symbolic("aten::scaled_dot_product_attention", _sdpa_symbolic, opset)


class _MaskSwitchPromptEncoder(nn.Module):
    """SAM's prompt encoder with the dense embedding chosen per row by ``has_mask``."""

    def __init__(self, prompt_encoder: nn.Module):
        super().__init__()
        self.pe = prompt_encoder
        self.mask_input_size = prompt_encoder.mask_input_size
        self.has_mask: Optional[torch.Tensor] = None  # [B] bool, set for one forward

    def get_dense_pe(self) -> torch.Tensor:
        return self.pe.get_dense_pe()

    def forward(self, points, boxes, masks):
        sparse, no_mask_dense = self.pe(points, boxes, None)
        mask_dense = self.pe._embed_masks(masks)
        return sparse, torch.where(self.has_mask[:, None, None, None], mask_dense, no_mask_dense)


@contextlib.contextmanager
def _prompt_encoder_swapped(sam: nn.Module, switch: _MaskSwitchPromptEncoder, has_mask) -> Iterator[None]:
    original = sam.sam_prompt_encoder
    switch.has_mask = has_mask
    sam.sam_prompt_encoder = switch
    try:
        yield
    finally:
        sam.sam_prompt_encoder = original
        switch.has_mask = None


class ImageEncoderGraph(nn.Module):
    """image [1, 3, S, S] -> feat_s0, feat_s1, feat_s2, pos_s2 (ImageEncoderStage)."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.stage = stages.ImageEncoderStage(sam)

    def forward(self, image):
        return self.stage(image)


class MaskDecoderGraph(nn.Module):
    """MaskDecoderStage with batch-1 high-res features and a per-instrument mask switch.

    forward(pix_feat [B, 256, h, w], feat_s0 [1, 32, S/4, S/4], feat_s1 [1, 64, S/8, S/8],
            point_coords [B, P, 2], point_labels [B, P] int32,
            mask_input [B, 1, S/4, S/4] logits, has_mask [B] bool) -> the stage's outputs;
    rows with has_mask False ignore mask_input (SAM's ``no_mask_embed``).
    """

    def __init__(self, sam: nn.Module, multimask: bool):
        super().__init__()
        self.stage = stages.MaskDecoderStage(sam, multimask_output=multimask)
        self.switch = _MaskSwitchPromptEncoder(sam.sam_prompt_encoder)

    def forward(self, pix_feat, feat_s0, feat_s1, point_coords, point_labels, mask_input, has_mask):
        b = pix_feat.shape[0]
        with _prompt_encoder_swapped(self.stage.sam, self.switch, has_mask):
            return self.stage(
                pix_feat,
                feat_s0.expand(b, -1, -1, -1),
                feat_s1.expand(b, -1, -1, -1),
                point_coords,
                point_labels,
                mask_input,
            )


class MaskPromptGraph(nn.Module):
    """MaskPromptStage with batch-1 image features: (feat_s2 [1, 256, h, w], mask [B, 1, S, S]).

    The high-res features only refine the decoder's masks, which a mask prompt replaces,
    so zeros stand in for them (the outputs do not depend on them).
    """

    def __init__(self, sam: nn.Module, image_size: int):
        super().__init__()
        self.stage = stages.MaskPromptStage(sam)
        self.register_buffer("feat_s0", torch.zeros(1, 32, image_size // 4, image_size // 4), persistent=False)
        self.register_buffer("feat_s1", torch.zeros(1, 64, image_size // 8, image_size // 8), persistent=False)

    def forward(self, feat_s2, mask):
        b = mask.shape[0]
        return self.stage(
            feat_s2.expand(b, -1, -1, -1), self.feat_s0.expand(b, -1, -1, -1), self.feat_s1.expand(b, -1, -1, -1), mask
        )


class MemoryAttentionGraph(nn.Module):
    """MemoryAttentionStage with the constant memory positional encoding built in."""

    def __init__(self, sam: nn.Module, image_size: int):
        super().__init__()
        self.stage = stages.MemoryAttentionStage(sam, image_size // 16)
        self.register_buffer("maskmem_pos", memory_positional_encoding(sam, image_size), persistent=False)

    def forward(self, feat_s2, pos_s2, mem_feats, mem_tpos_index, mem_valid, obj_ptrs, obj_ptr_pos, ptr_valid):
        return self.stage(
            feat_s2, pos_s2, mem_feats, self.maskmem_pos, mem_tpos_index, mem_valid, obj_ptrs, obj_ptr_pos, ptr_valid
        )


class MemoryReadoutGraph(nn.Module):
    """MemoryReadoutStage of readout models on its three inputs (contract.MEMORY_READOUT)."""

    def __init__(self, sam: nn.Module, image_size: int):
        super().__init__()
        self.stage = stages.MemoryReadoutStage(sam, image_size // 16)

    def forward(self, feat_s2, mem_feats, mem_valid):
        return self.stage(feat_s2, None, mem_feats, None, None, mem_valid, None, None, None)


class MemoryEncoderGraph(nn.Module):
    """MemoryEncoderStage with batch-1 image features -> maskmem_features [B, 64, h, w]."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.stage = stages.MemoryEncoderStage(sam)

    def forward(self, feat_s2, mask_for_mem, object_score_logits):
        b = mask_for_mem.shape[0]
        return self.stage(feat_s2.expand(b, -1, -1, -1), mask_for_mem, object_score_logits)[0]


def graph_modules(sam: nn.Module, image_size: int) -> dict[str, nn.Module]:
    """The export wrappers of every stage of :data:`GRAPHS`, in eval mode on CPU."""
    mods = {
        "image_encoder": ImageEncoderGraph(sam),
        "mask_decoder_multi": MaskDecoderGraph(sam, True),
        "mask_decoder_single": MaskDecoderGraph(sam, False),
        "mask_prompt": MaskPromptGraph(sam, image_size),
        "memory_attention": (MemoryReadoutGraph if is_readout_model(sam) else MemoryAttentionGraph)(sam, image_size),
        "memory_encoder": MemoryEncoderGraph(sam),
    }
    assert set(mods) == set(GRAPHS)  # READOUT_GRAPHS has the same stages
    return {k: m.eval() for k, m in mods.items()}


def example_inputs(
    spec: GraphSpec, image_size: int, dims: Optional[dict[str, int]] = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Plausible random inputs of ``spec`` (valid labels, indices and flags) for tracing and tests."""
    gen = torch.Generator().manual_seed(seed)
    dims = {**TRACE_DIMS, **(dims or {})}
    out = {}
    for t in spec.inputs:
        shape = t.resolve(image_size, dims)
        if t.name == "point_labels":
            x = torch.randint(0, 4, shape, generator=gen, dtype=torch.int32)
        elif t.name == "point_coords":
            x = torch.rand(shape, generator=gen) * image_size
        elif t.name == "mem_tpos_index":
            x = torch.randint(0, 7, shape, generator=gen, dtype=torch.int64)
        elif t.name == "has_mask":  # alternate rows with and without a mask input
            x = torch.arange(shape[0]) % 2 == 1
        elif t.dtype == "bool":  # key masks: the first entry valid, some others not
            x = torch.rand(shape, generator=gen) > 0.3
            x[:, 0] = True
        elif t.name == "mask":
            x = (torch.rand(shape, generator=gen) > 0.5).float()
        elif t.name == "obj_ptr_pos":
            x = torch.rand(shape, generator=gen)
        else:
            x = torch.randn(shape, generator=gen)
        out[t.name] = x
    return out


# ---- one graph -------------------------------------------------------------------------
def export_graph(module: nn.Module, spec: GraphSpec, path: Path, image_size: int, opset: int) -> None:
    """Trace ``module`` with the TorchScript exporter into ``path`` (dynamic axes of ``spec``).

    Raises:
        ExportError: the exporter failed.
    """
    register_export_symbolics(opset)
    args = tuple(example_inputs(spec, image_size).values())
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*dynamo=False.*")
            # gather indices (best mask, temporal position rows) are never negative
            warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_axes=spec.dynamic_axes(),
            )
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types (RuntimeError, UnsupportedOperatorError, ...)
        raise ExportError(f"ONNX export of stage {spec.stage!r} failed: {exc}") from exc
    check_io(path, spec)


def check_io(path: Path, spec: GraphSpec) -> None:
    """Raise ExportError unless the graph's inputs and outputs are exactly those of ``spec``.

    (The exporter silently drops inputs that no output depends on.)
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    got = ([i.name for i in graph.input], [o.name for o in graph.output])
    want = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
    if got != want:
        raise ExportError(f"graph {path.name} has inputs/outputs {got}, the contract (sam2s_ros.export) says {want}")


def simplify_graph(path: Path) -> None:
    """Run onnxslim on ``path`` in place (constant folding, dead code, shape simplification)."""
    import onnx
    import onnxslim

    try:
        slim = onnxslim.slim(onnx.load(str(path)))
    except Exception as exc:  # onnxslim raises arbitrary errors on graphs it cannot handle
        raise ExportError(f"onnxslim failed on {path.name}: {exc}") from exc
    if slim is None:
        raise ExportError(f"onnxslim returned no model for {path.name}")
    onnx.save(slim, str(path))


def convert_fp16(src: Path, dst: Path) -> None:
    """Write a float16 copy of ``src`` with float32 inputs/outputs (keep_io_types)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _toposort(model.graph)  # the converter appends the input casts at the end
    onnx.save(model, str(dst))


#: onnxruntime.quantization.quantize_dynamic settings of the int8 graphs (chosen by measurement,
#: issue #17): int8 weights per output channel, activations quantized per call (uint8, no
#: calibration), only MatMul/Gemm with constant weights; attention's activation x activation
#: MatMuls and Conv stay fp32 (quantizing them was not faster on the AVX-512 VNNI CPU)
INT8_QUANTIZATION = dict(
    op_types_to_quantize=["MatMul", "Gemm"],
    per_channel=True,
    reduce_range=False,
    extra_options={"MatMulConstBOnly": True},
)


def quantize_int8(src: Path, dst: Path) -> None:
    """Write an int8 copy of the fp32 graph ``src`` (dynamic quantization, :data:`INT8_QUANTIZATION`).

    Inputs and outputs stay float32. Raises ExportError when onnxruntime cannot quantize it.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint per call on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, **INT8_QUANTIZATION)
    except Exception as exc:  # onnxruntime.quantization raises plain exceptions of many kinds
        raise ExportError(f"int8 quantization of {src.name} failed: {exc}") from exc
    finally:
        root.setLevel(level)


def _toposort(graph) -> None:
    """Sort ``graph.node`` topologically in place (stable; subgraph-free graphs)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in known for i in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError(f"graph {graph.name!r} has a cycle or an undefined input: {rest[0].input}")
        pending = rest
    nodes = [type(n)() for n in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


def finalize_graph(path: Path, spec: GraphSpec, image_size: int, metadata: dict[str, str]) -> None:
    """Declare the contract's output shapes, replace the metadata_props, run onnx.checker.

    Output shapes: the exporter leaves some static output dims unknown (e.g. the image
    encoder's pos_s2); the contract's shapes (static dims as values, dynamic axes by
    name) are written so that consumers (TensorRT, IO binding) see them.

    Raises:
        ExportError: the checker (with full shape inference) rejects the graph.
    """
    import onnx

    model = onnx.load(str(path))
    for value, t in zip(model.graph.output, spec.outputs):
        fixed, dynamic = t.resolve(image_size, {k: 0 for k in DYNAMIC_DIMS}), t.dynamic_axes()
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if axis in dynamic:
                dim.dim_param = dynamic[axis]
            else:
                dim.dim_value = fixed[axis]
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    model.producer_name, model.producer_version = "sam2s_ros", __version__
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejects {path.name}: {exc}") from exc


def read_metadata(path: Path) -> dict[str, str]:
    """metadata_props of an ONNX file as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


# ---- the whole model -------------------------------------------------------------------
def validate_options(opts: ExportOptions) -> None:
    """Check the options before any heavy work.

    Raises:
        ExportError: bad image size / model size / opset, no or missing checkpoint, both a
            checkpoint and random weights, or a non-empty output folder without ``force``.
    """
    if opts.model_size not in MODEL_SIZES:
        raise ExportError(f"model size must be one of {', '.join(MODEL_SIZES)}, got {opts.model_size!r}")
    if image_size_problem(opts.image_size):
        raise ExportError(f"image size {image_size_problem(opts.image_size)}")
    if not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise ExportError(f"opset must be {MIN_OPSET}..{MAX_OPSET}, got {opts.opset}")
    if opts.checkpoint and opts.random_weights:
        raise ExportError("give either a checkpoint or random weights, not both")
    if not opts.checkpoint and not opts.random_weights:
        raise ExportError(
            "no checkpoint given: pass --checkpoint PATH (a SAM 2.1 / SAM2S checkpoint) or "
            "--random-weights for a pipeline test"
        )
    if opts.checkpoint and not Path(opts.checkpoint).is_file():
        raise ExportError(f"checkpoint {opts.checkpoint} does not exist")
    out = Path(opts.out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not opts.force:
        raise ExportError(f"output folder {out} exists and is not empty; pass --force to replace its graphs")


def export_onnx(opts: ExportOptions) -> ExportResult:
    """Validate ``opts``, load the weights and export every graph (see :func:`export_model`).

    Raises:
        ExportError: bad options or a failed export; CheckpointError: unreadable checkpoint.
    """
    from sam2s_ros.model.loader import load_model

    validate_options(opts)
    cfg = TrackerConfig(
        model_size=opts.model_size,
        image_size=opts.image_size,
        checkpoint=opts.checkpoint,
        allow_random_weights=opts.random_weights,
        seed=opts.seed,
    )
    model = load_model(cfg)
    return export_model(model.sam, opts, checkpoint_sha256=model.checkpoint_sha256, weights=model.weights)


def common_metadata(opts: ExportOptions, checkpoint_sha256: str, weights: str) -> dict[str, str]:
    """Metadata shared by every graph of one export (stage and precision added per file)."""
    return {
        "model": model_name(opts.model_size),
        "model_size": opts.model_size,
        "image_size": str(opts.image_size),
        "opset": str(opts.opset),
        "checkpoint_sha256": checkpoint_sha256,
        "weights": weights,
        "sam2s_ros_version": __version__,
        "graph_format": GRAPH_FORMAT,
    }


def export_model(sam: nn.Module, opts: ExportOptions, checkpoint_sha256: str, weights: str) -> ExportResult:
    """Export the graphs of a loaded ``SAM2Base`` into ``opts.out_dir``.

    Files are written into a sibling staging folder first and moved in at the end, so a
    failed export leaves an earlier one intact.

    Args:
        sam: SAM2Base (eval, CPU) built at ``opts.image_size``.
        opts: export options (out_dir, opset, fp16, int8, simplify, force are used here).
        checkpoint_sha256: checkpoint hash ("" for random weights), stored in the metadata.
        weights: weights description (LoadedModel.weights), stored in the metadata.

    Raises:
        ExportError: non-empty out_dir without force, export / onnxslim / checker failure.
    """
    out = Path(opts.out_dir)
    if out.is_dir() and any(out.iterdir()) and not opts.force:
        raise ExportError(f"output folder {out} exists and is not empty; pass --force to replace its graphs")
    if int(sam.image_size) != opts.image_size:
        raise ExportError(f"the model is built for image size {sam.image_size}, not {opts.image_size}")
    sam = sam.to("cpu").eval()
    result = ExportResult(out, metadata=common_metadata(opts, checkpoint_sha256, weights))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.export-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    graphs = READOUT_GRAPHS if is_readout_model(sam) else GRAPHS
    try:
        for stage, module in graph_modules(sam, opts.image_size).items():
            t0 = time.perf_counter()
            _export_stage(module, graphs[stage], staging, opts, result)
            result.seconds[stage] = time.perf_counter() - t0
        _write_constants(sam, opts.image_size, staging / CONSTANTS_FILE)
        manifest = {
            **result.metadata,
            "graphs": {f"{s}:{p}": path.name for (s, p), path in result.graphs.items()},
            "constants": CONSTANTS_FILE,
            "profile_dims": {k: [int(x) for x in v] for k, v in opts.profile_dims.items()},
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.graphs = {k: out / p.name for k, p in result.graphs.items()}
    return result


def _export_stage(module: nn.Module, spec: GraphSpec, folder: Path, opts: ExportOptions, result: ExportResult) -> None:
    path = folder / spec.filename("fp32")
    export_graph(module, spec, path, opts.image_size, opts.opset)
    if opts.simplify:
        simplify_graph(path)
    finalize_graph(path, spec, opts.image_size, {**result.metadata, "stage": spec.stage, "precision": "fp32"})
    result.graphs[(spec.stage, "fp32")] = path
    if opts.fp16:
        path16 = folder / spec.filename("fp16")
        convert_fp16(path, path16)
        finalize_graph(path16, spec, opts.image_size, {**result.metadata, "stage": spec.stage, "precision": "fp16"})
        result.graphs[(spec.stage, "fp16")] = path16
    if opts.int8 and spec.stage in INT8_STAGES:
        path8 = folder / spec.filename("int8")
        quantize_int8(path, path8)
        finalize_graph(path8, spec, opts.image_size, {**result.metadata, "stage": spec.stage, "precision": "int8"})
        result.graphs[(spec.stage, "int8")] = path8


def _write_constants(sam: nn.Module, image_size: int, path: Path) -> None:
    with torch.inference_mode():
        no_mem = stages.NoMemoryStage(sam).no_mem_embed[0, 0].float().numpy().copy()
    np.savez(
        path,
        no_mem_embed=no_mem,
        maskmem_pos=memory_positional_encoding(sam, image_size).numpy(),
        image_size=np.int64(image_size),
    )


def _move_into(staging: Path, out: Path) -> None:
    """Replace our files in ``out`` by those in ``staging`` (stale graphs/engines removed)."""
    out.mkdir(parents=True, exist_ok=True)
    ours = {CONSTANTS_FILE, MANIFEST_FILE} | {g.filename(p) for g in GRAPHS.values() for p in PRECISIONS}
    for name in ours:
        (out / name).unlink(missing_ok=True)
    for sub in (TENSORRT_SUBDIR, TRT_CACHE_SUBDIR):  # engines built from the old graphs
        shutil.rmtree(out / sub, ignore_errors=True)
    for f in staging.iterdir():
        shutil.move(str(f), str(out / f.name))


__all__ = [
    "DEFAULT_OPSET",
    "ExportOptions",
    "ExportResult",
    "MAX_OPSET",
    "MIN_OPSET",
    "antialias_matrix",
    "example_inputs",
    "export_graph",
    "export_model",
    "export_onnx",
    "quantize_int8",
    "graph_modules",
    "read_metadata",
    "register_export_symbolics",
    "validate_options",
]

"""The runtime-independent half of the graph backends (onnxruntime, TensorRT).

:class:`GraphBackend` implements the :class:`~sam2s_ros.backends.base.Backend` methods on
top of one ``_run(stage, feeds)``; :func:`check_export` and :func:`load_constants` read an
export folder (``manifest.json``, ``constants.npz``; see :mod:`sam2s_ros.export.contract`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sam2s_ros.backends.base import (
    AttendedMemory,
    DecoderOutput,
    ImageFeatures,
    MemoryInputs,
    MemoryPrompt,
    concat_attended,
    memory_rows,
)
from sam2s_ros.errors import BackendError
from sam2s_ros.export.contract import (
    CONSTANTS_FILE,
    DYNAMIC_DIMS,
    GRAPH_FORMAT,
    GRAPHS,
    MANIFEST_FILE,
    MAX_PROMPT_POINTS,
    bind_dims,
    model_name,
    profile_problems,
)

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


EXPORT_HINT = (
    "export them with: sam2s export --model-size {size} --image-size {s} "
    "(--checkpoint PATH | --random-weights) --out {dir}"
)


def check_export(
    onnx_dir: Path, image_size: int, model_size: str, checkpoint_sha256: Optional[str], weights: Optional[str]
) -> dict:
    """Read ``manifest.json`` of an export and check it fits the tracker.

    Args:
        onnx_dir: the export folder.
        image_size, model_size: what the tracker runs.
        checkpoint_sha256: hash of the tracker's checkpoint ("" for random weights); None skips the check.
        weights: LoadedModel.weights; compared for random weights (the seed); None skips it.

    Returns:
        The manifest dict.

    Raises:
        BackendError: no export there, or one made for another model / size / checkpoint.
    """
    onnx_dir = Path(onnx_dir)
    hint = EXPORT_HINT.format(size=model_size, s=image_size, dir=onnx_dir)
    manifest_path = onnx_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        what = "does not exist" if not onnx_dir.exists() else f"has no {MANIFEST_FILE}"
        raise BackendError(f"onnx_dir {onnx_dir} {what}: it holds no sam2s_ros graphs; {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"{manifest_path} is unreadable: {exc}") from exc
    problems = identity_problems(manifest, image_size, model_size, checkpoint_sha256, weights)
    if problems:
        raise BackendError(
            f"the graphs in {onnx_dir} do not fit this tracker: {'; '.join(problems)}; re-export with --force ({hint})"
        )
    return manifest


def identity_problems(
    meta: dict, image_size: int, model_size: str, checkpoint_sha256: Optional[str], weights: Optional[str]
) -> list[str]:
    problems = []
    if meta.get("graph_format") != GRAPH_FORMAT:
        problems.append(f"graph format {meta.get('graph_format')!r}, this sam2s_ros reads {GRAPH_FORMAT!r}")
    if meta.get("image_size") != str(image_size):
        problems.append(f"image_size {meta.get('image_size')} (config: {image_size})")
    if meta.get("model") != model_name(model_size):
        problems.append(f"model {meta.get('model')} (config: {model_name(model_size)})")
    if checkpoint_sha256 is not None and meta.get("checkpoint_sha256", "") != checkpoint_sha256:
        theirs = meta.get("checkpoint_sha256", "")[:12] or "random weights"
        problems.append(f"checkpoint sha256 {theirs} (loaded: {checkpoint_sha256[:12] or 'random weights'})")
    elif weights is not None and not checkpoint_sha256 and meta.get("weights") != weights:
        problems.append(f"weights {meta.get('weights')!r} (loaded: {weights!r})")
    return problems


def load_constants(onnx_dir: Path, image_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(no_mem_embed [256], maskmem_pos [1, 64, h, w]) float32 on ``device`` from constants.npz."""
    path = Path(onnx_dir) / CONSTANTS_FILE
    try:
        with np.load(path) as data:
            no_mem, pos = data["no_mem_embed"], data["maskmem_pos"]
    except (OSError, KeyError, ValueError) as exc:
        raise BackendError(f"{path} is missing or incomplete ({exc}); re-export the graphs") from exc
    hw = image_size // 16
    if no_mem.shape != (256,) or pos.shape[-2:] != (hw, hw):
        raise BackendError(f"{path} holds constants for another image size ({pos.shape}); re-export the graphs")
    return torch.from_numpy(no_mem).to(device), torch.from_numpy(pos).to(device)


def check_profile(have: Optional[dict], need: Optional[dict], where: str) -> None:
    """Raise BackendError when the profile ``have`` (graphs / engines) is smaller than ``need`` (config)."""
    if have is None or need is None:
        return
    problems = profile_problems(have, need)
    if problems:
        raise BackendError(
            f"{where} accept smaller inputs than the tracker configuration can produce ({'; '.join(problems)}): "
            "export / build again with this configuration (sam2s export --max-instruments ... --force) "
            "or lower max_instruments / divemem limits"
        )


def run_on_stream(stream, device: torch.device, fn):
    """Run ``fn`` (which enqueues work on ``stream``) ordered after the caller's current stream.

    When the caller already runs on ``stream`` nothing is added. Otherwise ``stream`` waits
    for the current stream (inputs written by torch) and the current stream waits for
    ``stream`` (outputs) with CUDA events: no host synchronisation. Tensors allocated by
    the caller's stream stay safe: every later use or reuse on it is ordered after ``fn``.
    """
    if stream is None:
        return fn()
    current = torch.cuda.current_stream(device)
    if current == stream:
        return fn()
    stream.wait_stream(current)
    out = fn()
    current.wait_stream(stream)
    return out


class GraphBackend:
    """Backend methods on top of ``_run(stage, feeds) -> {output name: tensor}`` (see sam2s_ros.export.contract).

    Subclasses set ``self.device``, ``self.image_size``, ``self._no_mem_embed`` and
    ``self._maskmem_pos`` and implement ``_run``.
    """

    name = "graphs"
    image_size: int
    device: torch.device
    #: the dedicated CUDA stream every graph runs on (None on CPU), see :meth:`_call`
    stream: Optional["torch.cuda.Stream"] = None
    #: (min, opt, max) per dynamic axis the runtime accepts; None = any size (CPU / CUDA EP)
    dims: Optional[dict[str, tuple[int, int, int]]] = None
    #: the graph contract of the loaded model family (contract.graphs_for); subclasses set it
    graphs: dict = GRAPHS
    #: seconds :meth:`warmup` took (engine builds of the TensorRT EP happen there); None = not run
    warmup_seconds: Optional[float] = None
    #: instruments per memory-attention run; None = all of a call's instruments in one run
    #: (OnnxRuntimeBackend sets 1 on the CPU EP, see there)
    memory_attention_rows: Optional[int] = None

    @property
    def max_prompt_points(self) -> int:
        """Most points (clicks + box corners) one prompt may have on this runtime."""
        return MAX_PROMPT_POINTS if self.dims is None else min(MAX_PROMPT_POINTS, self.dims["points"][2])

    def _init_stream(self) -> None:
        """One dedicated CUDA stream for all graphs (not the legacy default stream, which syncs)."""
        if self.device.type == "cuda":
            self.stream = torch.cuda.Stream(self.device)

    def stream_context(self):
        """``with backend.stream_context():`` makes torch work run on the graphs' stream too
        (then :meth:`_call` needs no cross-stream waits); a no-op on CPU."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _run(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _call(self, stage: str, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        spec = self.graphs[stage]
        try:
            dims = bind_dims(spec, {k: tuple(v.shape) for k, v in feeds.items()}, self.image_size)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        if self.dims is not None:
            over = {k: v for k, v in dims.items() if not self.dims[k][0] <= v <= self.dims[k][2]}
            if over:
                what = ", ".join(f"{k}={v} (profile {self.dims[k][0]}..{self.dims[k][2]})" for k, v in over.items())
                raise BackendError(
                    f"{stage}: {what} is outside the optimization profile; re-export / rebuild for this configuration"
                )
        cast = {t.name: feeds[t.name].to(self.device, TORCH_DTYPES[t.dtype]).contiguous() for t in spec.inputs}
        return run_on_stream(self.stream, self.device, lambda: self._run(stage, cast))

    def warmup(self) -> float:
        """Run every graph once at the profiles' opt sizes (the TensorRT EP builds its engines
        on a graph's first run: minutes on first start, then from its cache); seconds taken."""
        t0 = time.perf_counter()
        dims = {k: v[1] for k, v in (self.dims or DYNAMIC_DIMS).items()}
        for stage, spec in self.graphs.items():
            feeds = {}
            for t in spec.inputs:
                dtype = TORCH_DTYPES[t.dtype]
                feeds[t.name] = torch.zeros(t.resolve(self.image_size, dims), dtype=dtype, device=self.device)
            if "point_labels" in feeds:
                feeds["point_labels"].fill_(-1)
            self._call(stage, **feeds)
        if self.stream is not None:
            self.stream.synchronize()
        self.warmup_seconds = time.perf_counter() - t0
        log.info("%s warm-up (first run of every graph) took %.1f s", self.name, self.warmup_seconds)
        return self.warmup_seconds

    def describe(self) -> dict:
        """Runtime details for diagnostics."""
        return {
            "backend_runtime": getattr(self, "provider", self.name),
            "backend_warmup_s": "" if self.warmup_seconds is None else f"{self.warmup_seconds:.1f}",
        }

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        out = self._call("image_encoder", image=image)
        return ImageFeatures(out["feat_s0"], out["feat_s1"], out["feat_s2"], out["pos_s2"])

    def no_memory_features(self, feat_s2: torch.Tensor) -> torch.Tensor:
        return feat_s2.to(self.device) + self._no_mem_embed[None, :, None, None]

    def attend_memory(self, feats: ImageFeatures, memory: MemoryInputs) -> AttendedMemory:
        b, step = memory.mem_feats.shape[0], self.memory_attention_rows
        if step is None or b <= step:
            return self._attend_memory_run(feats, memory)
        return concat_attended(
            [self._attend_memory_run(feats, memory_rows(memory, i, i + step)) for i in range(0, b, step)]
        )

    def _attend_memory_run(self, feats: ImageFeatures, memory: MemoryInputs) -> AttendedMemory:
        out = self._call(
            "memory_attention",
            feat_s2=feats.feat_s2,
            pos_s2=feats.pos_s2,
            mem_feats=memory.mem_feats,
            mem_tpos_index=memory.mem_tpos_index,
            mem_valid=memory.mem_valid,
            obj_ptrs=memory.obj_ptrs,
            obj_ptr_pos=memory.obj_ptr_pos,
            ptr_valid=memory.ptr_valid,
        )
        if "point_coords" in out:  # readout models (contract.MEMORY_READOUT)
            prompt = MemoryPrompt(out["point_coords"], out["point_labels"], out["mask_input"], out["present"])
            return AttendedMemory(out["pix_feat_with_mem"], prompt)
        return AttendedMemory(out["pix_feat_with_mem"])

    def decode_masks(
        self, pix_feat, feats, point_coords, point_labels, mask_input: Optional[torch.Tensor], multimask: bool
    ) -> DecoderOutput:
        b, s4 = pix_feat.shape[0], self.image_size // 4
        if mask_input is None:
            mask_input = torch.zeros(b, 1, s4, s4, device=self.device)
            has_mask = torch.zeros(b, dtype=torch.bool, device=self.device)
        else:
            has_mask = torch.ones(b, dtype=torch.bool, device=self.device)
        stage = "mask_decoder_multi" if multimask else "mask_decoder_single"
        out = self._call(
            stage,
            pix_feat=pix_feat,
            feat_s0=feats.feat_s0,
            feat_s1=feats.feat_s1,
            point_coords=point_coords,
            point_labels=point_labels,
            mask_input=mask_input,
            has_mask=has_mask,
        )
        return DecoderOutput(out["low_res_masks"], out["ious"], out["obj_ptrs"], out["object_score_logits"])

    def decode_mask_prompt(self, feats: ImageFeatures, masks: torch.Tensor) -> DecoderOutput:
        out = self._call("mask_prompt", feat_s2=feats.feat_s2, mask=masks)
        return DecoderOutput(out["low_res_masks"], out["ious"], out["obj_ptrs"], out["object_score_logits"])

    def encode_memory(self, feats, mask_for_mem, object_score_logits):
        out = self._call(
            "memory_encoder", feat_s2=feats.feat_s2, mask_for_mem=mask_for_mem, object_score_logits=object_score_logits
        )
        return out["maskmem_features"], self._maskmem_pos

    def maskmem_pos(self) -> torch.Tensor:
        """[1, 64, h, w] memory positional encoding (constant for a fixed image size)."""
        return self._maskmem_pos

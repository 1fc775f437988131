"""The onnxruntime backend: SAM 2.1 stages run from the graphs of ``sam2s export``.

Execution providers: CPU; with ``device="cuda[:N]"`` the CUDA EP or the TensorRT EP
(``onnxruntime-gpu``). The graphs, their I/O names and ``constants.npz`` are described in
:mod:`sam2s_ros.export`; no torch weights are needed (torch only carries tensors across
the backend interface). Before any session is created, ``manifest.json`` is checked
against the tracker configuration (image size, model size, checkpoint sha256 or random
weights seed, graph format), then every graph's own metadata_props.

Verified here: CPU EP (fp32 and fp16 graphs). Written for, but not run on, a GPU: the CUDA
EP and TensorRT EP paths (IO binding on torch CUDA tensors, engine / timing cache under
``<onnx_dir>/trt_cache``); ``scripts/gpu_verify.sh`` runs them where a GPU exists.

:class:`GraphBackend` holds the runtime-independent part (the Backend methods on top of
one ``_run(stage, feeds)``); the native TensorRT backend reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sam2s_ros.backends.base import DecoderOutput, ImageFeatures, MemoryInputs
from sam2s_ros.errors import BackendError
from sam2s_ros.export import (
    CONSTANTS_FILE,
    GRAPH_FORMAT,
    GRAPHS,
    MANIFEST_FILE,
    PRECISIONS,
    TRT_CACHE_SUBDIR,
    bind_dims,
    model_name,
)

_TORCH_DTYPES = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
_EP_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_EXPORT_HINT = (
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
    hint = _EXPORT_HINT.format(size=model_size, s=image_size, dir=onnx_dir)
    manifest_path = onnx_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        what = "does not exist" if not onnx_dir.exists() else f"has no {MANIFEST_FILE}"
        raise BackendError(f"onnx_dir {onnx_dir} {what}: it holds no sam2s_ros graphs; {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"{manifest_path} is unreadable: {exc}") from exc
    problems = _identity_problems(manifest, image_size, model_size, checkpoint_sha256, weights)
    if problems:
        raise BackendError(
            f"the graphs in {onnx_dir} do not fit this tracker: {'; '.join(problems)}; re-export with --force ({hint})"
        )
    return manifest


def _identity_problems(
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


class GraphBackend:
    """Backend methods on top of ``_run(stage, feeds) -> {output name: tensor}`` (see sam2s_ros.export).

    Subclasses set ``self.device``, ``self.image_size``, ``self._no_mem_embed`` and
    ``self._maskmem_pos`` and implement ``_run``.
    """

    name = "graphs"
    image_size: int
    device: torch.device

    def _run(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _call(self, stage: str, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        spec = GRAPHS[stage]
        try:
            bind_dims(spec, {k: tuple(v.shape) for k, v in feeds.items()}, self.image_size)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        cast = {t.name: feeds[t.name].to(self.device, _TORCH_DTYPES[t.dtype]).contiguous() for t in spec.inputs}
        return self._run(stage, cast)

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        out = self._call("image_encoder", image=image)
        return ImageFeatures(out["feat_s0"], out["feat_s1"], out["feat_s2"], out["pos_s2"])

    def no_memory_features(self, feat_s2: torch.Tensor) -> torch.Tensor:
        return feat_s2.to(self.device) + self._no_mem_embed[None, :, None, None]

    def attend_memory(self, feats: ImageFeatures, memory: MemoryInputs) -> torch.Tensor:
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
        return out["pix_feat_with_mem"]

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


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


class OnnxRuntimeBackend(GraphBackend):
    """SAM 2.1 stages from ONNX graphs with onnxruntime.

    Args:
        onnx_dir: folder written by ``sam2s export``.
        image_size, model_size: what the tracker runs (checked against the graphs).
        device: "cpu" or "cuda[:N]".
        precision: "fp32" (``<stage>.onnx``) or "fp16" (``<stage>.fp16.onnx``; with the
            TensorRT EP the fp32 graphs are used and TensorRT builds fp16 engines).
        provider: "auto" (CPU on cpu; on cuda the TensorRT EP when onnxruntime has it,
            else the CUDA EP), "cpu", "cuda" or "tensorrt".
        checkpoint_sha256, weights: identity of the loaded weights (None: not checked).
        num_threads: intra-op threads (default torch.get_num_threads()).

    Raises:
        BackendError: onnxruntime or the requested execution provider is missing, no or
            mismatching graphs, unreadable graph.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_dir,
        image_size: int,
        model_size: str,
        device: str = "cpu",
        precision: str = "fp32",
        provider: str = "auto",
        checkpoint_sha256: Optional[str] = None,
        weights: Optional[str] = None,
        num_threads: Optional[int] = None,
    ):
        ort = _import_onnxruntime()
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        self.image_size = int(image_size)
        self.onnx_dir = Path(onnx_dir)
        self.provider = _choose_provider(ort, provider, self.device)
        self.precision = precision
        graph_precision = "fp32" if self.provider == "tensorrt" else precision
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                f"device {device!r} requested but torch sees no CUDA GPU; the onnxruntime backend "
                "hands CUDA tensors to onnxruntime (install a CUDA build of torch) or use device:=cpu"
            )
        self.manifest = check_export(self.onnx_dir, self.image_size, model_size, checkpoint_sha256, weights)
        paths = {s: self.onnx_dir / g.filename(graph_precision) for s, g in GRAPHS.items()}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            flag = " --fp16" if graph_precision == "fp16" else ""
            hint = _EXPORT_HINT.format(size=model_size, s=image_size, dir=self.onnx_dir)
            raise BackendError(
                f"onnx_dir {self.onnx_dir} lacks {', '.join(missing)}; re-export with{flag} --force ({hint})"
            )
        self._no_mem_embed, self._maskmem_pos = load_constants(self.onnx_dir, self.image_size, self.device)
        self.session_options = self._session_options(ort, num_threads)
        self.sessions = {}
        for stage, path in paths.items():
            sess = self._session(ort, path, self.session_options)
            meta = sess.get_modelmeta().custom_metadata_map
            problems = _identity_problems(meta, self.image_size, model_size, checkpoint_sha256, weights)
            if meta.get("stage") != stage or meta.get("precision") != graph_precision:
                problems.append(f"stage/precision {meta.get('stage')}/{meta.get('precision')}")
            if problems:
                raise BackendError(f"{path} does not fit: {'; '.join(problems)}; re-export with --force")
            self.sessions[stage] = sess
        self.providers = self.sessions["image_encoder"].get_providers()

    def _session_options(self, ort, num_threads: Optional[int]):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle onnxruntime threads must not spin: they would slow torch ~10x on few cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _session(self, ort, path: Path, options):
        providers = [self._provider_entry(path)]
        if self.provider == "tensorrt":
            providers.append(("CUDAExecutionProvider", {"device_id": _cuda_index(self.device)}))
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")
        try:
            sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException types
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        wanted = _EP_NAMES[self.provider]
        if sess.get_providers()[0] != wanted:
            raise BackendError(
                f"onnxruntime fell back to {sess.get_providers()} for {path.name} although {wanted} "
                f"was requested: {_provider_install_hint(self.provider)}"
            )
        return sess

    def _provider_entry(self, path: Path):
        if self.provider == "cpu":
            return "CPUExecutionProvider"
        if self.provider == "cuda":
            return ("CUDAExecutionProvider", {"device_id": _cuda_index(self.device)})
        cache = self.onnx_dir / TRT_CACHE_SUBDIR
        cache.mkdir(parents=True, exist_ok=True)
        spec = GRAPHS[path.name.split(".")[0]]
        profiles = spec.profile_shapes(self.image_size)

        def shapes(i: int) -> str:
            return ",".join(f"{n}:{'x'.join(map(str, p[i]))}" for n, p in profiles.items())

        options = {
            "device_id": _cuda_index(self.device),
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        if profiles:
            options.update(
                trt_profile_min_shapes=shapes(0), trt_profile_opt_shapes=shapes(1), trt_profile_max_shapes=shapes(2)
            )
        return ("TensorrtExecutionProvider", options)

    def _run(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sess, spec = self.sessions[stage], GRAPHS[stage]
        if self.device.type == "cpu":
            outs = sess.run([t.name for t in spec.outputs], {k: v.numpy() for k, v in feeds.items()})
            return {t.name: torch.from_numpy(o) for t, o in zip(spec.outputs, outs)}
        return self._run_cuda(sess, stage, feeds)

    def _run_cuda(self, sess, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """IO binding on torch CUDA tensors (outputs preallocated from the graph contract)."""
        spec, dev = GRAPHS[stage], _cuda_index(self.device)
        dims = bind_dims(spec, {k: tuple(v.shape) for k, v in feeds.items()}, self.image_size)
        binding = sess.io_binding()
        for t in spec.inputs:
            x = feeds[t.name]
            binding.bind_input(t.name, "cuda", dev, np.dtype(t.dtype).type, list(x.shape), x.data_ptr())
        outs = {
            t.name: torch.empty(t.resolve(self.image_size, dims), dtype=_TORCH_DTYPES[t.dtype], device=self.device)
            for t in spec.outputs
        }
        for t in spec.outputs:
            y = outs[t.name]
            binding.bind_output(t.name, "cuda", dev, np.dtype(t.dtype).type, list(y.shape), y.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch are ready
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outs


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            "backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime==1.31.1 "
            "(CPU) or onnxruntime-gpu (CUDA / TensorRT execution providers)"
        ) from exc
    return onnxruntime


def _provider_install_hint(provider: str) -> str:
    if provider == "cuda":
        return (
            "install onnxruntime-gpu (pip uninstall onnxruntime && pip install onnxruntime-gpu) "
            "with CUDA 12 and cuDNN 9 libraries"
        )
    if provider == "tensorrt":
        return (
            "install onnxruntime-gpu and TensorRT 10 libraries (pip install tensorrt-cu12, NVIDIA index) "
            "so that libnvinfer is found"
        )
    return "use provider 'cpu'"


def _choose_provider(ort, provider: str, device: torch.device) -> str:
    if provider not in PROVIDERS:
        raise BackendError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    available = ort.get_available_providers()
    if provider == "auto":
        if device.type == "cpu":
            return "cpu"
        provider = "tensorrt" if _EP_NAMES["tensorrt"] in available else "cuda"
    if provider != "cpu" and device.type != "cuda":
        raise BackendError(f"provider {provider!r} needs device cuda[:N], got {device}")
    if provider == "cpu" and device.type != "cpu":
        raise BackendError(f"provider 'cpu' needs device cpu, got {device}")
    if _EP_NAMES[provider] not in available:
        raise BackendError(
            f"onnxruntime {ort.__version__} has no {_EP_NAMES[provider]} (available: "
            f"{', '.join(available)}): {_provider_install_hint(provider)}"
        )
    return provider


__all__ = ["GraphBackend", "OnnxRuntimeBackend", "PROVIDERS", "check_export", "load_constants"]

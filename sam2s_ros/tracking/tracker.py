"""Streaming SAM2S tracker: one frame at a time, every instrument batched, bounded memory.

Per frame (SAM 2.1 semantics, ``sam2/sam2_video_predictor.py`` + ``SAM2Base.track_step``):
1. one image-encoder pass shared by all instruments;
2. tracked instruments: one batched memory-attention call over their memory banks and one
   batched mask-decoder call (no prompt, multimask output as SAM 2.1 tracks);
3. REFINE prompts: the instrument's tracked result is corrected with the new clicks/box and
   its previous logits as mask input (SAM 2's correction clicks); the frame becomes a
   conditioning frame (SAM 2's ``add_all_frames_to_correct_as_cond=True``);
4. NEW / REPLACE prompts: an initial conditioning frame (no memory, ``no_mem_embed``);
   mask prompts are used as the output (SAM 2.1 ``use_mask_input_as_output_without_sam``);
5. one batched memory-encoder call; conditioning frames encode the binarised mask,
   tracked frames the sigmoid mask (SAM 2.1 video predictor).
Outputs are SAM 2's video-resolution logits: the 1/4-resolution decoder logits upsampled
bilinearly to the source size.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sam2s_ros.backends.base import AttendedMemory, DecoderOutput, ImageFeatures, MemoryInputs, concat_attended
from sam2s_ros.errors import PromptError, Sam2sError, UnknownInstrumentError
from sam2s_ros.model.readout import ABSENT_SCORE, NO_OBJ_SCORE
from sam2s_ros.tracking import prompts as prompt_ops
from sam2s_ros.tracking import state as tracker_state
from sam2s_ros.tracking import transfer
from sam2s_ros.tracking.config import TrackerConfig, model_name
from sam2s_ros.tracking.memory_bank import FEATURE_STRIDE, InstrumentMemory, build_memory_inputs, select_long_term
from sam2s_ros.tracking.preprocess import check_frame, to_model_input
from sam2s_ros.tracking.state import InstrumentState
from sam2s_ros.tracking.types import (
    ClassSource,
    FrameResult,
    InstrumentResult,
    PromptInput,
    PromptMode,
    RejectedPrompt,
    mask_bbox,
)
from sam2s_ros.tracking.upsample import UpsampledLogits, upsample_logits

#: SAM 2.1 memory-encoder mask scaling (sigmoid_scale_for_mem_enc, sigmoid_bias_for_mem_enc)
MEM_MASK_SCALE, MEM_MASK_BIAS = 20.0, -10.0
#: SAM 2's clamp of previous logits fed back with correction clicks (add_new_points_or_box)
PREV_LOGITS_CLAMP = 32.0


@dataclass
class _FrameOutput:
    low_res: torch.Tensor  # [1, S/4, S/4]
    iou: torch.Tensor  # [] predicted IoU (stays on the device until the frame's one host copy)
    obj_ptr: torch.Tensor  # [256]
    object_score: torch.Tensor  # [] object-score logit (on the device, as iou)
    is_cond: bool


def _rows(out: DecoderOutput, is_cond: bool) -> list[_FrameOutput]:
    return [
        _FrameOutput(out.low_res_masks[i], out.ious[i], out.obj_ptrs[i], out.object_score_logits[i], is_cond)
        for i in range(out.low_res_masks.shape[0])
    ]


def fill_holes(low_res: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background holes of at most ``max_area`` pixels (SAM 2 ``fill_holes_in_mask_scores``).

    Holes are 8-connected components of ``logits <= 0``; they get logit 0.1. Works on CPU
    with OpenCV instead of SAM 2's CUDA extension: on a GPU that costs one host copy of the
    [B, h, w] background masks and one asynchronous upload of the holes per frame (not per
    instrument).

    Args:
        low_res: [B, 1, h, w] float32 logits.

    Returns:
        [B, 1, h, w] float32 logits (``low_res`` itself when nothing is filled).
    """
    if max_area <= 0:
        return low_res
    (background,) = transfer.to_host(low_res[:, 0] <= 0)
    holes = np.zeros(background.shape, bool)
    for b in range(background.shape[0]):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(background[b].astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_area) + 1
        if len(small):
            holes[b] = np.isin(labels, small)
    if not holes.any():
        return low_res
    return low_res.masked_fill(transfer.upload(holes, low_res.device)[:, None], 0.1)


def overlap_owner(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Which instrument a label image shows at each pixel (computed where the logits are).

    Args:
        logits: [B, H, W] float32 logits, rows in result order.
        masks: [B, H, W] bool, the thresholded logits.

    Returns:
        [H, W] uint8: 0 where no mask is set, else 1 + the row with the highest logit among
        the rows whose mask is set (the first such row on ties), as
        :meth:`~sam2s_ros.tracking.types.FrameResult.label_image` resolves overlaps.
    """
    best = torch.full(logits.shape[1:], float("-inf"), device=logits.device)
    owner = torch.zeros(logits.shape[1:], dtype=torch.uint8, device=logits.device)
    for row in range(logits.shape[0]):  # the rule of label_image: strictly higher logit wins
        take = masks[row] & (logits[row] > best)
        best = torch.where(take, logits[row], best)
        owner = torch.where(take, row + 1, owner)
    return owner


class InstrumentTracker:
    """Streaming multi-instrument SAM2S tracker (see module docstring).

    Args:
        backend: a sam2s_ros.backends.base.Backend.
        config: the validated TrackerConfig.
        semantic_head: trained class head, or None.
        weights: description of the weights ("checkpoint <path>" / "random weights ...").
        checkpoint_sha256: hash stored in saved states.
    """

    def __init__(
        self, backend, config: TrackerConfig, semantic_head=None, weights: str = "", checkpoint_sha256: str = ""
    ):
        config.validate()
        self.backend = backend
        self.cfg = config
        # on the tracker's device: its output joins the frame's one host copy
        self.semantic_head = semantic_head.to(backend.device) if semantic_head is not None else None
        self.weights = weights
        self.checkpoint_sha256 = checkpoint_sha256
        self.image_size = backend.image_size
        self.device = backend.device
        self._instruments: dict[int, InstrumentState] = {}
        self._frame_index = 0

    @classmethod
    def from_config(cls, cfg: TrackerConfig) -> "InstrumentTracker":
        """Load the model and backend named by ``cfg``.

        Raises:
            ConfigError, CheckpointError, BackendError.
        """
        from sam2s_ros.backends import create_backend
        from sam2s_ros.model.loader import load_model

        cfg.validate()
        model = load_model(cfg)
        backend = create_backend(cfg, model)
        return cls(backend, cfg, model.semantic_head, model.weights, model.checkpoint_sha256)

    # ---- public API -----------------------------------------------------------------
    @property
    def instrument_ids(self) -> list[int]:
        """Ids of the tracked instruments, sorted."""
        return sorted(self._instruments)

    @property
    def frame_index(self) -> int:
        """Index the next tracked frame will get."""
        return self._frame_index

    @property
    def class_vocabulary(self) -> list[tuple[int, str]]:
        """(class_id, name) pairs; ids start at 1."""
        return [(i + 1, n) for i, n in enumerate(self.cfg.class_vocabulary)]

    def describe(self) -> dict:
        """Backend, model, image size, device, weights and semantic-head status."""
        return {
            "backend": self.backend.name,
            "model": model_name(self.cfg.model_size),
            "image_size": self.image_size,
            "device": str(self.device),
            "semantic_head_trained": self.semantic_head is not None,
            "weights": self.weights,
        }

    def memory_sizes(self) -> dict[int, dict[str, int]]:
        """Per instrument: counts of conditioning, short-term, long-term frames, candidates, pointers."""
        return {i: s.memory.sizes() for i, s in sorted(self._instruments.items())}

    def check_prompt(self, prompt: PromptInput, image_hw: tuple[int, int], _pending: Sequence[int] = ()) -> None:
        """Raise if ``prompt`` cannot be applied to a frame of size ``image_hw`` now.

        Raises:
            UnknownInstrumentError: REFINE / REPLACE of an id that is not tracked.
            PromptError: bad geometry (see prompts.check_geometry), NEW of a tracked id,
                more than max_instruments, unknown class id.
        """
        prompt_ops.check_geometry(prompt, image_hw)
        prompt_ops.check_point_count(prompt, self.backend)
        iid = int(prompt.instrument_id)
        tracked = iid in self._instruments
        if prompt.mode == PromptMode.NEW:
            if tracked:
                raise PromptError(f"instrument {iid} is already tracked; use mode REFINE or REPLACE")
            if len(self._instruments) + len(_pending) + 1 > self.cfg.max_instruments:
                raise PromptError(f"cannot track more than max_instruments={self.cfg.max_instruments} instruments")
        elif not tracked:
            raise UnknownInstrumentError(f"instrument {iid} is not tracked (tracked: {self.instrument_ids})")
        if prompt.class_id is not None and not 1 <= prompt.class_id <= len(self.cfg.class_vocabulary):
            raise PromptError(f"class_id {prompt.class_id} not in the vocabulary 1..{len(self.cfg.class_vocabulary)}")

    def remove_instrument(self, instrument_id: int) -> None:
        """Stop tracking an instrument and drop its memory. Raises UnknownInstrumentError."""
        if instrument_id not in self._instruments:
            raise UnknownInstrumentError(f"instrument {instrument_id} is not tracked (tracked: {self.instrument_ids})")
        del self._instruments[instrument_id]

    def reset(self) -> None:
        """Forget all instruments; the next frame gets index 0."""
        self._instruments.clear()
        self._frame_index = 0

    def track(self, image: np.ndarray, prompts: Sequence[PromptInput] = ()) -> FrameResult:
        """Track every instrument on the next frame, applying ``prompts`` on this frame.

        Args:
            image: [H, W, 3] uint8 RGB source frame.
            prompts: prompts for this frame; invalid ones come back in
                ``FrameResult.rejected_prompts`` and the frame is still tracked.

        Raises:
            FrameError: bad frame (the tracker state is unchanged).
        """
        t_start = time.perf_counter()
        hw = check_frame(image)
        accepted, rejected = self._accept_prompts(prompts, hw)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        model_input = to_model_input(image, self.image_size, self.device)
        t1 = time.perf_counter()
        feats = self.backend.encode_image(model_input)
        timings["preprocess"], timings["image_encoder"] = t1 - t0, time.perf_counter() - t1
        for p in accepted.values():
            if p.mode in (PromptMode.NEW, PromptMode.REPLACE):
                self._start_instrument(p)
        outputs = self._track_existing(feats, accepted, hw, timings)
        outputs.update(self._start_from_prompts(feats, accepted, hw, timings))
        results, owner = self._finish_frame(feats, outputs, hw, timings)
        self._frame_index += 1
        timings["total"] = time.perf_counter() - t_start
        return FrameResult(self._frame_index - 1, hw, results, rejected, timings, overlap_owner=owner)

    # ---- prompts ---------------------------------------------------------------------
    def _accept_prompts(self, prompts, hw) -> tuple[dict[int, PromptInput], list[RejectedPrompt]]:
        accepted: dict[int, PromptInput] = {}
        rejected: list[RejectedPrompt] = []
        for p in prompts:
            try:
                if int(p.instrument_id) in accepted:
                    raise PromptError(f"another prompt for instrument {p.instrument_id} already applies to this frame")
                new_ids = [i for i, q in accepted.items() if q.mode == PromptMode.NEW]
                self.check_prompt(p, hw, new_ids)
                accepted[int(p.instrument_id)] = p
            except Sam2sError as exc:
                rejected.append(RejectedPrompt(p, str(exc)))
        return accepted, rejected

    def _start_instrument(self, p: PromptInput) -> None:
        old = self._instruments.get(int(p.instrument_id))
        state = InstrumentState(
            int(p.instrument_id),
            InstrumentMemory(self.cfg.divemem),
            class_probs=deque(maxlen=self.cfg.class_smoothing_frames),
        )
        if old is not None:
            state.class_id, state.class_name = old.class_id, old.class_name
        self._instruments[state.instrument_id] = state

    def _apply_prompt_class(self, p: PromptInput) -> None:
        state = self._instruments[int(p.instrument_id)]
        if p.class_id is not None:
            state.class_id = int(p.class_id)
            state.class_name = p.class_name or self.cfg.class_vocabulary[p.class_id - 1]
        elif p.class_name:
            names = list(self.cfg.class_vocabulary)
            state.class_id = names.index(p.class_name) + 1 if p.class_name in names else -1
            state.class_name = p.class_name

    # ---- network calls ---------------------------------------------------------------
    def _decode_prompted(self, pix_feat, feats, group: list[PromptInput], hw, prev_logits=None) -> DecoderOutput:
        """Decode instruments that share one prompt kind and point count (one batched call)."""
        if group[0].mask is not None:
            masks = torch.cat([prompt_ops.to_model_mask(p.mask, self.image_size, self.device) for p in group])
            return self.backend.decode_mask_prompt(feats, masks)
        pts = [prompt_ops.to_model_points(p, hw, self.image_size, self.device) for p in group]
        coords, labels = torch.cat([c for c, _ in pts]), torch.cat([lab for _, lab in pts])
        # SAM 2.1: multimask output for 0 or 1 point (a box counts as 2 points)
        multimask = coords.shape[1] <= 1
        return self.backend.decode_masks(pix_feat, feats, coords, labels, prev_logits, multimask)

    def _track_existing(self, feats: ImageFeatures, accepted, hw, timings) -> dict[int, _FrameOutput]:
        ids = [i for i in self.instrument_ids if not (i in accepted and accepted[i].mode != PromptMode.REFINE)]
        if not ids:
            return {}
        t0 = time.perf_counter()
        if len(ids) > 1 and self._memory_attention_per_instrument():
            att = concat_attended([self.backend.attend_memory(feats, self._memory_inputs([i])) for i in ids])
        else:
            att = self.backend.attend_memory(feats, self._memory_inputs(ids))
        pix = att.pix_feat
        timings["memory_attention"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tracked = _rows(self._decode_tracked(att, feats), False)
        out = dict(zip(ids, tracked))
        for row, iid in enumerate(ids):
            p = accepted.get(iid)
            if p is None:
                continue
            if p.mask is not None:
                dec = self._decode_prompted(None, feats, [p], hw)
            else:
                prev = out[iid].low_res[None].clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
                dec = self._decode_prompted(pix[row : row + 1], feats, [p], hw, prev)
            out[iid] = _rows(dec, True)[0]
            self._apply_prompt_class(p)
        timings["mask_decoder"] = time.perf_counter() - t0
        return out

    def _decode_tracked(self, att: AttendedMemory, feats: ImageFeatures) -> DecoderOutput:
        """Decoder on tracked frames: SAM 2.1 models without a prompt (multimask output),
        readout models with their readout prompt (single mask); where a readout finds nothing
        the mask is emptied and the object score set to ABSENT_SCORE (sam2s_ros.model.readout)."""
        b = att.pix_feat.shape[0]
        if att.prompt is None:
            coords = torch.zeros(b, 1, 2, device=self.device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=self.device)
            return self.backend.decode_masks(att.pix_feat, feats, coords, labels, None, True)
        p = att.prompt
        out = self.backend.decode_masks(att.pix_feat, feats, p.point_coords, p.point_labels, p.mask_input, False)
        present = p.present.to(self.device)
        return DecoderOutput(
            torch.where(
                present[:, None, None, None], out.low_res_masks, torch.full_like(out.low_res_masks, NO_OBJ_SCORE)
            ),
            out.ious,
            out.obj_ptrs,
            torch.where(present, out.object_score_logits, torch.full_like(out.object_score_logits, ABSENT_SCORE)),
        )

    def _start_from_prompts(self, feats: ImageFeatures, accepted, hw, timings) -> dict[int, _FrameOutput]:
        starting = [p for p in accepted.values() if p.mode != PromptMode.REFINE]
        groups: dict[tuple, list[PromptInput]] = {}
        for p in starting:
            n_pts = len(np.asarray(p.labels).reshape(-1)) + (2 if p.box is not None else 0)
            groups.setdefault(("mask", 0) if p.mask is not None else ("points", n_pts), []).append(p)
        out: dict[int, _FrameOutput] = {}
        t0 = time.perf_counter()
        for group in groups.values():
            pix = self.backend.no_memory_features(feats.feat_s2).expand(len(group), -1, -1, -1)
            rows = _rows(self._decode_prompted(pix, feats, group, hw), True)
            for p, r in zip(group, rows):
                out[int(p.instrument_id)] = r
                self._apply_prompt_class(p)
        if starting:
            timings["mask_decoder"] = timings.get("mask_decoder", 0.0) + time.perf_counter() - t0
        return out

    def _memory_attention_per_instrument(self) -> bool:
        """One memory-attention call per instrument (see TrackerConfig.memory_attention_batching)."""
        mode = self.cfg.memory_attention_batching
        return mode == "per_instrument" or (mode == "auto" and self.device.type == "cpu")

    def _memory_inputs(self, ids: list[int]) -> MemoryInputs:
        """Pad the memory banks of ``ids`` to common F frames and P pointers."""
        return build_memory_inputs(
            [self._instruments[i].memory for i in ids],
            self._frame_index,
            self.image_size // FEATURE_STRIDE,
            self.cfg.divemem.max_obj_ptrs,
            self.device,
        )

    # ---- memory + results ------------------------------------------------------------
    def _finish_frame(
        self, feats, outputs: dict[int, _FrameOutput], hw, timings
    ) -> tuple[list[InstrumentResult], Optional[np.ndarray]]:
        """Encode the frame's memories and build the results.

        Everything stays on the device up to one host copy per frame (transfer.to_host) of
        a [B, 2 + C] float32 table (IoU, object score, class probabilities) and either the
        [B, h, w] float32 decoder logits, when logits are returned
        (TrackerConfig.return_mask_logits; the masks are then upsampled on the host inside
        each mask's window), or the [B, H, W] bool masks and the [H, W] uint8 overlap owners.

        Returns:
            (results sorted by id, overlap owners or None: with logits or without instruments).
        """
        ids = sorted(outputs)
        if not ids:
            return [], None
        rows = [outputs[i] for i in ids]
        raw = torch.stack([o.low_res for o in rows])  # [B, 1, s, s]
        filled = fill_holes(raw, self.cfg.fill_hole_area)
        scores = torch.stack([o.object_score for o in rows])  # [B]
        t0 = time.perf_counter()
        maskmem, _ = self.backend.encode_memory(feats, self._mask_for_memory(raw, filled, rows), scores)
        timings["memory_encoder"] = time.perf_counter() - t0
        probs = self._class_probabilities([o.obj_ptr for o in rows])
        table = [torch.stack([o.iou for o in rows])[:, None], scores[:, None]]  # [B, 2 + C]
        if probs is not None:
            table.append(probs.detach().float())
        if self._return_logits():
            # the decoder's logits go to the host (64 KB per instrument at 512²) and the masks
            # are upsampled there inside each mask's window (sam2s_ros.tracking.upsample);
            # the label image resolves overlaps from the same windows
            low_np, small_np = transfer.to_host(filled[:, 0], torch.cat(table, 1))
            logits = [UpsampledLogits(low_np[row], hw) for row in range(len(ids))]
            masks_boxes = [lg.binary_mask(self.cfg.mask_threshold) for lg in logits]
            owner_np = None
        else:
            # the whole frame on the device; one [H, W] uint8 owner map resolves overlaps
            video_logits = upsample_logits(filled[:, 0], hw)  # [B, H, W]
            masks = video_logits > self.cfg.mask_threshold
            masks_np, small_np, owner_np = transfer.to_host(
                masks, torch.cat(table, 1), overlap_owner(video_logits, masks)
            )
            logits = [None] * len(ids)
            masks_boxes = [(m, mask_bbox(m)) for m in masks_np]
        results = []
        for row, (iid, o) in enumerate(zip(ids, rows)):
            state = self._instruments[iid]
            iou, score = float(small_np[row, 0]), float(small_np[row, 1])
            if o.is_cond:
                state.memory.add_conditioning(self._frame_index, maskmem[row], o.obj_ptr, score, iou)
            else:
                state.memory.add_tracked(self._frame_index, maskmem[row], o.obj_ptr, score, iou, select=False)
            if probs is not None and score > 0:
                state.class_probs.append(torch.from_numpy(small_np[row, 2:].copy()))
            results.append(self._result(state, o.is_cond, iou, score, *masks_boxes[row], logits[row]))
        select_long_term([self._instruments[i].memory for i in ids])
        return results, owner_np

    def _mask_for_memory(self, raw: torch.Tensor, filled: torch.Tensor, rows: list[_FrameOutput]) -> torch.Tensor:
        """[B, 1, S, S] memory-encoder mask input (SAM 2.1 scaling of the mask)."""
        size = (self.image_size, self.image_size)
        cond = tuple(o.is_cond for o in rows)
        # SAM 2.1: conditioning frames encode the (hole-filled) binarised mask, tracked frames the sigmoid
        binary = (
            (F.interpolate(filled, size=size, mode="bilinear", align_corners=False) > 0).float() if any(cond) else None
        )
        soft = None if all(cond) else torch.sigmoid(F.interpolate(raw, size=size, mode="bilinear", align_corners=False))
        if soft is None:
            mask = binary
        elif binary is None:
            mask = soft
        else:
            mask = torch.where(transfer.constant(cond, torch.bool, self.device)[:, None, None, None], binary, soft)
        return mask * MEM_MASK_SCALE + MEM_MASK_BIAS

    def _return_logits(self) -> bool:
        flag = self.cfg.return_mask_logits
        return self.device.type == "cpu" if flag is None else bool(flag)

    def _class_probabilities(self, obj_ptrs: list[torch.Tensor]) -> Optional[torch.Tensor]:
        if self.semantic_head is None:
            return None
        return self.semantic_head(torch.stack(obj_ptrs))  # [B, C], on the tracker's device

    def _result(
        self,
        state: InstrumentState,
        is_cond: bool,
        iou: float,
        score: float,
        mask: np.ndarray,
        bbox: tuple[int, int, int, int],
        logits: Optional[UpsampledLogits],
    ) -> InstrumentResult:
        res = InstrumentResult(state.instrument_id, mask, logits, iou, score, bbox, is_conditioning_frame=is_cond)
        if state.class_probs:
            mean = torch.stack(list(state.class_probs)).mean(0)
            k = int(mean.argmax())
            res.class_id, res.class_name, res.class_score = k + 1, self.cfg.class_vocabulary[k], float(mean[k])
            res.class_source = ClassSource.MODEL
        elif state.class_id > 0 or state.class_name:
            res.class_id, res.class_name, res.class_score = state.class_id, state.class_name, 1.0
            res.class_source = ClassSource.PROMPT
        return res

    # ---- persistence -----------------------------------------------------------------
    def _state_identity(self) -> tracker_state.StateIdentity:
        return tracker_state.StateIdentity(self.cfg.model_size, self.image_size, self.checkpoint_sha256)

    def state_spec(self) -> tracker_state.StateSpec:
        """What a state file must match to be loaded into this tracker (identity, shapes, limits)."""
        return tracker_state.StateSpec(
            identity=self._state_identity(),
            divemem=self.cfg.divemem,
            feat_hw=self.image_size // FEATURE_STRIDE,
            max_instruments=self.cfg.max_instruments,
            num_classes=self.semantic_head.num_classes if self.semantic_head is not None else 0,
            class_smoothing_frames=self.cfg.class_smoothing_frames,
            device=self.device,
        )

    def export_state(self) -> dict:
        """The whole state as plain values and CPU tensors (for :func:`tracking.state.save_state`).

        Cheap on CPU (tensors are shared, never changed in place): call it under the lock
        that serialises the tracker, then serialise and write the result without it.
        """
        return tracker_state.state_dict(self._state_identity(), self._frame_index, self._instruments.values())

    def read_state(self, path: str) -> tracker_state.LoadedState:
        """Read and completely validate a state file; the tracker is not touched (no lock needed).

        Raises:
            StateFileError: see :func:`sam2s_ros.tracking.state.load_state`.
        """
        return tracker_state.load_state(path, self.state_spec())

    def adopt_state(self, loaded: tracker_state.LoadedState) -> list[int]:
        """Replace the tracker state by a validated one (from :meth:`read_state`); returns the ids."""
        self._instruments, self._frame_index = dict(loaded.instruments), loaded.frame_index
        return self.instrument_ids

    def save_state(self, path: str, overwrite: bool = True) -> None:
        """Write every instrument's memory bank and the frame counter to ``path`` (atomic torch file).

        Raises:
            StateFileError: the file cannot be written, is not a regular file, or exists and
                ``overwrite`` is False.
        """
        tracker_state.save_state(path, self.export_state(), overwrite)

    def load_state(self, path: str) -> list[int]:
        """Replace the tracker state by one saved with :meth:`save_state`; returns the ids.

        Raises:
            StateFileError: missing/corrupt/invalid file, not a tracker state, or saved with
                another model size, image size or checkpoint (the current state is then unchanged).
        """
        return self.adopt_state(self.read_state(path))

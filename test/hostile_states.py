"""Hostile tracker state files: a valid state, changed in one way each.

Shared by the validator's unit tests (test/test_state.py) and the node battery over DDS
(test/test_node_hostile.py). Each case is (name, build, fragment): ``build(valid)`` returns
the file content (bytes) from a valid state dict, ``fragment`` must appear in the refusal.
"""

from __future__ import annotations

import copy
import io
import math
import os
from typing import Any, Callable

import torch

Case = tuple[str, Callable[[dict], bytes], str]


def encode(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _Exploit:
    """Pickled code: unpickling would run a shell command (weights_only refuses it)."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/sam2s_pwned",))


def _changed(change: Callable[[dict], Any]) -> Callable[[dict], bytes]:
    """build(): a deep copy of the valid state with ``change`` applied in place (or its return value)."""

    def build(valid: dict) -> bytes:
        state = copy.deepcopy(valid)
        result = change(state)
        return encode(state if result is None else result)

    return build


def _first(state: dict) -> dict:
    return state["instruments"][0]


def _entry(state: dict) -> dict:
    return _first(state)["memory"]["cond"][0]


def _set(obj: dict, key: str, value: Any) -> None:
    obj[key] = value


def _pop(obj: dict, key: str) -> None:
    del obj[key]


def _maskmem_like(state: dict, shape=None, dtype=None, fill=None) -> torch.Tensor:
    t = _entry(state)["maskmem"]
    out = torch.zeros(shape or tuple(t.shape), dtype=dtype or t.dtype)
    if fill is not None:
        out.fill_(fill)
    return out


def state_file_cases(max_instruments: int, max_cond_frames: int) -> list[Case]:
    """Every hostile state content, for a node/tracker with these limits and no semantic head."""
    return [
        ("missing_top_key", _changed(lambda s: _pop(s, "frame_index")), "missing key(s) frame_index"),
        ("missing_instrument_key", _changed(lambda s: _pop(_first(s), "memory")), "missing key(s) memory"),
        ("missing_entry_key", _changed(lambda s: _pop(_entry(s), "maskmem")), "missing key(s) maskmem"),
        ("missing_memory_part", _changed(lambda s: _pop(_first(s)["memory"], "short_term")), "short_term"),
        ("unknown_top_key", _changed(lambda s: _set(s, "surprise", 1)), "unknown key(s) 'surprise'"),
        ("instrument_id_zero", _changed(lambda s: _set(_first(s), "instrument_id", 0)), "outside 1..65535"),
        ("instrument_id_above_uint16", _changed(lambda s: _set(_first(s), "instrument_id", 70000)), "outside 1..65535"),
        ("instrument_id_negative", _changed(lambda s: _set(_first(s), "instrument_id", -3)), "outside 1..65535"),
        ("instrument_id_string", _changed(lambda s: _set(_first(s), "instrument_id", "1")), "expected an integer"),
        ("instrument_id_float", _changed(lambda s: _set(_first(s), "instrument_id", 1.5)), "expected an integer"),
        (
            "duplicate_instrument_ids",
            _changed(lambda s: s["instruments"].append(copy.deepcopy(s["instruments"][0]))),
            "appears twice",
        ),
        (
            "maskmem_wrong_shape",
            _changed(lambda s: _set(_entry(s), "maskmem", _maskmem_like(s, shape=(64, 3, 3)))),
            "maskmem: shape (64, 3, 3)",
        ),
        (
            "maskmem_wrong_channels",
            _changed(lambda s: _set(_entry(s), "maskmem", _entry(s)["maskmem"][:32].clone())),
            "maskmem: shape (32,",
        ),
        ("obj_ptr_wrong_shape", _changed(lambda s: _set(_entry(s), "obj_ptr", torch.zeros(128))), "obj_ptr: shape"),
        ("obj_ptr_not_a_tensor", _changed(lambda s: _set(_entry(s), "obj_ptr", [0.0] * 256)), "expected a tensor"),
        (
            "maskmem_integer_dtype",
            _changed(lambda s: _set(_entry(s), "maskmem", _maskmem_like(s, dtype=torch.int64))),
            "dense float",
        ),
        (
            "maskmem_nan",
            _changed(lambda s: _set(_entry(s), "maskmem", _maskmem_like(s, fill=math.nan))),
            "NaN or infinite",
        ),
        (
            "maskmem_sparse",
            _changed(lambda s: _set(_entry(s), "maskmem", _maskmem_like(s, dtype=torch.float32).to_sparse())),
            "dense float",
        ),
        ("frame_index_negative", _changed(lambda s: _set(s, "frame_index", -5)), "frame_index: -5 is outside"),
        ("frame_index_huge", _changed(lambda s: _set(s, "frame_index", 2**70)), "frame_index"),
        ("entry_frame_negative", _changed(lambda s: _set(_entry(s), "frame_idx", -1)), "frame_idx: -1 is outside"),
        (
            "entry_frame_after_frame_index",
            _changed(lambda s: _set(_entry(s), "frame_idx", s["frame_index"] + 10)),
            "is not before the state's frame_index",
        ),
        ("object_score_nan", _changed(lambda s: _set(_entry(s), "object_score", math.nan)), "finite number"),
        ("iou_string", _changed(lambda s: _set(_entry(s), "iou", "high")), "finite number"),
        (
            "too_many_instruments",
            _changed(lambda s: _too_many_instruments(s, max_instruments)),
            "max_instruments",
        ),
        (
            "too_many_cond_frames",
            _changed(lambda s: _too_many_cond(s, max_cond_frames)),
            "divemem.max_cond_frames",
        ),
        ("no_cond_frame", _changed(lambda s: _set(_first(s)["memory"], "cond", [])), "no conditioning frame"),
        (
            "class_probs_without_semantic_head",
            _changed(lambda s: _set(_first(s), "class_probs", [torch.ones(7) / 7])),
            "no trained semantic head",
        ),
        (
            "recent_ptr_not_a_pair",
            _changed(lambda s: _set(_first(s)["memory"], "recent_ptrs", [(0,)])),
            "(frame_idx, obj_ptr) pair",
        ),
        ("class_name_too_long", _changed(lambda s: _set(_first(s), "class_name", "x" * 5000)), "class_name"),
        ("class_id_above_int32", _changed(lambda s: _set(_first(s), "class_id", 2**40)), "class_id"),
        ("instruments_not_a_list", _changed(lambda s: _set(s, "instruments", {"1": 1})), "expected a list"),
        ("memory_not_a_dict", _changed(lambda s: _set(_first(s), "memory", [1, 2])), "expected a dict"),
        ("other_version", _changed(lambda s: _set(s, "version", 99)), "version 99 is not supported"),
        ("other_image_size", _changed(lambda s: _set(s, "image_size", s["image_size"] * 2)), "image_size"),
        ("other_format", _changed(lambda s: _set(s, "format", "pytorch_lightning")), "not a sam2s_ros tracker state"),
        ("top_level_list", _changed(lambda s: [s]), "not a sam2s_ros tracker state"),
        ("not_a_torch_file", lambda valid: b"this is not a torch file" * 10, "corrupt or unsafe"),
        ("empty_file", lambda valid: b"", "corrupt or unsafe"),
        ("truncated_file", lambda valid: encode(valid)[: len(encode(valid)) // 2], "corrupt or unsafe"),
        ("pickled_code", lambda valid: encode({"format": _Exploit()}), "corrupt or unsafe"),
    ]


def _too_many_instruments(state: dict, max_instruments: int) -> None:
    template = state["instruments"][0]
    state["instruments"] = []
    for iid in range(1, max_instruments + 2):
        inst = copy.deepcopy(template)
        inst["instrument_id"] = iid
        state["instruments"].append(inst)


def _too_many_cond(state: dict, max_cond_frames: int) -> None:
    memory = _first(state)["memory"]
    entry = memory["cond"][0]
    memory["cond"] = []
    for k in range(max_cond_frames + 1):
        e = copy.deepcopy(entry)
        e["frame_idx"] = k
        memory["cond"].append(e)
    state["frame_index"] = max(state["frame_index"], max_cond_frames + 2)

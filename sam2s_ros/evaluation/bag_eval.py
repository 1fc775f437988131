"""Bag evaluation behind ``sam2s eval`` and ``sam2s demo``: DAVIS J&F and latency of an output bag.

The matching of output messages to ground-truth frames and the scoring protocol are described
in :mod:`sam2s_ros.tools.eval_cmd` (the command's help text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from sam2s_ros import codec
from sam2s_ros.data import bags, input_bag
from sam2s_ros.data.frames import LABEL_EXTS, list_image_files, read_label_image
from sam2s_ros.errors import BagError, ConfigError, FrameError
from sam2s_ros.evaluation import davis
from sam2s_ros.tracking.latency import latency_stats_ms

DEFAULT_MASKS_TOPIC = "/sam2s/masks"
MAX_LISTED_MISSING = 50  # missing frame indices listed in the report


@dataclass
class EvalOptions:
    """Inputs of :func:`evaluate` (the CLI's arguments; see ``sam2s eval --help``).

    Attributes:
        output_bag: the node's output bag.
        gt: ground-truth bag or folder of label images.
        masks_topic: InstrumentMaskArray topic of the output bag.
        gt_topic: label image topic when ``gt`` is a bag.
        instruments: ids to score, or None (those in the start frame's ground truth).
        start_frame: index of the prompted frame; earlier frames are ignored.
        max_frames: score at most this many ground-truth frames from ``start_frame`` on
            (all when None).
        keep_first_last: count the start frame and the last frame.
        void_label: ground-truth label of pixels ignored in J and F, or None.
        rate_hz / start_time_s: stamp grid of a ground-truth folder (Hz, seconds).
        bound_th: DAVIS boundary tolerance (fraction of the image diagonal).
    """

    output_bag: Path
    gt: Path
    masks_topic: str = DEFAULT_MASKS_TOPIC
    gt_topic: str = input_bag.DEFAULT_GT_TOPIC
    instruments: Optional[list[int]] = None
    start_frame: int = 0
    max_frames: Optional[int] = None
    keep_first_last: bool = False
    void_label: Optional[int] = None
    rate_hz: float = input_bag.DEFAULT_RATE_HZ
    start_time_s: float = input_bag.DEFAULT_START_TIME_S
    bound_th: float = davis.BOUND_TH


@dataclass
class GtFrame:
    """One ground-truth frame.

    Attributes:
        index: frame index (file index in a folder, message index in a bag).
        stamp_ns: the frame's stamp in nanoseconds since the epoch.
        labels: [H, W] uint8/uint16 label image, 0 = background, k = instrument k.
    """

    index: int
    stamp_ns: int
    labels: np.ndarray


@dataclass
class Predictions:
    """Tracking output read from a bag.

    Attributes:
        masks: ``{stamp_ns: {instrument_id: bit-packed mask}}`` (``np.packbits`` of the
            flattened [H, W] bool mask; the last message wins for a repeated stamp).
        shapes: ``{stamp_ns: (H, W)}`` of the masks in pixels.
        latencies_s: [N] ``latency`` of every message in seconds.
        duplicates: number of messages whose stamp was seen before.
    """

    masks: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    duplicates: int = 0

    def mask(self, stamp: int, instrument_id: int, hw: tuple[int, int]) -> np.ndarray:
        """[H, W] bool prediction of an instrument on a frame (all False when absent)."""
        packed = self.masks.get(stamp, {}).get(instrument_id)
        if packed is None:
            return np.zeros(hw, bool)
        return np.unpackbits(packed, count=hw[0] * hw[1]).reshape(hw).astype(bool)


def load_predictions(path: Path, topic: str) -> Predictions:
    """Read the masks and latencies of an output bag, keyed by header stamp.

    Args:
        path: the node's output bag.
        topic: its ``sam2s_ros/msg/InstrumentMaskArray`` topic.

    Returns:
        :class:`Predictions`.

    Raises:
        BagError: unreadable bag, missing topic or wrong type, masks not published, or a
            mask that is not mono8 or does not fit its frame. Masks cropped to their ROI
            (the node's default) are pasted back into the full frame at their offsets.
    """
    preds = Predictions()
    for item in bags.read_messages(path, [topic]):
        if item.msgtype != codec.MASK_ARRAY_TYPE:
            raise BagError(f"{topic} carries {item.msgtype}, not {codec.MASK_ARRAY_TYPE}")
        msg = item.msg
        stamp = codec.stamp_to_ns(msg.header.stamp)
        preds.latencies_s.append(float(msg.latency))
        preds.duplicates += stamp in preds.masks
        frame: dict[int, np.ndarray] = {}
        hw = (int(msg.image_height), int(msg.image_width))
        for inst in msg.instruments:
            if not codec.mask_published(inst):
                raise BagError(
                    f"instrument {inst.instrument_id} at stamp {stamp} has no mask image (mask publishing off?)"
                )
            try:
                mask = codec.instrument_mask(inst, hw)  # cropped masks are pasted into the full frame
            except FrameError as err:
                raise BagError(f"stamp {stamp}: {err}") from None
            frame[int(inst.instrument_id)] = np.packbits(mask.reshape(-1))
            preds.shapes[stamp] = hw
        preds.masks[stamp] = frame
    return preds


def iter_gt_frames(opt: EvalOptions) -> Iterator[GtFrame]:
    """Read ground-truth frames from ``opt.start_frame`` on, at most ``opt.max_frames`` of them.

    Args:
        opt: options; ``gt`` is a bag (frames = messages on ``gt_topic``) or a folder
            (frames = label images sorted by name, stamps on the make-bag grid).

    Yields:
        :class:`GtFrame` in frame order.

    Raises:
        BagError: unreadable ground truth, or a colour image where labels are expected.
    """
    stop = None if opt.max_frames is None else opt.start_frame + opt.max_frames
    if bags.is_bag(opt.gt):
        for index, item in enumerate(bags.read_messages(opt.gt, [opt.gt_topic])):
            if stop is not None and index >= stop:
                return
            if index >= opt.start_frame:
                labels = codec.image_to_array(item.msg)
                if labels.ndim != 2:
                    raise BagError(f"{opt.gt_topic} holds {item.msg.encoding} images, not label images")
                yield GtFrame(index, codec.stamp_to_ns(item.msg.header.stamp), labels)
        return
    if not opt.gt.is_dir():
        raise BagError(f"ground truth {opt.gt} is neither a bag nor a folder")
    files = list_image_files(opt.gt, LABEL_EXTS)
    if not files:
        raise BagError(f"no label images in {opt.gt}")
    for index, path in enumerate(files[opt.start_frame : stop], start=opt.start_frame):
        stamp = input_bag.stamp_ns(index, opt.rate_hz, opt.start_time_s)
        yield GtFrame(index, stamp, read_label_image(path))


def _check_eval_options(opt: EvalOptions) -> None:
    if not opt.output_bag.exists():
        raise BagError(f"output bag {opt.output_bag} does not exist")
    if not opt.gt.exists():
        raise BagError(f"ground truth {opt.gt} does not exist")
    if opt.start_frame < 0:
        raise ConfigError(f"--start-frame must be >= 0, got {opt.start_frame}")
    if opt.max_frames is not None and opt.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {opt.max_frames}")
    if opt.rate_hz <= 0:
        raise ConfigError(f"--rate must be > 0 Hz, got {opt.rate_hz}")


def evaluate(opt: EvalOptions) -> dict[str, Any]:
    """Score an output bag against ground truth (see the module docstring).

    Args:
        opt: see :class:`EvalOptions`.

    Returns:
        The report (JSON-ready; NaN values as None): ``protocol``, ``frames`` (counts,
        missing frame indices), ``instruments`` (per id: J/F statistics, J&F, per-frame
        values), ``overall`` (J, F, J&F averaged over instruments), ``latency_ms``.

    Raises:
        BagError: unreadable bag, missing topic, masks of another size than the ground
            truth, no ground-truth frame, or no output stamp matching any ground truth.
        ConfigError: bad option values, or too few frames for the protocol.
    """
    _check_eval_options(opt)
    preds = load_predictions(opt.output_bag, opt.masks_topic)
    ids: Optional[list[int]] = list(opt.instruments) if opt.instruments else None
    per_frame: dict[int, tuple[list[float], list[float]]] = {}
    frame_indices: list[int] = []
    missing: list[int] = []
    matched_stamps: set[int] = set()
    gt_stamps: list[int] = []
    hw: tuple[int, int] = (0, 0)
    for gt in iter_gt_frames(opt):
        if ids is None:
            ignore = () if opt.void_label is None else (opt.void_label,)
            ids = [int(i) for i in np.unique(gt.labels) if i != 0 and int(i) not in ignore]
            if not ids:
                raise ConfigError(f"no instrument in the ground truth of start frame {gt.index}; pass --instruments")
        hw = gt.labels.shape
        _score_frame(opt, preds, gt, ids, per_frame)
        frame_indices.append(gt.index)
        gt_stamps.append(gt.stamp_ns)
        if gt.stamp_ns in preds.masks:
            matched_stamps.add(gt.stamp_ns)
        else:
            missing.append(gt.index)
    if not frame_indices:
        raise BagError(f"no ground-truth frame at or after frame {opt.start_frame} in {opt.gt}")
    if preds.masks and not matched_stamps:
        raise BagError(_no_match_hint(opt, preds, "no output stamp matches a ground-truth frame"))
    between = [s for s in preds.masks if min(gt_stamps) < s < max(gt_stamps) and s not in matched_stamps]
    if between and not bags.is_bag(opt.gt):  # a folder is dense: every stamp in its range is a frame
        raise BagError(_no_match_hint(opt, preds, f"{len(between)} output stamp(s) fall between ground-truth frames"))
    return _report(opt, preds, ids or [], per_frame, frame_indices, missing, matched_stamps, hw)


def _score_frame(
    opt: EvalOptions,
    preds: Predictions,
    gt: GtFrame,
    ids: list[int],
    per_frame: dict[int, tuple[list[float], list[float]]],
) -> None:
    hw = gt.labels.shape
    pred_hw = preds.shapes.get(gt.stamp_ns)
    if pred_hw is not None and pred_hw != hw:
        raise BagError(f"frame {gt.index}: output masks are {pred_hw[1]}x{pred_hw[0]}, ground truth is {hw[1]}x{hw[0]}")
    void = gt.labels == opt.void_label if opt.void_label is not None else None
    for inst in ids:
        pred = preds.mask(gt.stamp_ns, inst, hw)
        target = gt.labels == inst
        js, fs = per_frame.setdefault(inst, ([], []))
        js.append(davis.jaccard(pred, target, void))
        fs.append(davis.f_measure(pred, target, void, opt.bound_th))


def _no_match_hint(opt: EvalOptions, preds: Predictions, problem: str) -> str:
    first = min(preds.masks)
    hint = (
        f"with a ground-truth folder, frame i must have stamp {opt.start_time_s:g} s + i / {opt.rate_hz:g} Hz "
        "(pass --start-time/--rate, or give the input bag as --gt)"
        if not bags.is_bag(opt.gt)
        else f"check --gt-topic {opt.gt_topic}"
    )
    return f"{problem} (first output stamp {first} ns); {hint}"


def _finite(value: float) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _stats_dict(stats: davis.Statistics) -> dict[str, Optional[float]]:
    return {"mean": _finite(stats.mean), "recall": _finite(stats.recall), "decay": _finite(stats.decay)}


def _report(
    opt: EvalOptions,
    preds: Predictions,
    ids: list[int],
    per_frame: dict[int, tuple[list[float], list[float]]],
    frame_indices: list[int],
    missing: list[int],
    matched: set[int],
    hw: tuple[int, int],
) -> dict[str, Any]:
    drop = not opt.keep_first_last
    results: dict[int, davis.ObjectEvaluation] = {}
    instruments: dict[str, Any] = {}
    for inst in ids:
        js, fs = per_frame[inst]
        try:
            res = davis.aggregate(js, fs, drop_first_last=drop)
        except ValueError as err:
            raise ConfigError(f"instrument {inst}: {err} (use --keep-first-last for very short sequences)") from err
        results[inst] = res
        instruments[str(inst)] = {
            "J": _stats_dict(res.J),
            "F": _stats_dict(res.F),
            "JF": _finite(res.jf),
            "frames_counted": int(len(res.frames)),
            "per_frame": {
                "frame": [frame_indices[k] for k in res.frames],
                "J": [float(v) for v in res.j],
                "F": [float(v) for v in res.f],
            },
        }
    summary = davis.summarize(results)
    output_ids = sorted({i for frame in preds.masks.values() for i in frame})
    return {
        "output_bag": str(opt.output_bag),
        "gt": str(opt.gt),
        "protocol": {
            "metric": "DAVIS J&F (Perazzi et al. CVPR 2016; DAVIS 2017 evaluation code)",
            "bound_th": opt.bound_th,
            "bound_pix": davis.boundary_tolerance_px(*hw, bound_th=opt.bound_th),
            "drop_first_last": drop,
            "start_frame": opt.start_frame,
            "void_label": opt.void_label,
            "matching": "header stamp"
            if bags.is_bag(opt.gt)
            else f"frame i <-> stamp {opt.start_time_s:g} s + i / {opt.rate_hz:g} Hz",
        },
        "frames": {
            "gt": len(frame_indices),
            "with_output": len(matched),
            "missing_in_output": len(missing),
            "missing_indices": missing[:MAX_LISTED_MISSING],
            "missing_scored_as": "empty prediction",
            "output_messages": len(preds.latencies_s),
            "output_unmatched": len(preds.masks) - len(matched),
            "output_duplicate_stamps": preds.duplicates,
        },
        "instruments": instruments,
        "output_instruments_not_scored": [i for i in output_ids if i not in ids],
        "overall": {
            "J": _finite(summary.j_mean),
            "F": _finite(summary.f_mean),
            "JF": _finite(summary.jf_mean),
            "instruments": summary.num_objects,
        },
        "latency_ms": latency_stats_ms(preds.latencies_s),
    }


def _fmt(value: Optional[float]) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def _short_list(values: list[int], total: int, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if total > limit else ''}]"


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of a report from :func:`evaluate`."""
    frames, proto = report["frames"], report["protocol"]
    heads = ("J mean", "J rec", "J dec", "F mean", "F rec", "F dec", "J&F")
    lines = [
        f"{report['output_bag']} vs {report['gt']} ({proto['matching']})",
        f"{'instrument':>10}  " + "  ".join(f"{h:>6}" for h in heads) + "  frames",
    ]
    for inst, res in report["instruments"].items():
        j, f = res["J"], res["F"]
        lines.append(
            f"{inst:>10}  {_fmt(j['mean'])}  {_fmt(j['recall'])}  {_fmt(j['decay'])}  {_fmt(f['mean'])}  "
            f"{_fmt(f['recall'])}  {_fmt(f['decay'])}  {_fmt(res['JF'])}  {res['frames_counted']}"
        )
    ov = report["overall"]
    lines.append(
        f"{'overall':>10}  {_fmt(ov['J'])}  {'':>6}  {'':>6}  {_fmt(ov['F'])}  {'':>6}  {'':>6}  {_fmt(ov['JF'])}"
    )
    dropped = "first and last frame not counted" if proto["drop_first_last"] else "all frames counted"
    lines.append(
        f"frames: {frames['gt']} ground truth from frame {proto['start_frame']} ({dropped}), "
        f"{frames['with_output']} with output"
    )
    if frames["missing_in_output"]:
        lines.append(
            f"WARNING: {frames['missing_in_output']} ground-truth frame(s) have no output and were scored as empty "
            f"predictions: {_short_list(frames['missing_indices'], frames['missing_in_output'])}"
        )
    if frames["output_unmatched"]:
        lines.append(f"note: {frames['output_unmatched']} output message(s) match no ground-truth frame")
    lat = report["latency_ms"]
    if lat:
        lines.append(
            f"latency ms: n={lat['count']} mean {lat['mean']:.1f}  p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  "
            f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}"
        )
    else:
        lines.append("latency ms: no output messages")
    return "\n".join(lines)

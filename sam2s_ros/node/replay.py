"""Replay a bag into a running sam2s_node over DDS and record its outputs (``sam2s replay``).

The pacing modes are described in :mod:`sam2s_ros.tools.replay` (the command's help text).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from sam2s_ros.codec import (
    CLASS_ARRAY_TYPE,
    IMAGE_TYPE,
    MASK_ARRAY_TYPE,
    PROMPT_TYPE,
    image_to_array,
    result_from_masks_msg,
    stamp_to_ns,
)
from sam2s_ros.data import bags, input_bag
from sam2s_ros.errors import BagError, ConfigError

#: node outputs recorded: (topic relative to the node namespace, type)
RECORDED_OUTPUTS = (("masks", MASK_ARRAY_TYPE), ("instrument_classes", CLASS_ARRAY_TYPE), ("label_image", IMAGE_TYPE))


@dataclass
class ReplayOptions:
    """Inputs of :func:`replay_bag`.

    Attributes:
        bag: input bag folder.
        out: output bag folder to create.
        overlay: mp4 path to write, or None.
        namespace: namespace of the node (its topics are ``<namespace>/masks`` etc.).
        image_topic / prompt_topic: topics in the input bag to play ("" = the only
            Image / Prompt topic other than the ground truth).
        gt_topic: ground-truth topic of the bag (never played).
        mode: "lockstep" or "rate".
        speed: rate multiplier in rate mode.
        frame_timeout: seconds to wait for a frame's output (lockstep) or for the last
            outputs (rate).
        node_timeout: seconds to wait for the node to be up (its latched vocabulary).
        caption: text drawn on every overlay frame (e.g. "random weights").
        extra_prompts: prompts published after the first image (in addition to the bag's).
        node_check: called while waiting for the node; may raise (e.g. the node process died).
        storage: output bag storage ("mcap" or "sqlite3").
        force: replace existing outputs.
        progress: show a tqdm progress bar.
    """

    bag: Path
    out: Path
    overlay: Optional[Path] = None
    namespace: str = "/sam2s"
    image_topic: str = ""
    prompt_topic: str = ""
    gt_topic: str = input_bag.DEFAULT_GT_TOPIC
    mode: str = "lockstep"
    speed: float = 1.0
    frame_timeout: float = 60.0
    node_timeout: float = 120.0
    caption: str = ""
    extra_prompts: list = field(default_factory=list)
    node_check: Optional[object] = None
    storage: str = bags.DEFAULT_STORAGE
    force: bool = False
    progress: bool = True


@dataclass
class ReplaySummary:
    """What a replay did: frames sent, frames with an output, outputs recorded per topic."""

    frames_sent: int = 0
    frames_with_output: int = 0
    frames_timed_out: list[int] = field(default_factory=list)
    recorded: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0


def _pick_topic(topics: dict[str, str], wanted: str, msgtype: str, exclude: str, what: str) -> str:
    if wanted:
        if topics.get(wanted) != msgtype:
            raise BagError(f"{what} topic {wanted!r} with type {msgtype} is not in the bag (topics: {topics})")
        return wanted
    found = [t for t, ty in topics.items() if ty == msgtype and t != exclude]
    if len(found) != 1:
        raise BagError(f"cannot choose the {what} topic among {found or 'none'}; pass it explicitly")
    return found[0]


def _check_options(opt: ReplayOptions) -> tuple[str, Optional[str]]:
    if opt.mode not in ("lockstep", "rate"):
        raise ConfigError(f"mode must be lockstep or rate, got {opt.mode!r}")
    if opt.speed <= 0 or opt.frame_timeout <= 0 or opt.node_timeout <= 0:
        raise ConfigError("speed, frame_timeout and node_timeout must be positive")
    for path in (opt.out, opt.overlay):
        if path is not None and Path(path).exists() and not opt.force:
            raise ConfigError(f"{path} exists; pass --force to replace it")
    topics = bags.bag_topics(opt.bag)
    image_topic = _pick_topic(topics, opt.image_topic, IMAGE_TYPE, opt.gt_topic, "image")
    prompts = [t for t, ty in topics.items() if ty == PROMPT_TYPE]
    prompt_topic = (
        _pick_topic(topics, opt.prompt_topic, PROMPT_TYPE, "", "prompt") if (opt.prompt_topic or prompts) else None
    )
    return image_topic, prompt_topic


def _frames(opt: ReplayOptions, image_topic: str, prompt_topic: Optional[str]):
    """Yield (image raw bytes, image msg, [prompt raw bytes], log time ns) per frame."""
    topics = [image_topic] + ([prompt_topic] if prompt_topic else [])
    pending = None
    for m in bags.read_messages(opt.bag, topics=topics):
        if m.topic == image_topic:
            if pending is not None:
                yield pending
            pending = (m.raw, m.msg, [], m.log_time_ns)
        elif pending is not None:
            pending[2].append(m.raw)
    if pending is not None:
        yield pending


class _OverlayWriter:
    """Renders source frame + masks and appends it to an mp4 (OpenCV, mp4v codec)."""

    def __init__(self, path: Optional[Path], fps: float, caption: str):
        self.path, self.fps, self.caption, self._writer, self.frames = path, fps, caption, None, 0

    def write(self, image: np.ndarray, masks_msg) -> None:
        if self.path is None:
            return
        import cv2

        from sam2s_ros.tracking.overlay import render_overlay

        hw = image.shape[:2]
        frame = render_overlay(image, result_from_masks_msg(masks_msg, hw)) if masks_msg is not None else image.copy()
        if self.caption:
            cv2.putText(frame, self.caption, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 40, 40), 2, cv2.LINE_AA)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (hw[1], hw[0]))
            if not self._writer.isOpened():
                raise BagError(f"cannot open {self.path} for writing an mp4 video")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def _bag_fps(opt: ReplayOptions, image_topic: str) -> float:
    stamps = [m.log_time_ns for _, m in zip(range(30), bags.read_messages(opt.bag, [image_topic], deserialize=False))]
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return input_bag.DEFAULT_RATE_HZ
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)


def replay_bag(opt: ReplayOptions) -> ReplaySummary:
    """Play ``opt.bag`` into a running node, record its outputs, render the overlay.

    Raises:
        ConfigError: bad options or outputs that exist without ``force``.
        BagError: unreadable bag, ambiguous topics, or the node never came up.
    """
    image_topic, prompt_topic = _check_options(opt)
    for path in (opt.out, opt.overlay):
        if path is not None and Path(path).exists():
            bags.remove_bag(Path(path)) if Path(path).is_dir() else Path(path).unlink()
    from sam2s_ros.node.session import RosSession

    summary = ReplaySummary()
    t0 = time.monotonic()
    fps = _bag_fps(opt, image_topic)
    overlay = _OverlayWriter(opt.overlay, fps, opt.caption)
    with (
        bags.BagWriter(opt.out, storage=opt.storage) as out_bag,
        RosSession(opt.namespace, image_topic, prompt_topic, RECORDED_OUTPUTS) as ros,
    ):
        for rel, msgtype in RECORDED_OUTPUTS:
            out_bag.add_topic(ros.output_topic(rel), msgtype)
        ros.on_output = lambda topic, raw, t_ns: out_bag.write_raw(topic, t_ns, raw)
        ros.wait_for_node(opt.node_timeout, opt.node_check)
        play = _play_lockstep if opt.mode == "lockstep" else _play_rate
        play(opt, ros, _frames(opt, image_topic, prompt_topic), overlay, summary)
        summary.recorded = dict(out_bag.counts)
    overlay.close()
    summary.wall_time_s = time.monotonic() - t0
    return summary


def _progress(opt: ReplayOptions, total: Optional[int]):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="replay", disable=not opt.progress)


def _image_array(msg) -> np.ndarray:
    arr = image_to_array(msg)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if msg.encoding == "bgr8":
        arr = arr[..., ::-1]
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def _play_lockstep(opt, ros, frames, overlay: _OverlayWriter, summary: ReplaySummary) -> None:
    extra = list(opt.extra_prompts)
    with _progress(opt, None) as bar:
        for index, (raw, msg, prompt_raws, _) in enumerate(frames):
            stamp = stamp_to_ns(msg.header.stamp)
            ros.publish_image(raw)
            out = ros.wait_for_masks(stamp, opt.frame_timeout, lambda m: m is not None)
            if prompt_raws or extra:
                # prompts go after the node has the frame (a prompt before any image is refused);
                # stamped with it, they make the node track that held frame again with them
                ids = ros.publish_prompts(prompt_raws) + ros.publish_prompt_inputs(extra, msg.header)
                extra = []
                done = lambda m: m is not None and set(ids) <= {i.instrument_id for i in m.instruments}  # noqa: E731
                out = ros.wait_for_masks(stamp, opt.frame_timeout, done)
            summary.frames_sent += 1
            if out is None:
                summary.frames_timed_out.append(index)
            else:
                summary.frames_with_output += 1
            overlay.write(_image_array(msg), out)
            bar.update(1)


#: frames kept for the overlay in rate mode while their output may still come
RATE_MODE_PENDING = 64
#: rate mode: longest wait (s) for the node to have a frame before its prompts are sent
PROMPT_WAIT_S = 10.0


def _flush(pending: deque, ros, overlay: _OverlayWriter, summary: ReplaySummary, keep: int) -> None:
    """Write overlay frames of pending frames, oldest first, until ``keep`` remain."""
    while len(pending) > keep:
        index, stamp, image = pending.popleft()
        out = ros.masks_by_stamp.pop(stamp, None)
        summary.frames_with_output += out is not None
        if out is None:
            summary.frames_timed_out.append(index)
        overlay.write(image, out)


def _play_rate(opt, ros, frames, overlay: _OverlayWriter, summary: ReplaySummary) -> None:
    extra = list(opt.extra_prompts)
    pending: deque = deque()
    start_wall, start_log, last = None, None, None
    with _progress(opt, None) as bar:
        for index, (raw, msg, prompt_raws, log_ns) in enumerate(frames):
            if start_wall is None:
                start_wall, start_log = time.monotonic(), log_ns
            ros.spin_until(start_wall + (log_ns - start_log) / 1e9 / opt.speed)
            ros.publish_image(raw)
            last = stamp_to_ns(msg.header.stamp)
            if prompt_raws or extra:
                # wait (bounded) until the node has this frame: a prompt before any image is refused
                ros.wait_for_masks(last, min(opt.frame_timeout, PROMPT_WAIT_S), lambda m: m is not None)
                ros.publish_prompts(prompt_raws)
                ros.publish_prompt_inputs(extra, msg.header)
                extra = []
            pending.append((index, last, _image_array(msg)))
            summary.frames_sent += 1
            bar.update(1)
            _flush(pending, ros, overlay, summary, RATE_MODE_PENDING)
        if last is not None:
            ros.wait_for_masks(last, opt.frame_timeout, lambda m: m is not None)
    _flush(pending, ros, overlay, summary, 0)

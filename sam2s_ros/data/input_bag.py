"""Input bags for the node: frames (folder or video), ground-truth label images and prompts.

:func:`make_bag` writes the bag described in :mod:`sam2s_ros.tools.make_bag` (the command's
help text); :func:`stamp_ns` is the stamp grid that ``eval``, ``replay`` and ``demo`` share.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from sam2s_ros import codec
from sam2s_ros.data import bags
from sam2s_ros.data.frames import (
    FRAME_EXTS,
    LABEL_EXTS,
    image_size,
    iter_video,
    list_image_files,
    read_label_image,
    read_rgb,
)
from sam2s_ros.data.prompt_sampling import DEFAULT_CLICKS, PROMPT_KINDS, prompts_from_labels
from sam2s_ros.errors import BagError, PromptError

DEFAULT_START_TIME_S = 1_700_000_000  # first stamp, seconds since the epoch
DEFAULT_RATE_HZ = 25.0
DEFAULT_FRAME_ID = "endoscope_left_optical_frame"
DEFAULT_IMAGE_TOPIC = "/endoscope/left/image_raw"
DEFAULT_GT_TOPIC = "/endoscope/left/ground_truth"
DEFAULT_PROMPT_TOPIC = "/sam2s/prompts"
CUSTOM_DATA_KEY = "sam2s.make_bag"


def stamp_ns(index: int, rate_hz: float = DEFAULT_RATE_HZ, start_time_s: float = DEFAULT_START_TIME_S) -> int:
    """Stamp of frame ``index`` in a bag made by this tool.

    Args:
        index: frame index, >= 0.
        rate_hz: frame rate in Hz, > 0.
        start_time_s: stamp of frame 0 in seconds since the epoch.

    Returns:
        ``round(start_time_s * 1e9) + round(index * 1e9 / rate_hz)`` nanoseconds.
    """
    return int(round(start_time_s * codec.NS_PER_S)) + int(round(index * codec.NS_PER_S / rate_hz))


@dataclass
class MakeBagOptions:
    """Inputs of :func:`make_bag` (the CLI's arguments; see ``sam2s make-bag --help``).

    Attributes:
        src: frame folder or video file.
        out: bag folder to create.
        gt_dir: folder of label images, or None (images only).
        rate_hz: frame rate of the stamps in Hz.
        start_time_s: stamp of frame 0 in seconds since the epoch.
        frame_id: header frame_id of every message.
        image_topic / gt_topic / prompt_topic: topic names.
        prompt_frame: index of the frame whose ground truth gives the prompts.
        prompt_type: "box", "clicks", "mask", "none", or None (= "box" with ground
            truth, no prompts without).
        clicks: clicks per instrument for "clicks".
        seed: seed of the click sampling.
        void_label: label value that is not an instrument (no prompt), or None.
        storage: "mcap" or "sqlite3".
        max_frames: at most this many frames (all when None).
        force: replace an existing bag at ``out``.
    """

    src: Path
    out: Path
    gt_dir: Optional[Path] = None
    rate_hz: float = DEFAULT_RATE_HZ
    start_time_s: float = DEFAULT_START_TIME_S
    frame_id: str = DEFAULT_FRAME_ID
    image_topic: str = DEFAULT_IMAGE_TOPIC
    gt_topic: str = DEFAULT_GT_TOPIC
    prompt_topic: str = DEFAULT_PROMPT_TOPIC
    prompt_frame: int = 0
    prompt_type: Optional[str] = None
    clicks: int = DEFAULT_CLICKS
    seed: int = 0
    void_label: Optional[int] = None
    storage: str = bags.DEFAULT_STORAGE
    max_frames: Optional[int] = None
    force: bool = False


@dataclass
class MakeBagResult:
    """What :func:`make_bag` wrote.

    Attributes:
        path: the bag folder.
        frames: number of images written.
        image_hw: (H, W) of the frames in pixels.
        gt_frames: number of ground-truth images written.
        gt_encoding: "mono8"/"mono16", or "" without ground truth.
        prompt_ids: instrument ids that got a prompt.
        warnings: human-readable warnings (e.g. no ground truth).
    """

    path: Path
    frames: int
    image_hw: tuple[int, int]
    gt_frames: int = 0
    gt_encoding: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    frame_files: Optional[list[Path]]  # None for a video source
    gt_files: Optional[list[Path]]
    image_hw: tuple[int, int]
    gt_encoding: str
    prompt_type: str  # "none" when no prompts
    warnings: list[str]


def _check_options(opt: MakeBagOptions) -> None:
    if not opt.src.exists():
        raise BagError(f"source {opt.src} does not exist")
    if opt.rate_hz <= 0:
        raise BagError(f"--rate must be > 0 Hz, got {opt.rate_hz}")
    if opt.max_frames is not None and opt.max_frames < 1:
        raise BagError(f"--max-frames must be >= 1, got {opt.max_frames}")
    if opt.prompt_frame < 0:
        raise BagError(f"--prompt-frame must be >= 0, got {opt.prompt_frame}")
    if opt.clicks < 1:
        raise BagError(f"--clicks must be >= 1, got {opt.clicks}")
    if opt.storage not in bags.STORAGES:
        raise BagError(f"--storage must be one of {', '.join(bags.STORAGES)}")
    if opt.prompt_type is not None and opt.prompt_type not in (*PROMPT_KINDS, "none"):
        raise BagError(f"unknown prompt type {opt.prompt_type!r}")
    if opt.gt_dir is not None and not opt.gt_dir.is_dir():
        raise BagError(f"ground-truth folder {opt.gt_dir} does not exist")
    if opt.gt_dir is None and opt.prompt_type not in (None, "none"):
        raise BagError(f"--prompt-type {opt.prompt_type} needs ground truth (--gt-dir)")
    if opt.out.exists() and not opt.force:
        raise BagError(f"{opt.out} exists; pass --force to replace it")
    if opt.out.exists() and opt.out.resolve() == opt.src.resolve():
        raise BagError("the output bag cannot replace the source")


def _match_gt_files(opt: MakeBagOptions, frame_files: Optional[list[Path]]) -> list[Path]:
    assert opt.gt_dir is not None
    labels = list_image_files(opt.gt_dir, LABEL_EXTS)
    if not labels:
        raise BagError(f"no label images ({', '.join(LABEL_EXTS)}) in {opt.gt_dir}")
    if frame_files is None:  # video: by sorted order
        return labels[: opt.max_frames] if opt.max_frames else labels
    by_stem = {p.stem: p for p in labels}
    missing = [f.name for f in frame_files if f.stem not in by_stem]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BagError(
            f"{len(missing)} frame(s) have no mask in {opt.gt_dir} (same name, {'/'.join(LABEL_EXTS)}): {shown}"
        )
    return [by_stem[f.stem] for f in frame_files]


def _plan(opt: MakeBagOptions) -> _Plan:
    """Check every input before anything is written."""
    _check_options(opt)
    warnings: list[str] = []
    frame_files: Optional[list[Path]] = None
    image_hw: tuple[int, int]
    if opt.src.is_dir():
        frame_files = list_image_files(opt.src)[: opt.max_frames]
        if not frame_files:
            raise BagError(f"no frames ({', '.join(FRAME_EXTS)}) in {opt.src}")
        sizes = {image_size(f) for f in frame_files}
        if len(sizes) != 1:
            raise BagError(f"frames in {opt.src} differ in size: {sorted(sizes)}")
        image_hw = sizes.pop()
    else:
        image_hw = _first_video_frame_hw(opt.src)
    if opt.gt_dir is None:
        warnings.append("no --gt-dir: writing images only (no ground truth, no prompts)")
        return _Plan(frame_files, None, image_hw, "", "none", warnings)
    gt_files = _match_gt_files(opt, frame_files)
    max_id = 0
    for path in gt_files:
        labels = read_label_image(path)
        if labels.shape != image_hw:
            raise BagError(
                f"mask {path} is {labels.shape[1]}x{labels.shape[0]}, frames are {image_hw[1]}x{image_hw[0]}"
            )
        max_id = max(max_id, int(labels.max()))
    prompt_type = opt.prompt_type or "box"
    if prompt_type != "none":
        if opt.prompt_frame >= len(gt_files) or (frame_files is not None and opt.prompt_frame >= len(frame_files)):
            raise BagError(
                f"--prompt-frame {opt.prompt_frame} is past the last frame with a mask ({len(gt_files) - 1})"
            )
        _prompts(opt, read_label_image(gt_files[opt.prompt_frame]), prompt_type)  # fail early
    return _Plan(frame_files, gt_files, image_hw, "mono16" if max_id > 255 else "mono8", prompt_type, warnings)


def _first_video_frame_hw(src: Path) -> tuple[int, int]:
    first = next(iter_video(src, max_frames=1))
    return first.shape[0], first.shape[1]


def _prompts(opt: MakeBagOptions, labels: np.ndarray, prompt_type: str) -> list:
    ignore = () if opt.void_label is None else (opt.void_label,)
    try:
        return prompts_from_labels(labels, prompt_type, opt.clicks, opt.seed, ignore=ignore)  # type: ignore[arg-type]
    except PromptError as err:
        raise BagError(f"prompt frame {opt.prompt_frame}: {err}") from err


def _frames(opt: MakeBagOptions, plan: _Plan) -> Iterator[np.ndarray]:
    if plan.frame_files is not None:
        for path in plan.frame_files:
            yield read_rgb(path)
    else:
        yield from iter_video(opt.src, opt.max_frames)


def make_bag(opt: MakeBagOptions) -> MakeBagResult:
    """Write the bag described in the module docstring.

    Args:
        opt: see :class:`MakeBagOptions`.

    Returns:
        :class:`MakeBagResult`.

    Raises:
        BagError: bad inputs (missing source, masks missing or of another size, no
            instrument in the prompt frame, existing output without ``force``, ...). All
            inputs that can be checked up front are checked before the bag is created; a
            bag left unfinished by a later error is removed.
    """
    plan = _plan(opt)
    store = bags.make_typestore()
    if opt.out.exists():
        bags.remove_bag(opt.out)
    result = MakeBagResult(opt.out, 0, plan.image_hw, gt_encoding=plan.gt_encoding, warnings=plan.warnings)
    with bags.BagWriter(opt.out, opt.storage, store) as bag:  # type: ignore[arg-type]
        bag.add_topic(opt.image_topic, codec.IMAGE_TYPE)
        if plan.gt_files is not None:
            bag.add_topic(opt.gt_topic, codec.IMAGE_TYPE)
        if plan.prompt_type != "none":
            bag.add_topic(opt.prompt_topic, codec.PROMPT_TYPE)
        for index, rgb in enumerate(_frames(opt, plan)):
            _write_frame(bag, opt, plan, result, index, rgb)
        if plan.gt_files is not None and result.frames < len(plan.gt_files) and plan.frame_files is None:
            result.warnings.append(f"the video has {result.frames} frames, {len(plan.gt_files)} masks were given")
        if plan.prompt_type != "none" and opt.prompt_frame >= result.frames:
            raise BagError(f"--prompt-frame {opt.prompt_frame} is past the last frame ({result.frames - 1})")
        bag.set_custom_data(CUSTOM_DATA_KEY, json.dumps(_provenance(opt, plan, result)))
    return result


def _write_frame(
    bag: bags.BagWriter, opt: MakeBagOptions, plan: _Plan, result: MakeBagResult, index: int, rgb: np.ndarray
) -> None:
    hw = (rgb.shape[0], rgb.shape[1])
    if result.frames == 0:
        result.image_hw = hw
    elif hw != result.image_hw:
        raise BagError(
            f"frame {index} is {hw[1]}x{hw[0]}, earlier frames are {result.image_hw[1]}x{result.image_hw[0]}"
        )
    stamp = stamp_ns(index, opt.rate_hz, opt.start_time_s)
    header = codec.make_header(stamp, opt.frame_id, bag.types)
    bag.write(opt.image_topic, stamp, codec.image_msg(rgb, "rgb8", header, bag.types))
    result.frames += 1
    if plan.gt_files is None:
        return
    if index >= len(plan.gt_files):
        raise BagError(f"no mask for video frame {index} in {opt.gt_dir} ({len(plan.gt_files)} masks)")
    labels = read_label_image(plan.gt_files[index])
    if labels.shape != hw:
        raise BagError(
            f"mask {plan.gt_files[index]} is {labels.shape[1]}x{labels.shape[0]}, frame {index} is {hw[1]}x{hw[0]}"
        )
    dtype = np.uint16 if plan.gt_encoding == "mono16" else np.uint8
    bag.write(opt.gt_topic, stamp, codec.image_msg(labels.astype(dtype), plan.gt_encoding, header, bag.types))
    result.gt_frames += 1
    if plan.prompt_type != "none" and index == opt.prompt_frame:
        for prompt in _prompts(opt, labels, plan.prompt_type):
            bag.write(opt.prompt_topic, stamp, codec.prompt_msg(prompt, header, bag.types))
            result.prompt_ids.append(prompt.instrument_id)


def _provenance(opt: MakeBagOptions, plan: _Plan, result: MakeBagResult) -> dict:
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opt).items() if k not in ("out", "force")}
    info.update(
        tool="sam2s make-bag",
        frames=result.frames,
        first_stamp_ns=stamp_ns(0, opt.rate_hz, opt.start_time_s),
        prompt_type=plan.prompt_type,
        prompt_ids=result.prompt_ids,
    )
    return info

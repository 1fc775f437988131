"""Training sequences: DAVIS-style folders and ``sam2s make-bag`` recordings, checked whole.

A :class:`Sequence` holds its frames (file paths, or decoded frames for bags), its ground
truth resized to the model input (uint8/uint16 label maps, 0 = background, k = object k), the
object ids present, and an optional class map. Every problem is a :class:`DatasetError` that
names the file: mismatched frame / mask counts or names, frame and mask sizes that differ,
unreadable files, a sequence without any object. Nothing is skipped silently.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from sam2s_ros.errors import Sam2sError
from sam2s_ros.training.config import DataConfig, SourceConfig


class DatasetError(Sam2sError):
    """Training data that cannot be used as given (the message names the file)."""


@dataclass
class Sequence:
    """One annotated sequence.

    Attributes:
        name: "<source>/<sequence>" (unique across sources).
        source_index: index into DataConfig.sources.
        num_frames: frames T.
        labels: [T, S, S] uint8/uint16 label maps at the model input size (nearest resize).
        object_ids: ids present in at least one frame, sorted.
        read_frame: frame index -> [H, W, 3] uint8 RGB source frame.
        frame_keys: per frame a stable key for the feature cache (file path + size + mtime, or
            bag path + stamp).
        classes: object id -> class name (TSL labels), empty when unknown.
    """

    name: str
    source_index: int
    num_frames: int
    labels: np.ndarray
    object_ids: list[int]
    read_frame: Callable[[int], np.ndarray]
    frame_keys: list[str]
    classes: dict[int, str] = field(default_factory=dict)


def _resize_labels(label: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"cannot read frame {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_label(path: Path) -> np.ndarray:
    from sam2s_ros.data.frames import read_label_image

    try:
        return read_label_image(path)
    except Sam2sError as exc:
        raise DatasetError(str(exc)) from exc


def _image_hw(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as exc:
        raise DatasetError(f"cannot read frame {path}: {exc}") from exc


def load_davis_sequence(
    folder: Path, image_size: int, source_index: int = 0, max_frames: int = 0, name: Optional[str] = None
) -> Sequence:
    """Read ``folder/frames`` and ``folder/masks`` (same file stems, one mask per frame).

    Args:
        folder: the sequence folder.
        image_size: model input side S; labels are resized to S x S.
        max_frames: keep only the first N frames (0 = all).

    Raises:
        DatasetError: missing folders, count or name mismatch, size mismatch between a frame
            and its mask, unreadable files, no object in any frame.
    """
    from sam2s_ros.data.frames import list_image_files

    frames_dir, masks_dir = folder / "frames", folder / "masks"
    for d in (frames_dir, masks_dir):
        if not d.is_dir():
            raise DatasetError(f"{folder} is not a DAVIS-style sequence: {d.name}/ is missing")
    frames = list_image_files(frames_dir)
    masks = list_image_files(masks_dir, (".png",))
    if len(frames) != len(masks):
        raise DatasetError(f"{folder}: {len(frames)} frames but {len(masks)} masks (one mask per frame needed)")
    if not frames:
        raise DatasetError(f"{folder}: no frames")
    for f, m in zip(frames, masks):
        if f.stem != m.stem:
            raise DatasetError(f"{folder}: frame {f.name} is paired with mask {m.name} (file names must match)")
    if max_frames:
        frames, masks = frames[:max_frames], masks[:max_frames]
    labels = []
    for f, m in zip(frames, masks):
        lab = _read_label(m)
        if lab.shape != _image_hw(f):
            raise DatasetError(
                f"{m}: mask is {lab.shape[1]}x{lab.shape[0]} but frame {f.name} is {_image_hw(f)[1]}x{_image_hw(f)[0]}"
            )
        labels.append(_resize_labels(lab, image_size))
    stacked = np.stack(labels)
    ids = [int(i) for i in np.unique(stacked) if i != 0]
    if not ids:
        raise DatasetError(f"{folder}: every mask is empty (no object to train on)")
    return Sequence(
        name or folder.name,
        source_index,
        len(frames),
        stacked,
        ids,
        lambda i, _f=tuple(frames): _read_rgb(_f[i]),
        [_file_key(f) for f in frames],
    )


def load_bag_sequence(
    path: Path,
    image_size: int,
    source_index: int = 0,
    max_frames: int = 0,
    image_topic: Optional[str] = None,
    gt_topic: Optional[str] = None,
) -> Sequence:
    """Read a rosbag2 written by ``sam2s make-bag --gt-dir``: frames and ground truth by stamp.

    Frames are decoded into memory (a training bag is a short clip).

    Raises:
        DatasetError: unreadable bag, no frames or no ground truth, a frame without ground
            truth of the same stamp, size mismatch, no object.
    """
    from sam2s_ros import codec
    from sam2s_ros.data import bags
    from sam2s_ros.data.input_bag import DEFAULT_GT_TOPIC, DEFAULT_IMAGE_TOPIC

    image_topic, gt_topic = image_topic or DEFAULT_IMAGE_TOPIC, gt_topic or DEFAULT_GT_TOPIC
    frames: dict[int, np.ndarray] = {}
    gts: dict[int, np.ndarray] = {}
    try:
        for item in bags.read_messages(path, [image_topic, gt_topic]):
            stamp = codec.stamp_to_ns(item.msg.header.stamp)
            arr = codec.image_to_array(item.msg)
            (frames if item.topic == image_topic else gts)[stamp] = arr
    except Sam2sError as exc:
        raise DatasetError(f"cannot read training bag {path}: {exc}") from exc
    if not frames or not gts:
        raise DatasetError(
            f"{path}: needs frames on {image_topic} and ground truth on {gt_topic} "
            f"(found {len(frames)} and {len(gts)}); make it with sam2s make-bag --gt-dir"
        )
    stamps = sorted(frames)
    missing = [s for s in stamps if s not in gts]
    if missing:
        raise DatasetError(
            f"{path}: {len(missing)} frames have no ground truth with the same stamp (first at {missing[0]} ns)"
        )
    if max_frames:
        stamps = stamps[:max_frames]
    labels = []
    for s in stamps:
        if gts[s].shape[:2] != frames[s].shape[:2]:
            raise DatasetError(f"{path}: ground truth at {s} ns is {gts[s].shape[:2]}, frame is {frames[s].shape[:2]}")
        labels.append(_resize_labels(gts[s] if gts[s].ndim == 2 else gts[s][..., 0], image_size))
    stacked = np.stack(labels)
    ids = [int(i) for i in np.unique(stacked) if i != 0]
    if not ids:
        raise DatasetError(f"{path}: every ground-truth mask is empty (no object to train on)")
    rgb = [frames[s] if frames[s].ndim == 3 else np.repeat(frames[s][..., None], 3, 2) for s in stamps]
    return Sequence(
        path.name,
        source_index,
        len(stamps),
        stacked,
        ids,
        lambda i, _r=tuple(rgb): _r[i],
        [f"{path.resolve()}@{s}" for s in stamps],
    )


def _read_class_map(path: Optional[str]) -> dict[str, dict[int, str]]:
    if not path:
        return {}
    import yaml

    try:
        text = Path(path).read_text()
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        return {str(seq): {int(k): str(v) for k, v in (ids or {}).items()} for seq, ids in (raw or {}).items()}
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise DatasetError(f"class map {path}: {exc} (expected {{sequence: {{instance_id: class name}}}})") from exc


def load_source(src: SourceConfig, index: int, image_size: int, max_frames: int = 0) -> list[Sequence]:
    """All sequences of one source, filtered by ``sequences`` / ``exclude``.

    Raises:
        DatasetError: missing path, a named sequence that does not exist, or any bad sequence.
    """
    root = Path(src.path)
    if not root.exists():
        raise DatasetError(f"data source {root} does not exist")
    classes = _read_class_map(src.class_map)
    if src.kind == "davis":
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "frames").is_dir())
        if (root / "frames").is_dir():  # the path is one sequence
            names, root = [root.name], root.parent
    else:
        from sam2s_ros.data.bags import is_bag

        names = [root.name] if is_bag(root) else sorted(p.name for p in root.iterdir() if is_bag(p))
        root = root.parent if is_bag(root) else root
    unknown = sorted(set(src.sequences) - set(names))
    if unknown:
        raise DatasetError(f"data source {src.path}: sequences {unknown} not found (have {names})")
    chosen = [n for n in names if (not src.sequences or n in src.sequences) and n not in src.exclude]
    if not chosen:
        raise DatasetError(f"data source {src.path}: no sequence left after sequences/exclude filters")
    out = []
    for n in chosen:
        if src.kind == "davis":
            seq = load_davis_sequence(root / n, image_size, index, max_frames, name=n)
        else:
            seq = load_bag_sequence(root / n, image_size, index, max_frames)
        seq.classes = classes.get(n, {})
        out.append(seq)
    return out


def split_sequences(seqs: list[Sequence], data: DataConfig, seed: int) -> tuple[list[Sequence], list[Sequence]]:
    """(train, val) split by sequence: ``val_sequences`` by name, else a seeded ``val_fraction``.

    Raises:
        DatasetError: a named validation sequence that is not loaded, or nothing left to train.
    """
    names = [s.name for s in seqs]
    if data.val_sequences:
        unknown = sorted(set(data.val_sequences) - set(names))
        if unknown:
            raise DatasetError(f"val_sequences {unknown} are not among the loaded sequences {names}")
        val_names = set(data.val_sequences)
    else:
        shuffled = sorted(names)
        random.Random(seed).shuffle(shuffled)
        val_names = set(shuffled[: round(len(names) * data.val_fraction)])
    train = [s for s in seqs if s.name not in val_names]
    if not train:
        raise DatasetError("no training sequence left after the validation split")
    return train, [s for s in seqs if s.name in val_names]


def load_all(data: DataConfig, image_size: int) -> list[Sequence]:
    """Every sequence of every source (names made unique as "<source index>:<name>" on clashes)."""
    seqs: list[Sequence] = []
    for i, src in enumerate(data.sources):
        seqs += load_source(src, i, image_size, data.max_frames_per_sequence)
    seen: dict[str, int] = {}
    for s in seqs:
        seen[s.name] = seen.get(s.name, 0) + 1
    for s in seqs:
        if seen[s.name] > 1:
            s.name = f"{s.source_index}:{s.name}"
    return seqs

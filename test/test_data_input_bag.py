"""`sam2s make-bag` on the real clips of ../shared/data, read back with rosbags and rclpy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam2s_ros import codec
from sam2s_ros.data import bags, input_bag
from sam2s_ros.data.prompt_sampling import interior_point
from sam2s_ros.tools.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SAM2S_SHARED_DIR", REPO_ROOT.parent / "shared"))
RATE = 25.0
T0 = 1_700_000_000 * 10**9
H, W = 480, 854


@pytest.fixture(scope="module")
def data() -> Path:
    """../shared/data (real clips); the test is skipped when it is absent."""
    path = SHARED / "data"
    if not (path / "cholecseg8k_clip" / "frames").is_dir():
        pytest.skip(f"real clips not present: {path} is absent (a fresh clone has no ../shared)")
    return path


@pytest.fixture(scope="module")
def cholec(data: Path) -> dict[str, Path]:
    root = data / "cholecseg8k_clip"
    return {
        "frames": root / "frames",
        "masks": root / "masks_instruments",
        "video": root / "extra_video3_nomasks" / "video3.mp4",
    }


def read_bag(path: Path) -> dict[str, list[bags.BagMessage]]:
    by_topic: dict[str, list[bags.BagMessage]] = {}
    for item in bags.read_messages(path):
        by_topic.setdefault(item.topic, []).append(item)
    return by_topic


def run_cli(*args) -> int:
    return main(["make-bag", *map(str, args)])


def check_images(msgs, n, encoding, frame_id="endoscope_left_optical_frame"):
    assert len(msgs) == n
    stamps = [codec.stamp_to_ns(m.msg.header.stamp) for m in msgs]
    assert stamps == [T0 + i * 40_000_000 for i in range(n)]  # 25 Hz from the fixed epoch
    assert [m.log_time_ns for m in msgs] == stamps
    for m in msgs:
        assert m.msg.encoding == encoding
        assert (m.msg.height, m.msg.width) == (H, W)
        assert m.msg.header.frame_id == frame_id


@pytest.mark.parametrize(
    ("storage", "prompt_type"), [("mcap", "box"), ("sqlite3", "clicks"), ("mcap", "mask"), ("sqlite3", "box")]
)
def test_cholec_frames_with_gt(tmp_path, cholec, storage, prompt_type):
    out = tmp_path / "cholec"
    rc = run_cli(cholec["frames"], out, "--gt-dir", cholec["masks"], "--max-frames", 4, "--storage", storage,
                 "--prompt-type", prompt_type, "--clicks", 3)  # fmt: skip
    assert rc == 0
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert [p.suffix for p in out.iterdir() if p.name != "metadata.yaml"] == [suffix]
    topics = read_bag(out)
    assert set(topics) == {input_bag.DEFAULT_IMAGE_TOPIC, input_bag.DEFAULT_GT_TOPIC, input_bag.DEFAULT_PROMPT_TOPIC}
    images, gts = topics[input_bag.DEFAULT_IMAGE_TOPIC], topics[input_bag.DEFAULT_GT_TOPIC]
    check_images(images, 4, "rgb8")
    check_images(gts, 4, "mono8")
    # pixels are the source's, RGB order; GT equals the label PNG
    frame0 = cv2.cvtColor(cv2.imread(str(cholec["frames"] / "00000.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(codec.image_to_array(images[0].msg), frame0)
    gt3 = cv2.imread(str(cholec["masks"] / "00003.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(codec.image_to_array(gts[3].msg), gt3)
    check_prompts(topics[input_bag.DEFAULT_PROMPT_TOPIC], codec.image_to_array(gts[0].msg), prompt_type)


def check_prompts(prompts, gt0, prompt_type):
    ids = sorted(int(i) for i in np.unique(gt0) if i)
    assert [p.msg.instrument_id for p in prompts] == ids == [1]  # grasper only on frame 0
    for p in prompts:
        msg, mask = p.msg, gt0 == p.msg.instrument_id
        assert msg.mode == 0
        assert msg.class_id == -1
        assert codec.stamp_to_ns(msg.header.stamp) == T0
        assert p.log_time_ns == T0
        assert msg.header.frame_id == "endoscope_left_optical_frame"
        has_mask = msg.mask.width > 0
        assert (msg.has_box, len(msg.points) > 0, has_mask) == (
            prompt_type == "box",
            prompt_type == "clicks",
            prompt_type == "mask",
        )
        if prompt_type == "box":
            x0, y0, x1, y1 = msg.box.tolist()
            assert 0 <= x0 <= x1 < W
            assert 0 <= y0 <= y1 < H
            ys, xs = np.nonzero(mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())  # SAM 2's mask_to_box
        elif prompt_type == "clicks":
            assert len(msg.points) == 3
            assert msg.point_labels.tolist() == [1, 1, 1]
            pts = [(pt.x, pt.y) for pt in msg.points]
            assert all(mask[int(y), int(x)] for x, y in pts)  # inside the GT mask
            assert len(set(pts)) == 3
            assert pts[0] == tuple(float(c) for c in interior_point(mask))  # pixel centre = (column, row)
        else:
            assert msg.mask.encoding == "mono8"
            assert not msg.points
            assert not msg.has_box
            np.testing.assert_array_equal(codec.image_to_array(msg.mask), np.where(mask, 255, 0))


def test_prompt_cdr_deserializes_with_rclpy(tmp_path, cholec):
    import rclpy.serialization as rclpy_serialization

    from sam2s_ros.msg import Prompt

    out = tmp_path / "clicks"
    assert (
        run_cli(cholec["frames"], out, "--gt-dir", cholec["masks"], "--max-frames", 2, "--prompt-type", "clicks") == 0
    )
    (item,) = bags.read_messages(out, [input_bag.DEFAULT_PROMPT_TOPIC])
    msg = rclpy_serialization.deserialize_message(item.raw, Prompt)
    assert msg.instrument_id == 1
    assert msg.mode == Prompt.MODE_NEW
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 0)
    assert [(p.x, p.y) for p in msg.points] == [(p.x, p.y) for p in item.msg.points]
    assert list(msg.point_labels) == [1, 1, 1]
    assert not msg.has_box
    assert msg.mask.width == 0
    # and back: rclpy's CDR (padding bytes may differ) reads with rosbags to the same prompt
    back = bags.make_typestore().deserialize_cdr(rclpy_serialization.serialize_message(msg), codec.PROMPT_TYPE)
    assert [(p.x, p.y) for p in back.points] == [(p.x, p.y) for p in item.msg.points]
    assert (back.instrument_id, back.header.frame_id) == (1, "endoscope_left_optical_frame")


def test_clicks_are_deterministic(tmp_path, cholec):
    raws = []
    for seed, name in ((7, "a"), (7, "b"), (8, "c")):
        out = tmp_path / name
        assert run_cli(cholec["frames"], out, "--gt-dir", cholec["masks"], "--max-frames", 1,
                       "--prompt-type", "clicks", "--clicks", 5, "--seed", seed) == 0  # fmt: skip
        raws.append(next(bags.read_messages(out, [input_bag.DEFAULT_PROMPT_TOPIC])).raw)
    assert raws[0] == raws[1] != raws[2]


def test_davis_blackswan_jpg_frames(tmp_path, data):
    root = data / "davis2016_blackswan"
    out = tmp_path / "swan"
    assert run_cli(root / "frames", out, "--gt-dir", root / "masks", "--max-frames", 3, "--storage", "sqlite3",
                   "--rate", 10, "--frame-id", "cam", "--image-topic", "/cam/image") == 0  # fmt: skip
    topics = read_bag(out)
    images = topics["/cam/image"]
    assert len(images) == 3
    assert all(m.msg.header.frame_id == "cam" for m in images)
    assert [codec.stamp_to_ns(m.msg.header.stamp) - T0 for m in images] == [0, 100_000_000, 200_000_000]
    (prompt,) = topics[input_bag.DEFAULT_PROMPT_TOPIC]
    assert prompt.msg.instrument_id == 1
    assert prompt.msg.has_box


def test_video_without_gt_writes_images_only(tmp_path, cholec, capsys):
    out = tmp_path / "video"
    assert run_cli(cholec["video"], out, "--max-frames", 6, "--storage", "sqlite3") == 0
    assert "no --gt-dir: writing images only" in capsys.readouterr().err
    topics = read_bag(out)
    assert set(topics) == {input_bag.DEFAULT_IMAGE_TOPIC}
    check_images(topics[input_bag.DEFAULT_IMAGE_TOPIC], 6, "rgb8")


def test_video_prompt_type_without_gt_is_an_error(tmp_path, cholec, capsys):
    assert run_cli(cholec["video"], tmp_path / "v", "--prompt-type", "clicks") == 2
    assert "needs ground truth (--gt-dir)" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_video_with_gt_in_sorted_order(tmp_path, cholec):
    out = tmp_path / "video_gt"
    assert run_cli(cholec["video"], out, "--gt-dir", cholec["masks"], "--max-frames", 3) == 0
    gts = read_bag(out)[input_bag.DEFAULT_GT_TOPIC]
    np.testing.assert_array_equal(codec.image_to_array(gts[2].msg), cv2.imread(str(cholec["masks"] / "00002.png"), 0))


def copy_masks(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir()
    for path in sorted(src.glob("*.png"))[:n]:
        shutil.copy(path, dst / path.name)
    return dst


@pytest.mark.parametrize("case", ["missing_src", "missing_masks", "size_mismatch", "empty_prompt_frame", "void_only",
                                  "prompt_frame_too_far", "bad_rate"])  # fmt: skip
def test_input_errors_exit_2(tmp_path, cholec, capsys, case):
    frames, masks, out = cholec["frames"], cholec["masks"], tmp_path / "out"
    extra: list = ["--max-frames", 3]
    if case == "missing_src":
        frames, expected = tmp_path / "nope", "does not exist"
    elif case == "missing_masks":
        masks, expected = copy_masks(cholec["masks"], tmp_path / "m", 2), "have no mask"
    elif case == "size_mismatch":
        masks = copy_masks(cholec["masks"], tmp_path / "m", 3)
        small = cv2.resize(cv2.imread(str(masks / "00001.png"), 0), (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(masks / "00001.png"), small)
        expected = "is 427x240, frames are 854x480"
    elif case == "empty_prompt_frame":
        masks = copy_masks(cholec["masks"], tmp_path / "m", 3)
        cv2.imwrite(str(masks / "00000.png"), np.zeros((H, W), np.uint8))
        expected = "no instrument"
    elif case == "void_only":
        extra += ["--void-label", 1]
        expected = "no instrument"
    elif case == "prompt_frame_too_far":
        extra += ["--prompt-frame", 3]
        expected = "past the last frame"
    else:
        extra += ["--rate", 0]
        expected = "--rate must be > 0"
    assert run_cli(frames, out, "--gt-dir", masks, *extra) == 2
    err = capsys.readouterr().err
    assert "sam2s make-bag: error:" in err
    assert expected in err
    assert not out.exists()  # nothing written


def test_overwrite_needs_force_and_never_deletes_other_folders(tmp_path, cholec, capsys):
    out = tmp_path / "bag"
    assert run_cli(cholec["frames"], out, "--max-frames", 1) == 0
    assert run_cli(cholec["frames"], out, "--max-frames", 2) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert run_cli(cholec["frames"], out, "--max-frames", 2, "--force") == 0
    assert len(read_bag(out)[input_bag.DEFAULT_IMAGE_TOPIC]) == 2
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert run_cli(cholec["frames"], precious, "--max-frames", 1, "--force") == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_eval_of_perfect_output_on_real_clip(tmp_path, cholec, capsys):
    """make-bag -> output bag holding the ground truth as predictions -> J = F = 1."""
    in_bag = tmp_path / "in"
    assert run_cli(cholec["frames"], in_bag, "--gt-dir", cholec["masks"], "--max-frames", 6) == 0
    store = bags.make_typestore()
    out_bag = tmp_path / "out"
    with bags.BagWriter(out_bag, "sqlite3", store) as bag:
        bag.add_topic("/sam2s/masks", codec.MASK_ARRAY_TYPE)
        for k, item in enumerate(bags.read_messages(in_bag, [input_bag.DEFAULT_GT_TOPIC])):
            labels = codec.image_to_array(item.msg)
            masks = {i: labels == i for i in (1, 2)}
            bag.write(
                "/sam2s/masks",
                item.log_time_ns,
                codec.mask_array_msg(item.msg.header, masks, 0.02, k, types=codec.rosbags_types(store)),
            )
    for gt, extra in ((in_bag, []), (cholec["masks"], ["--max-frames", "6"]), (cholec["masks"], [])):
        report_path = tmp_path / "report.json"
        argv = ["eval", str(out_bag), "--gt", str(gt), "--json", str(report_path), "--force", *extra]
        assert main(argv) == 0
        report = json.loads(report_path.read_text())
        assert report["protocol"]["bound_pix"] == 8
        if extra or gt == in_bag:
            assert report["overall"] == {"J": 1.0, "F": 1.0, "JF": 1.0, "instruments": 1}  # grasper on frame 0
            assert report["frames"]["gt"] == 6
            assert report["frames"]["missing_in_output"] == 0
    # the whole folder: 72 frames, 66 without output -> scored as empty predictions
    assert report["frames"]["missing_in_output"] == 66
    assert report["frames"]["missing_indices"][0] == 6
    assert report["instruments"]["1"]["J"]["mean"] == pytest.approx(5 / 70)  # frames 1..5 of 1..70
    assert "66 ground-truth frame(s) have no output" in capsys.readouterr().out


# ------------------------------------------------- synthetic cases (no ../shared needed)


def test_sixteen_bit_ids_give_mono16(tmp_path):
    frames, masks = tmp_path / "frames", tmp_path / "masks"
    frames.mkdir()
    masks.mkdir()
    labels = np.zeros((24, 32), np.uint16)
    labels[4:10, 5:15] = 300
    labels[15:20, 20:30] = 7
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.jpg"), np.full((24, 32, 3), 40 * i, np.uint8))
        cv2.imwrite(str(masks / f"f{i}.png"), labels)  # 16-bit PNG
    out = tmp_path / "bag"
    assert run_cli(frames, out, "--gt-dir", masks, "--prompt-type", "mask") == 0
    topics = read_bag(out)
    gt = topics[input_bag.DEFAULT_GT_TOPIC][0].msg
    assert gt.encoding == "mono16"
    assert gt.step == 64
    np.testing.assert_array_equal(codec.image_to_array(gt), labels)
    prompts = topics[input_bag.DEFAULT_PROMPT_TOPIC]
    assert [p.msg.instrument_id for p in prompts] == [7, 300]
    np.testing.assert_array_equal(codec.image_to_array(prompts[1].msg.mask) > 0, labels == 300)

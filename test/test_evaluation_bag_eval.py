"""sam2s_ros.evaluation.bag_eval through `sam2s eval`, end to end on a synthetic sequence
(make-bag -> output bag written here -> eval)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam2s_ros import codec
from sam2s_ros.data import bags, input_bag
from sam2s_ros.evaluation import davis
from sam2s_ros.tools import cli

H, W, N = 60, 80, 6  # tolerance ceil(0.008 * 100) = 1 px
VOID = 255


def gt_labels(i: int) -> np.ndarray:
    """Instrument 1: 10x10 square moving right 1 px/frame; instrument 2: fixed square."""
    labels = np.zeros((H, W), np.uint8)
    labels[10:20, 10 + i : 20 + i] = 1
    labels[30:40, 50:60] = 2
    return labels


def predicted(i: int) -> dict[int, np.ndarray]:
    """1: perfect; 2: shifted 2 px right (J = 80 / 120)."""
    shifted = np.zeros((H, W), bool)
    shifted[30:40, 52:62] = True
    return {1: gt_labels(i) == 1, 2: shifted}


MISSING = 3  # frame without output
LATENCY_S = {i: 0.01 * (i + 1) for i in range(N) if i != MISSING}  # 10, 20, 30, 50, 60 ms


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq")
    frames, masks, void_masks = root / "frames", root / "masks", root / "masks_void"
    for d in (frames, masks, void_masks):
        d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        cv2.imwrite(str(frames / f"{i:05d}.png"), rng.integers(0, 255, (H, W, 3), np.uint8))
        cv2.imwrite(str(masks / f"{i:05d}.png"), gt_labels(i))
        with_void = gt_labels(i)
        with_void[30:40, 60:62] = VOID  # exactly the predicted-only pixels of instrument 2
        cv2.imwrite(str(void_masks / f"{i:05d}.png"), with_void)
    in_bag = root / "in_bag"
    assert cli.main(["make-bag", str(frames), str(in_bag), "--gt-dir", str(masks)]) == 0
    out_bag = root / "out_bag"
    store = bags.make_typestore()
    with bags.BagWriter(out_bag, "mcap", store) as bag:
        bag.add_topic("/sam2s/masks", codec.MASK_ARRAY_TYPE)
        for i, latency in LATENCY_S.items():
            stamp = input_bag.stamp_ns(i)
            header = codec.make_header(stamp, input_bag.DEFAULT_FRAME_ID, codec.rosbags_types(store))
            bag.write(
                "/sam2s/masks",
                stamp + 5_000_000,
                codec.mask_array_msg(header, predicted(i), latency, i, codec.rosbags_types(store)),
            )
    return {"in_bag": in_bag, "out_bag": out_bag, "masks": masks, "void_masks": void_masks, "root": root}


def expected_f2(i: int) -> float:
    return davis.f_measure(predicted(i)[2], gt_labels(i) == 2)


def run_eval(sequence, *extra) -> dict:
    out_json = sequence["root"] / "report.json"
    argv = ["eval", str(sequence["out_bag"]), "--json", str(out_json), "--force", *map(str, extra)]
    assert cli.main(argv) == 0
    return json.loads(out_json.read_text())


@pytest.mark.parametrize("gt_kind", ["in_bag", "masks"])
def test_eval_scores_by_stamp_and_by_index(sequence, gt_kind, capsys):
    report = run_eval(sequence, "--gt", sequence[gt_kind])
    captured = capsys.readouterr()
    # counted frames 1..4 (first and last dropped); frame 3 missing -> empty prediction -> 0
    inst1, inst2 = report["instruments"]["1"], report["instruments"]["2"]
    assert inst1["per_frame"]["frame"] == [1, 2, 3, 4]
    assert inst1["per_frame"]["J"] == [1.0, 1.0, 0.0, 1.0]
    assert inst1["per_frame"]["F"] == [1.0, 1.0, 0.0, 1.0]
    assert inst1["J"]["mean"] == pytest.approx(0.75)
    assert inst1["JF"] == pytest.approx(0.75)
    assert inst2["per_frame"]["J"] == pytest.approx([80 / 120, 80 / 120, 0.0, 80 / 120])
    assert inst2["per_frame"]["F"] == pytest.approx([expected_f2(1), expected_f2(2), 0.0, expected_f2(4)])
    assert 0 < expected_f2(1) < 1  # 2 px shift > 1 px tolerance
    j_overall = (0.75 + 0.5) / 2
    f_overall = (0.75 + 3 * expected_f2(1) / 4) / 2
    assert report["overall"]["J"] == pytest.approx(j_overall)
    assert report["overall"]["JF"] == pytest.approx((j_overall + f_overall) / 2)
    frames = report["frames"]
    assert (frames["gt"], frames["with_output"], frames["missing_in_output"], frames["missing_indices"]) == (
        6,
        5,
        1,
        [3],
    )
    lat = report["latency_ms"]
    assert lat["count"] == 5
    assert lat["mean"] == pytest.approx(34)
    assert lat["p50"] == pytest.approx(30)
    assert lat["max"] == pytest.approx(60)
    assert lat["p90"] == pytest.approx(56)
    assert report["protocol"]["bound_pix"] == 1
    assert report["protocol"]["drop_first_last"] is True
    assert "scored as empty" in captured.out
    assert "1 frame(s) missing" in captured.err
    assert "overall" in captured.out


def test_eval_options(sequence):
    only1 = run_eval(sequence, "--gt", sequence["in_bag"], "--instruments", "1", "--keep-first-last")
    assert list(only1["instruments"]) == ["1"]
    assert only1["instruments"]["1"]["J"]["mean"] == pytest.approx(5 / 6)
    assert only1["output_instruments_not_scored"] == [2]
    later = run_eval(sequence, "--gt", sequence["masks"], "--start-frame", 2)
    assert later["instruments"]["1"]["per_frame"]["frame"] == [3, 4]


def test_eval_void_label(sequence):
    report = run_eval(sequence, "--gt", sequence["void_masks"], "--void-label", VOID)
    assert sorted(report["instruments"]) == ["1", "2"]  # 255 is not an instrument
    assert report["instruments"]["2"]["per_frame"]["J"] == pytest.approx([80 / 100, 80 / 100, 0.0, 80 / 100])


def test_eval_folder_with_wrong_rate_says_why(sequence, capsys):
    argv = ["eval", str(sequence["out_bag"]), "--gt", str(sequence["masks"]), "--rate", "30"]
    assert cli.main(argv) == 2
    assert "output stamp(s) fall between ground-truth frames" in capsys.readouterr().err
    argv += ["--start-time", "1600000000"]
    assert cli.main(argv) == 2
    assert "no output stamp matches a ground-truth frame" in capsys.readouterr().err


def test_eval_refuses_to_overwrite_json(sequence, capsys):
    out_json = sequence["root"] / "keep.json"
    out_json.write_text("{}")
    argv = ["eval", str(sequence["out_bag"]), "--gt", str(sequence["in_bag"]), "--json", str(out_json)]
    assert cli.main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out_json.read_text() == "{}"


def test_make_bag_refuses_overwrite_without_force(sequence, capsys):
    argv = ["make-bag", str(sequence["root"] / "frames"), str(sequence["in_bag"])]
    assert cli.main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err

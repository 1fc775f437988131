"""`sam2s demo`, the README's main job: refuses to run without weights unless told, and
says "random weights" in every output when it does."""

from __future__ import annotations

import json

import cv2
import pytest

from sam2s_ros.tools import cli, demo


def test_without_checkpoint_it_stops_with_instructions(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "MODELS_DIR", tmp_path / "models")
    code = cli.main(["demo", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "models/README.md" in err
    assert "--random-weights" in err
    assert not (tmp_path / "run").exists()


def test_random_weights_run_says_so_everywhere(shared_dir, tmp_path, monkeypatch, capsys, ros_domain_id):
    monkeypatch.setattr(demo, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(demo, "free_domain_id", lambda: ros_domain_id)
    out = tmp_path / "run"
    code = cli.main(["demo", "--random-weights", "--max-frames", "5", "--image-size", "128", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.count("RANDOM WEIGHTS") >= 2
    assert "J&F" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["weights"] == "random weights"
    assert results["replay"]["frames_sent"] == results["replay"]["frames_with_output"] == 5
    assert results["eval"]["overall"]["JF"] is not None
    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, frame = video.read()
    assert ok
    assert frame.shape == (480, 854, 3)
    # the caption is drawn in red at the top-left of every frame
    assert (frame[10:35, 10:200, 2] > 200).sum() > 100


def test_bad_prompt_arguments_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "MODELS_DIR", tmp_path / "models")
    code = cli.main(["demo", "--random-weights", "--box", "1,2,3", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--box must be 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, size",
    [
        ("sam2.1_hiera_small.pt", "small"),
        ("sam2.1_hiera_b+.pt", "base_plus"),
        ("weights.pt", "tiny"),
        ("sam2s_mobile.safetensors", "sam2s_mobile"),
    ],
)
def test_model_size_from_checkpoint_name(tmp_path, name, size):
    assert demo.infer_model_size(tmp_path / name, None) == size


def test_embedded_checkpoint_is_used_only_when_models_holds_no_other(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr(demo, "MODELS_DIR", models)
    assert demo.find_checkpoint(None) is None
    (models / demo.EMBEDDED_CHECKPOINT_NAME).write_bytes(b"x")
    assert demo.find_checkpoint(None) == models / demo.EMBEDDED_CHECKPOINT_NAME
    (models / "sam2.1_hiera_tiny.pt").write_bytes(b"x")
    assert demo.find_checkpoint(None) == models / "sam2.1_hiera_tiny.pt"

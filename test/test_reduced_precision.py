"""Reduced-precision CPU paths keep accuracy (issue #17): J&F within 0.01 of fp32.

The embedded checkpoint (models/sam2s_mobile.safetensors, 512 px) tracks the first frames of
DAVIS 2016 blackswan (box prompt from frame 0's ground truth) in fp32 on torch, in bfloat16
autocast on torch, and on the int8 graphs of ``sam2s export --int8`` with onnxruntime. The
test fails when a reduced-precision path's J&F drops by more than MAX_JF_DROP below fp32's.
Whole clips (CholecSeg8k and blackswan): ``benchmarks/eval_precision.py``.
"""

from __future__ import annotations

import pytest
import torch

from sam2s_ros.data import read_davis_sequence
from sam2s_ros.evaluation.clip_jf import score_clip
from sam2s_ros.tracking.config import MOBILE_MODEL, TrackerConfig
from sam2s_ros.tracking.tracker import InstrumentTracker

MAX_JF_DROP = 0.01
IMAGE_SIZE, FRAMES = 512, 8
pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def checkpoint(repo_root):
    path = repo_root / "models" / "sam2s_mobile.safetensors"
    assert path.is_file(), f"the embedded checkpoint {path} is shipped in git and must be present"
    return str(path)


@pytest.fixture(scope="module")
def clip(shared_dir):
    folder = shared_dir / "data" / "davis2016_blackswan"
    assert (folder / "frames").is_dir(), f"../shared is present but {folder}/frames is missing"
    return read_davis_sequence(folder, FRAMES, labels_dir="masks")


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, checkpoint):
    from sam2s_ros.export.onnx_export import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "mobile_512"
    export_onnx(
        ExportOptions(out_dir=out, model_size=MOBILE_MODEL, image_size=IMAGE_SIZE, checkpoint=checkpoint, int8=True)
    )
    return out


def _score(clip, checkpoint, **kw):
    torch.manual_seed(0)
    cfg = TrackerConfig(model_size=MOBILE_MODEL, image_size=IMAGE_SIZE, checkpoint=checkpoint, **kw)
    return score_clip(InstrumentTracker.from_config(cfg), clip)


@pytest.fixture(scope="module")
def fp32(clip, checkpoint):
    score = _score(clip, checkpoint)
    assert score.summary.jf_mean > 0.5, "the fp32 reference does not track the swan: the comparison would say nothing"
    return score


@pytest.mark.parametrize(
    "setting",
    [dict(backend="torch", autocast_dtype="bfloat16"), dict(backend="onnxruntime", autocast_dtype="int8")],
    ids=["torch_bf16", "onnxruntime_int8"],
)
def test_reduced_precision_jf_within_0_01_of_fp32(setting, clip, checkpoint, fp32, request):
    if setting["backend"] == "onnxruntime":
        setting = {**setting, "onnx_dir": str(request.getfixturevalue("int8_dir"))}
    score = _score(clip, checkpoint, **setting)
    drop = fp32.summary.jf_mean - score.summary.jf_mean
    print(f"{setting}: J&F {score.summary.jf_mean:.4f} vs fp32 {fp32.summary.jf_mean:.4f} (drop {drop:+.4f})")
    assert drop <= MAX_JF_DROP, (
        f"{setting['backend']} {setting['autocast_dtype']}: J&F {score.summary.jf_mean:.4f}, "
        f"fp32 {fp32.summary.jf_mean:.4f}: drop {drop:.4f} > {MAX_JF_DROP}"
    )

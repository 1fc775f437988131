"""ONNX export of the SAM 2.1 stages: files, metadata, checker, I/O contract, fp16, bad arguments.

The graphs are exported once per test session (``exported_graphs``: hiera-tiny, random
weights seed 0, image size 256, fp32 + fp16) and shared with test_onnxruntime_backend.py
and test_tensorrt_backend.py, which import :func:`export_once` from here.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from sam2s_ros import __version__
from sam2s_ros.errors import ExportError
from sam2s_ros.export.contract import (
    CONSTANTS_FILE,
    DYNAMIC_DIMS,
    GRAPH_FORMAT,
    GRAPHS,
    INT8_STAGES,
    MANIFEST_FILE,
    META_KEYS,
    bind_dims,
)
from sam2s_ros.export.onnx_export import (
    ExportOptions,
    MaskDecoderGraph,
    antialias_matrix,
    example_inputs,
    export_model,
    read_metadata,
    validate_options,
)
from sam2s_ros.model import stages
from sam2s_ros.model.build import build_random_model
from sam2s_ros.tools import cli

IMAGE_SIZE = 256
WEIGHTS = "random weights (seed 0)"
_EXPORTS: dict[str, object] = {}  # one export per test session, shared across test modules


def export_once(tmp_path_factory):
    """Export hiera-tiny (random weights, seed 0) at 256, fp32 + fp16 + int8; cached for the session.

    Returns:
        sam2s_ros.export.onnx_export.ExportResult.
    """
    if "result" not in _EXPORTS:
        out = tmp_path_factory.mktemp("onnx") / f"tiny_{IMAGE_SIZE}"
        sam = build_random_model("tiny", IMAGE_SIZE, seed=0)
        opts = ExportOptions(
            out_dir=out, model_size="tiny", image_size=IMAGE_SIZE, random_weights=True, fp16=True, int8=True
        )
        _EXPORTS["result"] = export_model(sam, opts, checkpoint_sha256="", weights=WEIGHTS)
    return _EXPORTS["result"]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return export_once(tmp_path_factory)


def test_every_graph_in_every_precision_and_manifest(exported):
    expected = [(s, p) for s in GRAPHS for p in ("fp32", "fp16")] + [(s, "int8") for s in INT8_STAGES]
    assert sorted(exported.graphs) == sorted(expected)
    for stage in INT8_STAGES:  # quantized: integer MatMuls, metadata says int8
        assert read_metadata(exported.graphs[(stage, "int8")])["precision"] == "int8"
        ops = {n.op_type for n in onnx.load(str(exported.graphs[(stage, "int8")])).graph.node}
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, stage
    for path in exported.graphs.values():
        assert path.is_file()
        assert path.parent == exported.out_dir
    manifest = json.loads((exported.out_dir / MANIFEST_FILE).read_text())
    assert manifest["image_size"] == str(IMAGE_SIZE)
    assert manifest["weights"] == WEIGHTS
    assert set(manifest["graphs"].values()) == {p.name for p in exported.graphs.values()}
    assert manifest["profile_dims"] == {k: list(v) for k, v in DYNAMIC_DIMS.items()}  # TensorRT profiles
    with np.load(exported.out_dir / CONSTANTS_FILE) as c:
        assert c["no_mem_embed"].shape == (256,)
        assert c["maskmem_pos"].shape == (1, 64, 16, 16)
    assert not any(p.name.startswith(".") for p in exported.out_dir.parent.iterdir())  # staging folder removed


def test_metadata_in_every_graph(exported):
    for (stage, precision), path in exported.graphs.items():
        meta = read_metadata(path)
        assert set(META_KEYS) <= set(meta), path.name
        assert meta["stage"] == stage
        assert meta["precision"] == precision
        assert meta["model"] == "sam2.1_hiera_tiny"
        assert meta["model_size"] == "tiny"
        assert meta["image_size"] == str(IMAGE_SIZE)
        assert meta["opset"] == "17"
        assert meta["checkpoint_sha256"] == ""
        assert meta["weights"] == WEIGHTS
        assert meta["sam2s_ros_version"] == __version__
        assert meta["graph_format"] == GRAPH_FORMAT


def test_onnx_checker_passes(exported):
    for path in exported.graphs.values():
        onnx.checker.check_model(str(path), full_check=True)
        opsets = {o.domain: o.version for o in onnx.load(str(path), load_external_data=False).opset_import}
        assert opsets.get("", opsets.get("ai.onnx")) == 17


def test_graph_io_is_the_contract_with_dynamic_axes(exported):
    for (stage, _), path in exported.graphs.items():
        graph = onnx.load(str(path), load_external_data=False).graph
        spec = GRAPHS[stage]
        assert [i.name for i in graph.input] == [t.name for t in spec.inputs]
        assert [o.name for o in graph.output] == [t.name for t in spec.outputs]
        for value, t in zip([*graph.input, *graph.output], [*spec.inputs, *spec.outputs]):
            assert value.type.tensor_type.elem_type == onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
            dims = value.type.tensor_type.shape.dim
            for axis, name in t.dynamic_axes().items():
                assert dims[axis].dim_param == name, (path.name, t.name, axis)
            fixed = t.resolve(IMAGE_SIZE, {k: -1 for k in DYNAMIC_DIMS})
            assert [d.dim_value if not d.dim_param else -1 for d in dims] == list(fixed), (path.name, t.name)


def test_antialias_matrix_equals_torch_antialiased_resize():
    x = torch.randn(2, 1, 64, 48)
    ref = F.interpolate(x, size=(16, 12), mode="bilinear", align_corners=False, antialias=True)
    ours = antialias_matrix(64, 16).t() @ (x @ antialias_matrix(48, 12))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_mask_switch_equals_the_stage_row_by_row():
    sam = build_random_model("tiny", IMAGE_SIZE, seed=0)
    graph = MaskDecoderGraph(sam, multimask=False).eval()
    stage = stages.MaskDecoderStage(sam, multimask_output=False)
    inp = example_inputs(GRAPHS["mask_decoder_single"], IMAGE_SIZE, {"instruments": 2, "points": 3})
    has_mask = inp["has_mask"]
    assert has_mask.tolist() == [False, True]
    with torch.inference_mode():
        ours = graph(*inp.values())
        args = [
            inp["pix_feat"],
            inp["feat_s0"].expand(2, -1, -1, -1),
            inp["feat_s1"].expand(2, -1, -1, -1),
            inp["point_coords"],
            inp["point_labels"],
        ]
        without = stage(*args, None)
        with_mask = stage(*args, inp["mask_input"])
    for o, a, b in zip(ours, without, with_mask):
        assert torch.allclose(o[0], a[0], atol=1e-6)
        assert torch.allclose(o[1], b[1], atol=1e-6)
    assert sam.sam_prompt_encoder.__class__.__name__ == "PromptEncoder"  # swapped back


def test_bind_dims_checks_shapes():
    spec = GRAPHS["memory_attention"]
    shapes = {k: tuple(v.shape) for k, v in example_inputs(spec, IMAGE_SIZE, {"instruments": 3}).items()}
    assert bind_dims(spec, shapes, IMAGE_SIZE) == {"instruments": 3, "mem_frames": 3, "obj_ptrs": 4}
    with pytest.raises(ValueError, match="image size|S = 512"):
        bind_dims(spec, shapes, 512)
    with pytest.raises(ValueError, match="axis 'instruments'"):
        bind_dims(spec, {**shapes, "mem_valid": (2, 3)}, IMAGE_SIZE)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 500}, "multiple of 32"),
        ({"image_size": 96}, "multiple of 32 and >= 128"),
        ({"random_weights": False}, "no checkpoint given"),
        ({"checkpoint": "/no/such/ckpt.pt", "random_weights": False}, "does not exist"),
        ({"checkpoint": "/no/such/ckpt.pt"}, "not both"),
        ({"opset": 16}, "opset must be 17..20"),
        ({"model_size": "huge"}, "model size must be one of"),
    ],
)
def test_bad_options_are_refused(tmp_path, overrides, message):
    opts = ExportOptions(out_dir=tmp_path / "out", image_size=256, random_weights=True)
    for k, v in overrides.items():
        setattr(opts, k, v)
    with pytest.raises(ExportError, match=message):
        validate_options(opts)


def test_non_empty_output_needs_force(tmp_path):
    (tmp_path / "old.onnx").write_bytes(b"x")
    opts = ExportOptions(out_dir=tmp_path, image_size=256, random_weights=True)
    with pytest.raises(ExportError, match="--force"):
        validate_options(opts)
    opts.force = True
    validate_options(opts)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        validate_options(ExportOptions(out_dir=tmp_path / "file", image_size=256, random_weights=True))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-size", "500", "--random-weights"], "image size must be a multiple of 32"),
        (["--checkpoint", "/no/such.pt"], "checkpoint /no/such.pt does not exist"),
        ([], "one of the arguments --checkpoint --random-weights is required"),
        (["--random-weights", "--checkpoint", "x.pt"], "not allowed with argument"),
    ],
)
def test_cli_refuses_bad_arguments_with_exit_2(tmp_path, capsys, argv, message):
    assert cli.main(["export", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_existing_output_without_force(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    assert cli.main(["export", "--random-weights", "--image-size", "256", "--out", str(tmp_path)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]

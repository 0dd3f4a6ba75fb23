"""prn export --format onnx and --runtime onnxruntime: the exported dense graphs agree with PyTorch within
rtol = atol = 1e-4 at a size and batch other than the traced ones, and both runtimes segment and refine alike."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

import prn_forkserver

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow   # two exports, ~10 s each on a loaded 2-core machine

#: the parity tolerance (README, "prn export"): float32 graphs, different kernels
RTOL = ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from prn_cli.onnx_export import export_onnx
    from prn_cli.shipped import shipped_weights

    root = tmp_path_factory.mktemp("onnx")
    base = export_onnx(shipped_weights("base"), root / "base.onnx", height=64, width=96)
    refiner = export_onnx(shipped_weights("prn"), root / "prn.onnx", height=64, width=96)
    assert (base["kind"], refiner["kind"]) == ("base", "prn")
    return root


def test_base_dense_graph_matches_pytorch(exported):
    from prn_cli.checkpoint import load_checkpoint
    from prn_cli.onnx_export import BASE_HEAD_KEYS, _load_base, mask_layers
    from prn_cli.shipped import shipped_weights

    model, _ = _load_base(load_checkpoint(shipped_weights("base")))
    session = ort.InferenceSession(str(exported / "base.onnx"), providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    images = torch.randn(2, 3, 128, 160)            # traced at 1 x 64 x 96
    pooled = torch.randn(3, session.get_inputs()[1].shape[1], 14, 14)
    with torch.no_grad():
        pyramid, head_out, _, semantic = model._features(images)
        masks = mask_layers(model.mask_head, pooled)
    expected = {f"fpn_{level}": pyramid[level] for level in range(3)}
    for key in BASE_HEAD_KEYS:
        for level, value in enumerate(head_out.get(key, [])):
            expected[f"{key}_{level}"] = value
    expected.update(semantic_logits=semantic, mask_logits=masks)
    names = [o.name for o in session.get_outputs()]
    assert set(names) == set(expected) and len(names) > 20
    got = dict(zip(names, session.run(None, {"images": images.numpy(), "mask_features": pooled.numpy()})))
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
    assert got["semantic_logits"].shape == (2, semantic.shape[1], 32, 40)


def test_prn_graph_matches_pytorch(exported):
    from prn_cli.checkpoint import load_checkpoint
    from prn_cli.onnx_export import _load_prn
    from prn_cli.shipped import shipped_weights

    ckpt = load_checkpoint(shipped_weights("prn"))
    model, config = _load_prn(ckpt)
    session = ort.InferenceSession(str(exported / "prn.onnx"), providers=["CPUExecutionProvider"])
    torch.manual_seed(2)
    inputs = {"image": torch.randn(2, 3, 96, 128),
              "base_semantic": torch.randint(0, len(ckpt["categories"]) + 1, (2, 96, 128)),   # + void
              "base_maps": torch.rand(2, config.base_map_channels, 96, 128)}
    with torch.no_grad():
        expected = model(inputs)
    names = [o.name for o in session.get_outputs()]
    assert set(names) == set(expected) and {"semantic", "center", "offset"} <= set(names)
    got = dict(zip(names, session.run(None, {k: v.numpy() for k, v in inputs.items()})))
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)


def test_both_runtimes_segment_and_refine_alike(exported, tmp_path):
    from prn_cli.onnx_runtime import onnx_refiner, onnx_segmenter
    from prn_cli.predictors import Refiner, Segmenter
    from prn_cli.synth import SynthConfig, generate_sample

    config = SynthConfig(n=6, width=96, height=64, seed=5, split="val")
    torch_base, onnx_base = Segmenter(device="cpu"), onnx_segmenter(exported / "base.onnx")
    from prn_cli.options import PostProcessOverrides

    # the export leaves out the thing classifier (it reads the final things, not the network's maps): its
    # checkpoint relabels nothing and names no void things, and the torch runtime matches it with both off
    # (nor removes any thing: the "no thing" class is the classifier's too)
    torch_prn = Refiner(device="cpu", overrides=PostProcessOverrides(classifier_confidence=0.0,
                                                                     classifier_remove_confidence=0.0,
                                                                     void_thing_confidence=0.0))
    onnx_prn = onnx_refiner(exported / "prn.onnx")
    assert onnx_prn.postprocess_config.classifier_confidence == 0.0
    assert onnx_prn.postprocess_config.classifier_remove_confidence == 0.0
    assert onnx_prn.postprocess_config.void_thing_confidence == 0.0
    from prn_cli.onnx_runtime import ExportedModel

    assert not ExportedModel(exported / "prn.onnx").config["model"].get("classifier_channels")
    things = 0
    for index in range(6):
        rgb = generate_sample(config, index)[0]
        a, b = torch_base(rgb), onnx_base(rgb)
        assert (a.ids == b.ids).mean() > 0.999
        assert [s["category_id"] for s in a.segments] == [s["category_id"] for s in b.segments]
        things += sum(1 for s in a.segments if s["category_id"] < 100)
        ra, rb = torch_prn(rgb, a.ids, a.segments), onnx_prn(rgb, a.ids, a.segments)
        assert (ra.ids == rb.ids).mean() > 0.999
        assert [s["category_id"] for s in ra.segments] == [s["category_id"] for s in rb.segments]
    assert things > 0   # the detection, mask and fusion path ran on ONNX outputs


def prn(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*prn_forkserver.command(), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)


def assert_one_line_error(result, code, *fragments) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_runtime_usage_errors(exported, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    result = prn("segment", "--images", images, "--out", tmp_path / "out", "--runtime", "onnxruntime")
    assert_one_line_error(result, 2, "--weights FILE.onnx", "prn export")
    result = prn("segment", "--images", images, "--out", tmp_path / "out", "--weights", exported / "prn.onnx")
    assert_one_line_error(result, 2, "--runtime onnxruntime")
    result = prn("export", exported / "missing.pt", "--out", tmp_path / "x.onnx")
    assert result.returncode == 3 and "missing.pt" in result.stderr
    result = prn("export", "--out", exported / "base.onnx")
    assert_one_line_error(result, 2, "already exists", "--overwrite")

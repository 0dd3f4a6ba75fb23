"""The PNG decoders behind read_id_png (Wuffs through pywuffs, libspng through pyspng, Pillow as the fallback):
same ids, same errors, same PQ; and prn eval against the live COCO reference evaluator on a generated set."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import multiprocessing

import numpy as np
import pytest
from PIL import Image

from conftest import COCO_SAMPLE, PQ_REFERENCE, scene
from prn_cli.errors import InvalidInputError
from prn_cli.evaluate import EvalOptions, evaluate
from prn_cli.panoptic import id2rgb, load_set, png_decoder, read_id_png, rgb2id

DECODERS = ["pillow", "pyspng", "wuffs"]
MODULES = {"pyspng": "pyspng", "wuffs": "pywuffs"}


def _installed(name: str) -> bool:
    return name not in MODULES or importlib.util.find_spec(MODULES[name]) is not None


@pytest.fixture(params=DECODERS)
def decoder(request, monkeypatch):
    if request.param in MODULES:
        pytest.importorskip(MODULES[request.param])
    monkeypatch.setenv("PRN_PNG_DECODER", request.param)
    assert png_decoder() == request.param
    return request.param


def test_decoder_choice(monkeypatch):
    monkeypatch.setenv("PRN_PNG_DECODER", "pillow")
    assert png_decoder() == "pillow"
    monkeypatch.setenv("PRN_PNG_DECODER", "libpng")
    with pytest.raises(ValueError, match="PRN_PNG_DECODER"):
        png_decoder()
    monkeypatch.delenv("PRN_PNG_DECODER")
    expected = next(name for name in ("wuffs", "pyspng", "pillow") if _installed(name))
    assert png_decoder() == expected
    # asking for one that is missing falls back down the list, never up it
    monkeypatch.setattr("prn_cli.panoptic._available_modules", {"pywuffs": False, "pyspng": True})
    monkeypatch.setenv("PRN_PNG_DECODER", "wuffs")
    assert png_decoder() == "pyspng"
    monkeypatch.setenv("PRN_PNG_DECODER", "pyspng")
    assert png_decoder() == "pyspng"
    monkeypatch.setattr("prn_cli.panoptic._available_modules", {"pywuffs": True, "pyspng": False})
    assert png_decoder() == "pillow"


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (2, 1), (0, 4), (480, 640)])
def test_rgb2id_packs_every_pixel(shape):
    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = (rgb[..., 0].astype(np.uint32) | (rgb[..., 1].astype(np.uint32) << 8)
                | (rgb[..., 2].astype(np.uint32) << 16))
    assert rgb2id(rgb).dtype == np.uint32
    assert (rgb2id(rgb) == expected).all()
    assert (rgb2id(rgb[:, ::-1]) == expected[:, ::-1]).all()            # a non-contiguous view
    rgba = np.dstack([rgb, np.full(shape, 9, np.uint8)])
    assert (rgb2id(rgba) == expected).all()                             # the 4th channel is ignored


def _coco_pngs():
    return sorted((COCO_SAMPLE / "panoptic_examples").glob("*.png"))


def test_every_decoder_reads_the_same_ids(tmp_path, monkeypatch):
    for module in MODULES.values():
        pytest.importorskip(module)
    ids, _ = scene(37, 53)
    ids[0, 0] = 256 ** 3 - 1
    plain = tmp_path / "plain.png"
    Image.fromarray(id2rgb(ids)).save(plain)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([id2rgb(ids), np.full(ids.shape, 255, np.uint8)])).save(rgba)
    trns = tmp_path / "trns.png"  # an RGB PNG with a tRNS chunk: the transparency carries no id bits
    Image.fromarray(id2rgb(ids)).save(trns, transparency=(0, 0, 0))
    files = [plain, rgba, trns, *_coco_pngs()]
    decoded = {}
    for name in DECODERS:
        monkeypatch.setenv("PRN_PNG_DECODER", name)
        decoded[name] = [read_id_png(f) for f in files]
    for name in ("pyspng", "wuffs"):
        for f, a, b in zip(files, decoded["pillow"], decoded[name]):
            assert a.dtype == b.dtype == np.uint32 and a.shape == b.shape, (name, f)
            assert (a == b).all(), (name, f)
    for a in decoded["wuffs"][:3]:
        assert (a == ids).all()
    assert len(np.unique(decoded["wuffs"][3])) > 10  # a real COCO panoptic PNG


@pytest.mark.parametrize("damage, needles", [
    (lambda data: data[:60], ["cannot be decoded", "corrupt or truncated"]),
    (lambda data: data[:-30], ["cannot be decoded", "corrupt or truncated"]),
    (lambda data: data[:-60] + bytes(b ^ 0x5A for b in data[-60:-40]) + data[-40:],  # scrambled deflate data
     ["cannot be decoded", "corrupt or truncated"]),
])
def test_damaged_png_is_one_line_error_with_every_decoder(tmp_path, decoder, damage, needles):
    ids, _ = scene()
    png = tmp_path / "x.png"
    Image.fromarray(id2rgb(ids)).save(png)
    png.write_bytes(damage(png.read_bytes()))
    with pytest.raises(InvalidInputError) as excinfo:
        read_id_png(png)
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(str(png))
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_rgba_with_alpha_data_is_refused_by_every_decoder(tmp_path, decoder):
    ids, _ = scene()
    png = tmp_path / "x.png"
    Image.fromarray(np.dstack([id2rgb(ids), np.full(ids.shape, 7, np.uint8)])).save(png)
    with pytest.raises(InvalidInputError, match="alpha channel"):
        read_id_png(png)


def test_pq_is_identical_with_every_decoder(monkeypatch):
    for module in MODULES.values():
        pytest.importorskip(module)
    cases = sorted(p.name for p in PQ_REFERENCE.iterdir()
                   if (p / "reference.json").exists() and json.loads((p / "reference.json").read_text())["results"])
    assert len(cases) >= 8
    for case in cases:
        d = PQ_REFERENCE / case
        results = []
        for name in DECODERS:
            monkeypatch.setenv("PRN_PNG_DECODER", name)
            gt = load_set(json_path=d / "gt.json", png_dir=d / "gt")
            pred = load_set(json_path=d / "pred.json", png_dir=d / "pred", need_categories=False)
            results.append(evaluate(gt, [pred], workers=0).results[0].to_dict())
        assert results[0] == results[1] == results[2], case


@pytest.fixture(scope="module")
def generated_pairs(tmp_path_factory):
    from prn_cli.perturb import write_corrupted_set
    from prn_cli.synth import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("pairs")
    write_dataset(root, SynthConfig(n=12, width=96, height=72, seed=3, split="val"))
    gt_json = root / "annotations" / "panoptic_val.json"
    write_corrupted_set(gt_json, root / "pred", seed=3)
    return gt_json, root / "pred"


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value


def test_prn_eval_equals_the_live_reference_bit_for_bit(generated_pairs, decoder):
    evaluation = pytest.importorskip("panopticapi.evaluation")
    gt_json, pred_dir = generated_pairs
    with contextlib.redirect_stdout(io.StringIO()):
        reference = evaluation.pq_compute(str(gt_json), str(pred_dir / "panoptic.json"),
                                          str(gt_json.with_suffix("")), str(pred_dir / "panoptic"))
    # the reference sums IoUs in one chunk per core; prn sums the same way with sum_chunks
    options = EvalOptions(sum_chunks=multiprocessing.cpu_count())
    for workers in (0, 2):
        ours = evaluate(gt_json, [pred_dir], options=options, workers=workers).results[0].reference_dict()
        assert _plain(ours) == _plain(reference)
    assert 0.2 < reference["All"]["pq"] < 0.95  # a real corrupted prediction, neither empty nor perfect

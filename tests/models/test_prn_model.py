"""PRN network: CoordConv, config, input encoding, switches, output scaling, losses, pretrained stem, learning;
the shared network contract (base.py) as :class:`TestPRNContract`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from base import NetworkContract

from prn_cli.models.backbone import ResNetBackbone, load_backbone_weights
from prn_cli.models.coordconv import CoordConv2d, add_coords
from prn_cli.models.prn.config import PRNConfig, PRNLossConfig
from prn_cli.models.prn.model import (PRN, build_model, load_pretrained_backbone, prn_losses,
                                      semantic_cross_entropy, weighted_mean)

#: classes 0, 1 are things, 2 is stuff (class index = list position).
CATS = [
    {"id": 1, "name": "square", "isthing": 1, "supercategory": "shape"},
    {"id": 2, "name": "bar", "isthing": 1, "supercategory": "shape"},
    {"id": 7, "name": "ground", "isthing": 0, "supercategory": "ground"},
]
H = W = 64


def tiny(**kw) -> PRNConfig:
    """The tiny config; the raw network (no base prior) unless ``base_prior=True`` is asked for."""
    cfg = PRNConfig.tiny()
    cfg.base_prior = False
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def make_model(seed: int = 0, **kw) -> PRN:
    torch.manual_seed(seed)
    return build_model(tiny(**kw), CATS)


def make_inputs(b: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, 3, (b, H, W), generator=g)
    sem[:, :4] = 255  # a void band
    return {"image": torch.randn(b, 3, H, W, generator=g), "base_semantic": sem,
            "base_maps": torch.rand(b, 9, H, W, generator=g)}


def make_targets(b: int = 1) -> dict:
    """Hand-made renderer outputs: stuff class 2 with thing 0 at rows/cols 8..23 and thing 1 at rows 36..55,
    cols 30..59; a void strip at the last two columns."""
    sem = torch.full((H, W), 2, dtype=torch.long)
    inst = torch.zeros(H, W, dtype=torch.long)
    sem[8:24, 8:24], inst[8:24, 8:24] = 0, 1
    sem[36:56, 30:60], inst[36:56, 30:60] = 1, 2
    sem[:, 62:] = 255
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    center = torch.zeros(1, H, W)
    offset = torch.zeros(2, H, W)
    box = torch.zeros(4, H, W)
    for k in (1, 2):
        m = inst == k
        cy, cx = ys[m].mean(), xs[m].mean()
        center[0] = torch.maximum(center[0], torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * 8.0 ** 2)))
        offset[0][m], offset[1][m] = cy - ys[m], cx - xs[m]
        x0, x1, y0, y1 = xs[m].min(), xs[m].max(), ys[m].min(), ys[m].max()
        box[0][m], box[1][m], box[2][m], box[3][m] = xs[m] - x0, ys[m] - y0, x1 - xs[m], y1 - ys[m]
    labelled = (sem != 255).float()
    t = {"semantic": sem, "semantic_weight": labelled * torch.where(inst > 0, 3.0, 1.0), "center": center,
         "center_weight": labelled, "offset": offset, "offset_weight": (inst > 0).float(), "box": box,
         "foreground": (inst > 0).float(), "foreground_weight": labelled}
    return {k: v.unsqueeze(0).expand(b, *v.shape).clone() for k, v in t.items()}


# ------------------------------------------------------------------------------------------------------------------
# CoordConv and config


def test_add_coords_values_and_coordconv():
    x = torch.zeros(2, 1, 3, 5, dtype=torch.float64)
    y = add_coords(x)
    assert y.shape == (2, 3, 3, 5) and y.dtype == torch.float64
    assert torch.equal(y[:, 0], x[:, 0])
    assert torch.allclose(y[1, 1], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64).expand(3, 5))
    assert torch.allclose(y[0, 2], torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)[:, None].expand(3, 5))

    conv = CoordConv2d(1, 1, 1, bias=False)
    assert conv.weight.shape == (1, 3, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 2.0, -1.0]).view(1, 3, 1, 1))
    out = conv(torch.randn(1, 1, 3, 5))
    assert torch.allclose(out[0, 0], 2 * y[0, 1].float() - y[0, 2].float())


def test_config_round_trip_through_json():
    for cfg in (PRNConfig(), PRNConfig.tiny(), tiny(coordconv_encoder=False, box_head=False,
                                                    semantic_embedding_dim=0),
                tiny(classifier_channels=(8, 16, 16), classifier_crop_size=24)):
        again = PRNConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg and isinstance(again.decoder.aspp_rates, tuple)
    assert PRNConfig.from_dict({}) == PRNConfig()
    d = PRNConfig.tiny().to_dict()
    assert d["loss"] == {"semantic": 1.0, "semantic_top_k": 1.0, "center": 200.0, "offset": 0.01,
                         "foreground": 1.0, "box": 0.01, "boundary": 1.0, "boundary_outside": 0.05,
                         "classifier": 1.0, "classifier_label_smoothing": 0.05}
    with pytest.raises(TypeError, match="bogus"):
        PRNConfig.from_dict({"bogus": 1})


# ------------------------------------------------------------------------------------------------------------------
# outputs and switches


def test_outputs_eval_and_train():
    model = make_model().eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = model(inputs)
    expected = {"semantic": 3, "center": 1, "offset": 2, "foreground": 1, "box": 4}
    assert set(out) == set(expected)
    for k, c in expected.items():
        assert out[k].shape == (2, c, H, W) and out[k].dtype == torch.float32, k
        assert torch.isfinite(out[k]).all(), k
    # Predictors start at N(0, 0.001), bias 0: near-uniform classes, heatmap ~0, offsets ~0, boxes softplus(0) x 4.
    assert out["semantic"].softmax(1).sub(1 / 3).abs().max() < 0.05
    assert out["center"].abs().max() < 0.05 and out["offset"].abs().max() < 0.2
    assert (out["box"] >= 0).all() and torch.allclose(out["box"], torch.full_like(out["box"], 4 * math.log(2)),
                                                      atol=0.2)
    assert torch.equal(model.thing_classes, torch.tensor([True, True, False]))
    with torch.no_grad():  # eval is deterministic (dropout off, running statistics)
        assert torch.equal(model(inputs)["semantic"], out["semantic"])

    model.train()
    losses = model(make_inputs(1), make_targets(1))
    assert set(losses) == {"loss_semantic", "loss_center", "loss_offset", "loss_foreground", "loss_box"}
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v) and v > 0, k
    with pytest.raises(ValueError, match="targets"):
        model(make_inputs(1))


def test_heads_switches_remove_outputs_and_losses():
    model = make_model(foreground_head=False, box_head=False).eval()
    with torch.no_grad():
        out = model(make_inputs(1))
    assert set(out) == {"semantic", "center", "offset"}
    assert set(model.heads) == {"semantic", "center", "offset"}
    targets = make_targets(1)
    for k in ("box", "foreground", "foreground_weight"):
        del targets[k]  # not needed without the heads
    assert set(model.train()(make_inputs(1), targets)) == {"loss_semantic", "loss_center", "loss_offset"}

    sem_fg = make_model(foreground_decoder="semantic")
    inst_fg = make_model()
    d = PRNConfig.tiny().decoder
    first = lambda head: head.tower[0][0]  # the depthwise conv sees the decoder's channels (+ coords)
    assert first(sem_fg.heads["foreground"]).in_channels == d.semantic_channels + 2
    assert first(inst_fg.heads["foreground"]).in_channels == d.instance_channels + 2
    with pytest.raises(ValueError):
        make_model(foreground_decoder="nope")


def _transplant(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Copy ``src``'s weights into ``dst``, which has the same layout plus coordinate inputs appended last:
    every tensor fills the leading slice, and the coordinate input slices of ordinary convs are zeroed."""
    src_state = src.state_dict()
    with torch.no_grad():
        for k, v in dst.state_dict().items():
            s = src_state[k]
            assert all(a >= b for a, b in zip(v.shape, s.shape)), k
            v[tuple(slice(0, n) for n in s.shape)] = s
        src_convs = dict(src.named_modules())
        for name, m in dst.named_modules():
            if isinstance(m, torch.nn.Conv2d) and m.groups == 1:
                m.weight[:, src_convs[name].in_channels:] = 0


@pytest.mark.parametrize("switch", ["coordconv_encoder", "coordconv_decoder"])
def test_coordconv_switches_change_the_computation(switch):
    off = make_model(**{"coordconv_encoder": False, "coordconv_decoder": False}).eval()
    on = make_model(**{"coordconv_encoder": False, "coordconv_decoder": False, switch: True}).eval()
    if switch == "coordconv_encoder":
        assert on.backbone.conv1.in_channels == off.backbone.conv1.in_channels + 2 == on.in_channels
        assert on.stem_slices["coords"] == slice(off.in_channels, off.in_channels + 2)
        assert on.semantic_decoder.aspp.branches[0][0].in_channels == off.backbone.out_channels["c5"] + 2
    else:
        assert on.backbone.conv1.in_channels == off.backbone.conv1.in_channels
        assert on.instance_decoder.fuse2[1][0].in_channels == off.instance_decoder.fuse2[1][0].in_channels + 2
        assert on.heads["center"].tower[0][0].in_channels == off.heads["center"].tower[0][0].in_channels + 2
    _transplant(off, on)
    inputs = make_inputs(1)
    with torch.no_grad():
        ref, same = off(inputs), on(inputs)
    for k in ref:  # zero weights on the coordinates: the same function
        assert torch.allclose(ref[k], same[k], atol=1e-5), k
    # Non-zero coordinate weights: the coordinates now reach the outputs.
    with torch.no_grad():
        if switch == "coordconv_encoder":
            on.backbone.conv1.weight[:, -2:] = 0.05
        else:
            on.heads["offset"].tower[1][0].weight[:, -2:] = 0.5
            on.heads["offset"].predictor.weight.normal_(std=0.1)
        changed = on(inputs)
    assert (changed["offset"] - ref["offset"]).abs().max() > 1e-3


def test_offsets_and_boxes_are_scaled_from_stride_4_units():
    model = make_model().eval()
    with torch.no_grad():
        off = model.heads["offset"].predictor
        off.weight.zero_()
        off.bias.copy_(torch.tensor([1.5, -2.0]))
        box = model.heads["box"].predictor
        box.weight.zero_()
        box.bias.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]).expm1().log())  # softplus^-1: stride-4 distances
        out = model(make_inputs(1))
    assert torch.allclose(out["offset"][0, 0], torch.full((H, W), 6.0))
    assert torch.allclose(out["offset"][0, 1], torch.full((H, W), -8.0))
    assert torch.allclose(out["box"][0], torch.tensor([8.0, 2.0, 4.0, 12.0]).view(4, 1, 1).expand(4, H, W),
                          atol=1e-5)


def test_box_output_is_never_negative():
    model = make_model().eval()
    with torch.no_grad():
        model.heads["box"].predictor.bias.fill_(-30.0)
        model.heads["box"].predictor.weight.normal_(std=5.0)
        out = model(make_inputs(1))
    assert (out["box"] >= 0).all() and out["box"].max() > 0


# ------------------------------------------------------------------------------------------------------------------
# input encoding and the widened stem


def test_input_encoding_layout():
    model = make_model()
    inputs = make_inputs(1)
    x = model.encode_inputs(inputs)
    sl = model.stem_slices
    assert x.shape == (1, model.in_channels, H, W) and model.in_channels == 3 + 16 + 9 + 2
    assert torch.equal(x[:, sl["rgb"]], inputs["image"]) and torch.equal(x[:, sl["maps"]], inputs["base_maps"])
    emb = model.semantic_embedding.weight
    assert torch.equal(x[0, sl["semantic"], 10, 5], emb[inputs["base_semantic"][0, 10, 5]])
    assert (x[:, sl["semantic"], :4] == 0).all()  # void -> the zero padding row
    assert torch.allclose(x[0, sl["coords"]], add_coords(torch.zeros(1, 0, H, W))[0])

    onehot = make_model(semantic_embedding_dim=0, coordconv_encoder=False)
    x = onehot.encode_inputs(inputs)
    assert onehot.in_channels == 3 + 3 + 9
    sem = inputs["base_semantic"][0]
    expected = F.one_hot(sem.clamp(max=2), 3).permute(2, 0, 1).float() * (sem != 255)
    assert torch.equal(x[0, 3:6], expected)
    with pytest.raises(ValueError, match="base_maps"):
        onehot({**inputs, "base_maps": torch.zeros(1, 8, H, W)})


def test_extra_stem_channels_start_at_zero_and_leave_the_rgb_stem_unchanged():
    model = make_model().eval()
    conv1 = model.backbone.conv1
    assert conv1.weight.shape[1] == model.in_channels and (conv1.weight[:, 3:] == 0).all()
    assert conv1.weight[:, :3].abs().sum() > 0
    a, b = make_inputs(1, seed=1), make_inputs(1, seed=2)
    b["image"] = a["image"]  # same RGB, different base prediction
    with torch.no_grad():
        fa, fb = model.backbone(model.encode_inputs(a)), model.backbone(model.encode_inputs(b))
        rgb_only = ResNetBackbone(18, width=16, output_stride=16, return_c2=True).eval()
        state = model.backbone.state_dict()
        state["conv1.weight"] = state["conv1.weight"][:, :3]
        rgb_only.load_state_dict(state)
        ref = rgb_only(a["image"])
    for k in ("c2", "c3", "c5"):
        assert torch.equal(fa[k], fb[k]) and torch.equal(fa[k], ref[k]), k


def test_gradients_reach_every_head_and_the_extra_stem_channels():
    model = make_model().train()
    losses = model(make_inputs(1), make_targets(1))
    sum(losses.values()).backward()
    for name, head in model.heads.items():
        assert head.predictor.weight.grad.abs().sum() > 0, name
    grad = model.backbone.conv1.weight.grad
    for part in ("semantic", "maps", "coords"):
        assert grad[:, model.stem_slices[part]].abs().sum() > 0, part
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    # Each loss reaches its own head: the box loss alone gives the box predictor a gradient, not the semantic one.
    model.zero_grad()
    model(make_inputs(1), make_targets(1))["loss_box"].backward()
    assert model.heads["box"].predictor.weight.grad.abs().sum() > 0
    assert model.heads["semantic"].predictor.weight.grad is None or \
        model.heads["semantic"].predictor.weight.grad.abs().sum() == 0


def test_backbone_extensions_keep_defaults_and_match_torchvision_dilation():
    plain = ResNetBackbone(18, width=16)
    assert set(plain.out_channels) == {"c3", "c4", "c5"}
    feats = ResNetBackbone(18, width=16, output_stride=16, return_c2=True)(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape[-2:]) for k, v in feats.items()} == {"c2": (16, 16), "c3": (8, 8), "c4": (4, 4),
                                                                   "c5": (4, 4)}
    with pytest.raises(ValueError):
        ResNetBackbone(18, width=16, in_channels=5, frozen_stages=1)
    with pytest.raises(ValueError):
        ResNetBackbone(18, width=16, output_stride=4)

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    for os_, dilate in ((16, [False, False, True]), (8, [False, True, True])):
        with torch.no_grad():
            tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=dilate).eval()
            ours = ResNetBackbone(50, width=64, output_stride=os_).eval()
            ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
            ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
            got = ours(x)["c5"]
        assert got.shape[-1] == 64 // os_ and torch.allclose(got, ref, atol=1e-5)


def test_imagenet_weights_load_into_the_rgb_slice(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    cfg = tiny()
    cfg.backbone.width, cfg.backbone.output_stride = 64, 32
    model = build_model(cfg, CATS).eval()
    with torch.no_grad():
        model.backbone.conv1.weight[:, 3:] = 1.0  # loading must reset the extra channels to zero
    assert load_pretrained_backbone(model, path) == len(model.backbone.state_dict())
    assert torch.equal(model.backbone.conv1.weight[:, :3], tv.conv1.weight)
    assert (model.backbone.conv1.weight[:, 3:] == 0).all()
    inputs = make_inputs(1)
    with torch.no_grad():
        c5 = model.backbone(model.encode_inputs(inputs))["c5"]
        x = inputs["image"]
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
    assert torch.allclose(c5, ref, atol=1e-5)
    with pytest.raises(ValueError, match="resnet18.pth"):  # wrong width still fails loudly
        load_backbone_weights(make_model().backbone, path)


# ------------------------------------------------------------------------------------------------------------------
# losses


def _perfect_outputs(t: dict, c: int = 3) -> dict:
    sem = t["semantic"].clamp(max=c - 1)
    return {"semantic": F.one_hot(sem, c).permute(0, 3, 1, 2).float() * 50, "center": t["center"].clone(),
            "offset": t["offset"].clone(), "box": t["box"].clone(), "foreground": (t["foreground"] * 2 - 1)[:, None] * 50}


def test_losses_of_a_perfect_prediction_are_zero():
    t = make_targets(2)
    losses = prn_losses(_perfect_outputs(t), t, PRNLossConfig())
    for k, v in losses.items():
        assert v.abs() < 1e-6, k


def test_losses_on_a_hand_made_case():
    cfg = PRNLossConfig()
    t = make_targets(1)
    out = _perfect_outputs(t)
    out["offset"][0, 0, 10, 10] += 2.0  # thing pixel: |dy err| + |dx err| = 3
    out["offset"][0, 1, 10, 10] -= 1.0
    out["offset"][0, 0, 0, 0] += 100.0  # stuff pixel: offset weight 0, ignored
    out["center"][0, 0, 30, 30] += 0.5  # labelled pixel: squared error 0.25
    out["box"][0, 2, 40, 40] += 4.0
    losses = prn_losses(out, t, cfg)
    n_thing, n_labelled = t["offset_weight"].sum(), t["center_weight"].sum()
    assert torch.allclose(losses["loss_offset"], 0.01 * 3 / n_thing)
    assert torch.allclose(losses["loss_center"], 200 * 0.25 / n_labelled)
    assert torch.allclose(losses["loss_box"], 0.01 * 4 / n_thing)

    zero = {k: (torch.zeros_like(v) if k.endswith("_weight") else v) for k, v in t.items()}
    wrong = {k: v.detach().clone().requires_grad_(True) for k, v in _perfect_outputs(t).items()}
    wrong["offset"].data += 5
    wrong["semantic"].data = -wrong["semantic"].data
    losses = prn_losses(wrong, zero, cfg)
    for k, v in losses.items():  # all weights zero: every loss is 0, and still differentiable
        assert v == 0, k
    sum(losses.values()).backward()

    # The normaliser is the weight sum clamped at 1: one pixel of weight 0.5 with error 2 gives 0.5 * 2 / 1.
    assert torch.allclose(weighted_mean(torch.tensor([[[2.0, 7.0]]]), torch.tensor([[[0.5, 0.0]]])),
                          torch.tensor(1.0))
    assert torch.allclose(weighted_mean(torch.tensor([[[2.0, 4.0]]]), torch.tensor([[[1.0, 3.0]]])),
                          torch.tensor(14.0 / 4))


def test_semantic_loss_weights_and_top_k_mining():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    ones = torch.ones(2, 4, 5)
    ce = F.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(semantic_cross_entropy(logits, target, ones), ce.mean())

    target[0, 0] = 255  # 5 void pixels (weight 1 in the map, but the label is void)
    weight = ones.clone()
    weight[1, 2] = 3.0  # 5 "small instance" pixels
    ce = F.cross_entropy(logits, target, reduction="none", ignore_index=255)
    valid = target != 255
    w = weight * valid
    assert torch.allclose(semantic_cross_entropy(logits, target, weight), (ce * w).sum() / w.sum())

    # top 20% of the 35 labelled pixels = 7 pixels with the largest weighted loss; hand-computed reference.
    wl = (ce * w)[valid]
    ww = w[valid]
    order = wl.argsort(descending=True)[:7]
    expected = wl[order].sum() / ww[order].sum()
    got = semantic_cross_entropy(logits, target, weight, top_k=0.2)
    assert torch.allclose(got, expected)
    assert got > semantic_cross_entropy(logits, target, weight)  # the hardest pixels cost more than the mean

    # Mining keeps the hard pixels: making easy pixels perfect does not change the top-k loss.
    easy_idx = valid.nonzero()[wl.argsort()[:10]]
    boosted = logits.clone()
    for bi, yi, xi in easy_idx.tolist():
        boosted[bi, target[bi, yi, xi], yi, xi] += 20.0
    assert torch.allclose(semantic_cross_entropy(boosted, target, weight, top_k=0.2), expected)
    assert semantic_cross_entropy(logits, torch.full_like(target, 255), weight, top_k=0.2) == 0


# ------------------------------------------------------------------------------------------------------------------
# learning


def test_tiny_model_overfits_one_sample():
    model = make_model(seed=0).train()
    targets = make_targets(1)
    g = torch.Generator().manual_seed(3)
    base_sem = targets["semantic"].clone()
    base_sem[:, 8:24, 16:24] = 2  # a base prediction that misses part of an instance
    inputs = {"image": torch.randn(1, 3, H, W, generator=g), "base_semantic": base_sem,
              "base_maps": torch.zeros(1, 9, H, W)}
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        losses = model(inputs, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"total": loss.item(), **{k: v.item() for k, v in losses.items()}})
    assert all(math.isfinite(v) for h in history for v in h.values())
    first, last = history[0], history[-1]
    assert last["total"] < 0.5 * first["total"], history
    # Not only the (x200) center term: the classification terms learn too.
    assert last["loss_semantic"] < 0.7 * first["loss_semantic"], history
    assert last["loss_foreground"] < 0.85 * first["loss_foreground"], history


def test_base_prior_makes_a_fresh_prn_reproduce_its_base():
    """With ``base_prior`` the untrained network's maps are its base's: the argmax class is the base class,
    centre/offset/box equal the base maps (heads start near zero), foreground follows the base foreground."""
    model = make_model(base_prior=True).eval()
    inputs = make_inputs()
    scale = model.config.base_offset_scale
    maps = inputs["base_maps"]
    with torch.no_grad():
        out = model(inputs)
    sem = inputs["base_semantic"]
    valid = sem < 3
    assert valid.any() and (out["semantic"].argmax(1)[valid] == sem[valid]).all()
    assert (out["center"] - maps[:, 1:2]).abs().max() < 0.05
    assert (out["offset"] - maps[:, 2:4] * scale).abs().max() < 0.3
    far = maps[:, 4:8] * scale > 6          # softplus is the identity to within 0.3% above 6 px
    assert (out["box"][far] - (maps[:, 4:8] * scale)[far]).abs().max() < 0.3
    clear = (maps[:, 0:1] - 0.5).abs() > 0.1   # the random test maps are not binary
    assert ((out["foreground"] > 0) == (maps[:, 0:1] > 0.5))[clear].all()
    assert set(dict(model.named_parameters())) >= {f"prior_scale.{k}" for k in expected_heads()}
    assert model.prior_gain("semantic").shape == (1, 3, 1, 1) and float(model.prior_gain("center").detach()) == 1.0
    raw = make_model(base_prior=False).eval()
    with torch.no_grad():
        assert not torch.allclose(raw(inputs)["center"], out["center"])


def expected_heads():
    return ("semantic", "center", "offset", "foreground", "box")


# ------------------------------------------------------------------------------------------------------------------
# the shared contract (tests/models/base.py)


class TestPRNContract(NetworkContract):
    """The full tiny PRN as ``prn train prn --arch tiny`` builds it: every switch on, with the base prior."""

    kind = "prn"
    loss_names = frozenset({"loss_semantic", "loss_center", "loss_offset", "loss_foreground", "loss_box"})
    zero_grad_at_init = {
        "semantic_embedding.weight": "the stem's weights of every input channel after RGB start at zero (the "
                                     "model docstring), so the base-semantic embedding, which only feeds those "
                                     "channels, gets a gradient from the second step on (checked below)",
    }

    def categories(self):
        return CATS

    def make_config(self):
        return PRNConfig.tiny()

    def config_from_dict(self, d):
        return PRNConfig.from_dict(d)

    def build(self, config, categories):
        return build_model(config, categories)

    def make_inputs(self):
        return make_inputs(2)

    def make_targets(self):
        return make_targets(2)

    def forward(self, model, inputs, targets=None):
        return model(inputs, targets)

    def checkpoint_config(self, config):
        from prn_cli.models.prn.postprocess import PostProcessConfig
        from prn_cli.models.prn.render import RenderConfig
        from prn_cli.train import plain_dataclass

        return {"model": config.to_dict(), "render": plain_dataclass(RenderConfig()),
                "postprocess": plain_dataclass(PostProcessConfig())}

    def config_from_checkpoint(self, stored):
        return PRNConfig.from_dict(stored["model"])

    def check_eval_outputs(self, outputs, inputs, model):
        b, _, h, w = inputs["image"].shape
        channels = {"semantic": len(CATS), "center": 1, "offset": 2, "foreground": 1, "box": 4}
        assert isinstance(outputs, dict) and set(outputs) == set(channels)
        for name, c in channels.items():
            assert outputs[name].shape == (b, c, h, w) and outputs[name].is_floating_point(), name
        assert bool((outputs["box"] >= 0).all())

    def test_the_semantic_embedding_learns_from_the_second_step(self):
        model = self.new_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(2):
            optimizer.zero_grad()
            sum(self.train_losses(model).values()).backward()
            grad = model.semantic_embedding.weight.grad
            assert (float(grad.abs().sum()) > 0) == (step == 1), step
            optimizer.step()


def test_a_fresh_full_resolution_refiner_changes_nothing_and_its_grads_flow():
    plain = make_model(seed=3, base_prior=True).eval()
    refined = build_model(tiny(base_prior=True, full_resolution_channels=8), CATS).eval()
    missing = refined.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("full_resolution.") for k in missing)
    inputs = make_inputs(b=1)
    with torch.no_grad():
        a, b = plain(inputs), refined(inputs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    refined.train()
    losses = refined(inputs, make_targets(b=1))
    sum(losses.values()).backward()
    assert float(refined.full_resolution.correction.weight.grad.abs().sum()) > 0


def test_the_full_resolution_refiner_sees_as_far_as_its_dilations_reach():
    """(1, 1) sees 5x5 pixels, (1, 2, 4) sees 15x15: an image change 7 px away reaches the centre pixel's
    correction only through the dilated layers. Default dilations keep the two-layer refiner's state_dict keys."""
    from prn_cli.models.prn.config import PRNConfig
    from prn_cli.models.prn.model import FullResolutionRefiner

    def reach(dilations):
        torch.manual_seed(0)
        refiner = FullResolutionRefiner(num_classes=2, channels=4, foreground=False, dilations=dilations)
        torch.nn.init.normal_(refiner.correction.weight)
        image = torch.zeros(1, 3, 17, 17, requires_grad=True)
        refiner(image, {"semantic": torch.zeros(1, 2, 17, 17)})["semantic"][0, :, 8, 8].sum().backward()
        far = image.grad[0].abs().sum(0)
        return {d: float(far[8, 8 + d]) > 0 for d in (2, 3, 7, 8)}

    assert reach((1, 1)) == {2: True, 3: False, 7: False, 8: False}
    assert reach((1, 2, 4)) == {2: True, 3: True, 7: True, 8: False}
    keys = set(FullResolutionRefiner(num_classes=2, channels=4, foreground=False).state_dict())
    assert keys == {"body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "correction.weight",
                    "correction.bias"}
    assert PRNConfig.from_dict({"full_resolution_dilations": [1, 2]}).full_resolution_dilations == (1, 2)
    with pytest.raises(ValueError, match="full_resolution_dilations"):
        PRNConfig(full_resolution_dilations=(1, 0))


def test_the_full_resolution_refiner_learns_a_boundary_the_stride_4_heads_blur():
    """Semantic logits that are a blurred (stride-4-like) copy of a sharp two-class edge, and the image showing
    the edge: trained alone for a few hundred steps, the refiner puts the boundary where the image has it."""
    from prn_cli.models.prn.model import FullResolutionRefiner

    torch.manual_seed(0)
    refiner = FullResolutionRefiner(num_classes=2, channels=8, foreground=False)
    opt = torch.optim.Adam(refiner.parameters(), lr=0.01)
    h = w = 32

    def sample():
        edge = int(torch.randint(10, 22, ()))
        truth = torch.zeros(1, h, w, dtype=torch.long)
        truth[..., edge:] = 1
        image = truth[:, None].float().expand(1, 3, h, w) * 2 - 1
        coarse = F.interpolate(F.avg_pool2d(F.one_hot(truth, 2).permute(0, 3, 1, 2).float(), 8), size=(h, w),
                               mode="bilinear", align_corners=False) * 6 - 3   # boundary off by up to 4 px
        return image, {"semantic": coarse}, truth

    def errors(n=20):
        wrong = 0
        with torch.no_grad():
            for _ in range(n):
                image, outputs, truth = sample()
                wrong += int((refiner(image, outputs)["semantic"].argmax(1) != truth).sum())
        return wrong

    before = errors()
    for _ in range(300):
        image, outputs, truth = sample()
        loss = F.cross_entropy(refiner(image, outputs)["semantic"], truth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 100 and errors() < before / 5


def test_training_only_the_full_resolution_refiner_moves_nothing_else():
    torch.manual_seed(0)
    model = build_model(tiny(base_prior=True, full_resolution_channels=8, trainable="full_resolution"), CATS)
    model.train()
    assert model.full_resolution.training and not model.backbone.training and not model.heads.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("full_resolution.") for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        losses = model(make_inputs(b=1), make_targets(b=1))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("full_resolution.") for k in changed)   # BN statistics included
    semantic_only = build_model(tiny(base_prior=True, full_resolution_channels=8, full_resolution_foreground=False),
                                CATS)
    assert semantic_only.full_resolution.correction.out_channels == len(CATS)
    with pytest.raises(ValueError, match="trainable"):
        build_model(tiny(trainable="backbone"), CATS)
    with pytest.raises(ValueError, match="full_resolution_channels"):
        build_model(tiny(trainable="full_resolution"), CATS)

"""ResNet backbone (torchvision-compatible weights, configurable width) and the P3-P7 feature pyramid."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from prn_cli.models.backbone import FPN, ResNetBackbone, load_backbone_weights


@pytest.mark.parametrize("depth,width", [(18, 16), (50, 16), (18, 64), (50, 64)])
def test_backbone_and_fpn_shapes(depth, width):
    torch.manual_seed(0)
    backbone = ResNetBackbone(depth, width=width).eval()
    fpn = FPN(backbone.out_channels, 32)
    h, w = 70, 45  # not multiples of the stride: every level must be ceil(size / stride)
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, h, w))
        pyramid = fpn(feats)
    expansion = 1 if depth == 18 else 4
    for name, s, mult in (("c3", 8, 2), ("c4", 16, 4), ("c5", 32, 8)):
        assert feats[name].shape == (1, width * mult * expansion, math.ceil(h / s), math.ceil(w / s))
        assert backbone.out_channels[name] == width * mult * expansion
    assert len(pyramid) == 5
    for p, s in zip(pyramid, (8, 16, 32, 64, 128)):
        assert p.shape == (1, 32, math.ceil(h / s), math.ceil(w / s))


def test_width64_matches_torchvision_layout():
    for depth, ctor in ((18, torchvision.models.resnet18), (34, torchvision.models.resnet34),
                        (50, torchvision.models.resnet50), (101, torchvision.models.resnet101)):
        with torch.device("meta"):  # shapes only: skip allocating and initialising the weights
            ours = ResNetBackbone(depth, width=64).state_dict()
            theirs = {k: v for k, v in ctor(weights=None).state_dict().items() if not k.startswith("fc.")}
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_torchvision_weights_load_and_give_identical_features(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics, so loading them is actually checked
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)

    backbone = ResNetBackbone(18, width=64)
    n = load_backbone_weights(backbone, path)
    assert n == len(backbone.state_dict())
    tv.eval()
    backbone.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        c5 = backbone(x)["c5"]
    assert torch.equal(c5, ref)

    frozen = ResNetBackbone(18, width=64, norm="frozen_bn")  # no num_batches_tracked slots: still loads
    load_backbone_weights(frozen, path)
    with torch.no_grad():
        assert torch.allclose(frozen(x)["c5"], ref, rtol=1e-4, atol=1e-4)  # BN folded differently


def test_wrong_weights_files_raise_value_error(tmp_path):
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="list.pth"):
        load_backbone_weights(ResNetBackbone(18, width=16), not_a_dict)

    narrow = tmp_path / "narrow.pth"
    torch.save(ResNetBackbone(18, width=16).state_dict(), narrow)
    with pytest.raises(ValueError, match="narrow.pth.*shape"):
        load_backbone_weights(ResNetBackbone(18, width=64), narrow)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_backbone_weights(ResNetBackbone(18, width=16), garbage)

    with pytest.raises(FileNotFoundError):
        load_backbone_weights(ResNetBackbone(18, width=16), tmp_path / "absent.pth")


def test_frozen_stages_and_norms():
    b = ResNetBackbone(18, width=16, frozen_stages=2)
    assert not any(p.requires_grad for p in b.conv1.parameters())
    assert not any(p.requires_grad for p in b.layer1.parameters())
    assert all(p.requires_grad for p in b.layer2.parameters())
    b.train()
    assert not b.bn1.training and not b.layer1[0].bn1.training and b.layer2[0].bn1.training
    gn = ResNetBackbone(18, width=16, norm="gn")
    assert isinstance(gn.bn1, torch.nn.GroupNorm) and gn.bn1.num_groups == 16
    with pytest.raises(ValueError):
        ResNetBackbone(18, width=16, norm="nope")


def test_gradients_reach_all_fpn_levels():
    torch.manual_seed(0)
    backbone = ResNetBackbone(18, width=16)
    fpn = FPN(backbone.out_channels, 16)
    pyramid = fpn(backbone(torch.randn(2, 3, 64, 64)))
    for level, p in enumerate(pyramid):
        (g,) = torch.autograd.grad(p.square().mean(), backbone.conv1.weight, retain_graph=True)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, level
    sum(p.square().mean() for p in pyramid).backward()
    for name, prm in fpn.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, name


def test_a_base_checkpoint_initialises_a_prn_encoder(tmp_path):
    """PRN's encoder can start from the trained base model: the base checkpoint's ``backbone.*`` tensors load
    into the widened PRN stem (RGB slice) and the rest of the ResNet."""
    from prn_cli.checkpoint import save_checkpoint
    from prn_cli.models.ms_panoptic_fpn.config import MSPanopticFPNConfig
    from prn_cli.models.ms_panoptic_fpn.model import build_model as build_base
    from prn_cli.models.prn.model import build_model as build_prn, load_pretrained_backbone
    from prn_cli.synth import synth_categories
    from prn_cli.train import prn_model_config

    torch.manual_seed(0)
    base = build_base(MSPanopticFPNConfig.tiny(), synth_categories())
    path = save_checkpoint(tmp_path / "base.pt", kind="base", config={}, categories=synth_categories(),
                           model_state=base)
    prn = build_prn(prn_model_config("tiny"), synth_categories())
    assert load_pretrained_backbone(prn, path) == len(prn.backbone.state_dict())
    stem = prn.backbone.conv1.weight
    assert torch.equal(stem[:, :3], base.backbone.conv1.weight) and stem[:, 3:].abs().sum() == 0
    assert torch.equal(prn.backbone.layer4[1].conv2.weight, base.backbone.layer4[1].conv2.weight)


def test_training_backbone_weights_errors_name_the_file(tmp_path):
    from prn_cli.errors import InvalidInputError
    from prn_cli.models.prn.model import build_model as build_prn
    from prn_cli.synth import synth_categories
    from prn_cli.train import check_backbone_weights, with_backbone_weights, prn_model_config

    with pytest.raises(InvalidInputError, match="missing.pt.*missing"):
        check_backbone_weights(str(tmp_path / "missing.pt"))
    wrong = tmp_path / "r18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)    # width 64: does not fit the tiny PRN
    with pytest.raises(InvalidInputError, match="r18.pth.*do not fit"):
        with_backbone_weights(build_prn(prn_model_config("tiny"), synth_categories()), str(wrong))

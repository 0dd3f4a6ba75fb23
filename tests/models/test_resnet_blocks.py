"""prn's ResNet blocks are torchvision's: the same state_dict keys, the same random initialisation, the same
outputs (they exist so that PRN runs without importing torchvision)."""

from __future__ import annotations

import pytest
import torch

from prn_cli.models import backbone as ours

resnet = pytest.importorskip("torchvision.models.resnet")
ops = pytest.importorskip("torchvision.ops")


@pytest.mark.parametrize("name,stride,downsample", [("BasicBlock", 1, False), ("BasicBlock", 2, True),
                                                     ("Bottleneck", 1, True), ("Bottleneck", 2, True)])
def test_blocks_match_torchvision(name, stride, downsample):
    planes, in_ch = 8, 16
    out_ch = planes * getattr(resnet, name).expansion
    in_ch = in_ch if downsample else out_ch

    def build(module):
        torch.manual_seed(3)
        down = torch.nn.Sequential(ours.conv1x1(in_ch, out_ch, stride), torch.nn.BatchNorm2d(out_ch)) \
            if downsample else None
        block = getattr(module, name)(in_ch, planes, stride, down, norm_layer=torch.nn.BatchNorm2d)
        for m in block.modules():            # non-trivial statistics, so eval-mode BatchNorm does something
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        return block.eval()

    mine, theirs = build(ours), build(resnet)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    for (k, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(2, in_ch, 12, 10)
    with torch.no_grad():
        assert torch.equal(mine(x), theirs(x))


def test_frozen_batchnorm_matches_torchvision():
    mine, theirs = ours.FrozenBatchNorm2d(6), ops.FrozenBatchNorm2d(6)
    state = {"weight": torch.rand(6) + 0.5, "bias": torch.randn(6), "running_mean": torch.randn(6),
             "running_var": torch.rand(6) + 0.5, "num_batches_tracked": torch.tensor(7)}
    mine.load_state_dict(dict(state))
    theirs.load_state_dict(dict(state))
    x = torch.randn(3, 6, 5, 4)
    assert torch.equal(mine(x), theirs(x))
    assert not torch.equal(mine(x), x)

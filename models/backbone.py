"""ResNet backbone (torchvision blocks, configurable width) and the ATSS feature pyramid P3-P7.

Contracts
---------
- :class:`ResNetBackbone` ``forward(x)``: ``x`` (B, 3, H, W) float (ImageNet-normalised) -> dict
  ``{"c3": (B, C3, ceil(H/8), ceil(W/8)), "c4": (..., /16), "c5": (..., /32)}``; channel counts in
  ``backbone.out_channels``.
- :class:`FPN` ``forward(features)``: the dict above -> list ``[P3, P4, P5, P6, P7]``, level ``l`` of shape
  (B, out_channels, ceil(H/s), ceil(W/s)) with s = 8, 16, 32, 64, 128.
- :func:`load_backbone_weights`: loads a torchvision-format ResNet ``state_dict`` from a local file (nothing is
  ever downloaded).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["ResNetBackbone", "FPN", "load_backbone_weights", "group_norm_groups"]

#: depth -> (block, blocks per stage), as torchvision's resnet18/34/50/101.
_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def group_norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` dividing ``channels`` (reduced-width models have e.g. 16 channels)."""
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


def _norm_factory(norm: str) -> Callable[[int], nn.Module]:
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "gn":
        return lambda c: nn.GroupNorm(group_norm_groups(c), c)
    raise ValueError(f"unknown backbone norm {norm!r} (expected 'bn', 'frozen_bn' or 'gn')")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier, returning C3-C5.

    Module names (``conv1``, ``bn1``, ``layer1``..``layer4``) and, at ``width=64``, every parameter shape equal
    torchvision's ``resnetXX``, so its ImageNet ``state_dict`` loads as is. ``width`` scales the stem and all
    stage widths (``width * (1, 2, 4, 8)``, times 4 for bottleneck outputs); a small width gives a CPU-sized model.

    ``frozen_stages=k`` freezes the stem and the first ``k-1`` residual stages (detectron2's FREEZE_AT): their
    parameters get ``requires_grad=False`` and their norm layers stay in eval mode, so their statistics never
    drift either.
    """

    def __init__(self, depth: int = 50, width: int = 64, norm: str = "bn", frozen_stages: int = 0):
        super().__init__()
        if depth not in _SPECS:
            raise ValueError(f"unsupported ResNet depth {depth} (expected one of {sorted(_SPECS)})")
        if not 0 <= frozen_stages <= 5:
            raise ValueError(f"frozen_stages must be in 0..5, got {frozen_stages}")
        block, blocks = _SPECS[depth]
        norm_layer = _norm_factory(norm)
        self.depth, self.width, self.norm, self.frozen_stages = depth, width, norm, frozen_stages

        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for i, (n, mult) in enumerate(zip(blocks, (1, 2, 4, 8))):
            layer, in_ch = self._make_stage(block, in_ch, width * mult, n, 1 if i == 0 else 2, norm_layer)
            self.add_module(f"layer{i + 1}", layer)
        e = block.expansion
        self.out_channels = {"c3": 2 * width * e, "c4": 4 * width * e, "c5": 8 * width * e}

        # torchvision's initialisation, so a fresh model matches resnetXX(weights=None) in distribution.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in self._stages()[:frozen_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.train()

    @staticmethod
    def _make_stage(block, in_ch: int, planes: int, n: int, stride: int, norm_layer):
        # Same layout as torchvision's ResNet._make_layer (hence identical state_dict keys).
        out_ch = planes * block.expansion
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))
        layers = [block(in_ch, planes, stride, downsample, norm_layer=norm_layer)]
        layers += [block(out_ch, planes, norm_layer=norm_layer) for _ in range(1, n)]
        return nn.Sequential(*layers), out_ch

    def _stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in self._stages()[: self.frozen_stages]:
            for m in stage.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"c3": c3, "c4": c4, "c5": c5}


_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> int:
    """Load a torchvision-format ResNet ``state_dict`` (e.g. ``resnet50-*.pth``) from the local file ``path``.

    The classifier (``fc.*``) is dropped. A checkpoint wrapping the dict under ``"state_dict"`` or ``"model"`` is
    unwrapped. Normalisation statistics that the backbone has no slot for (GroupNorm backbones, or
    ``num_batches_tracked`` with frozen BN) are skipped; every other key must match by name and shape.

    Returns the number of tensors loaded. Raises ``FileNotFoundError`` for a missing file and ``ValueError``
    (naming the file) when it is not a tensor ``state_dict`` or does not fit the backbone (wrong depth or width).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    try:
        # weights_only: a weights file must never be able to run code when loaded.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, disallowed globals ...
        raise ValueError(f"{path}: not a loadable torch state_dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v)
                                                         for k, v in obj.items()):
        raise ValueError(f"{path}: expected a state_dict (a dict of name -> tensor), got {type(obj).__name__}")

    expected = backbone.state_dict()
    given = {k: v for k, v in obj.items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(k for k in set(given) - set(expected) if not k.endswith(_STAT_SUFFIXES))
    bad_shape = sorted(k for k in set(given) & set(expected) if given[k].shape != expected[k].shape)
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"{len(bad_shape)} with other shapes (e.g. {k}: file {tuple(given[k].shape)} vs "
                         f"model {tuple(expected[k].shape)})")
        desc = f"ResNet-{getattr(backbone, 'depth', '?')} width {getattr(backbone, 'width', '?')}"
        raise ValueError(f"{path}: weights do not fit the backbone ({desc}): " + "; ".join(parts))
    state = {k: given[k] for k in expected}
    backbone.load_state_dict(state, strict=True)
    return len(state)


class FPN(nn.Module):
    """Feature pyramid of ATSS/RetinaNet: P3-P5 from C3-C5, P6 = 3x3/2 conv on P5, P7 = 3x3/2 conv on ReLU(P6).

    ``in_channels``: ``{"c3": C3, "c4": C4, "c5": C5}`` (``ResNetBackbone.out_channels``). No normalisation,
    as in ATSS. Top-down upsampling is nearest to the exact lower-level size, so odd input sizes work.
    """

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256):
        super().__init__()
        self.in_names = ("c3", "c4", "c5")
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[k], out_channels, 1) for k in self.in_names)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in self.in_names)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Uniform fan-in init with a=1 (detectron2's c2_xavier_fill), the FPN init ATSS uses.
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        xs = [features[k] for k in self.in_names]
        top = self.lateral[-1](xs[-1])
        outs = [self.output[-1](top)]
        for i in range(len(xs) - 2, -1, -1):
            lat = self.lateral[i](xs[i])
            top = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](top))
        p6 = self.p6(outs[-1])
        p7 = self.p7(F.relu(p6))
        return outs + [p6, p7]

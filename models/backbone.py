"""ResNet backbone (torchvision blocks, configurable width) and the ATSS feature pyramid P3-P7.

Contracts
---------
- :class:`ResNetBackbone` ``forward(x)``: ``x`` (B, in_channels = 3, H, W) float (ImageNet-normalised RGB) -> dict
  ``{"c3": (B, C3, ceil(H/8), ceil(W/8)), "c4": (..., /16), "c5": (..., /32)}``; channel counts in
  ``backbone.out_channels``. Options: ``return_c2`` adds ``"c2"`` (layer1, stride 4); ``output_stride=16`` dilates
  layer4 instead of striding (c5 at stride 16), ``8`` also layer3 (c4 and c5 at stride 8); ``in_channels > 3``
  takes extra input channels after the RGB ones, their stem weights starting at zero.
- :class:`FPN` ``forward(features)``: the dict above -> list ``[P3, P4, P5, P6, P7]``, level ``l`` of shape
  (B, out_channels, ceil(H/s), ceil(W/s)) with s = 8, 16, 32, 64, 128.
- :func:`load_backbone_weights`: loads a torchvision-format ResNet ``state_dict`` from a local file (nothing is
  ever downloaded); into a widened stem (``in_channels > 3``) it loads the RGB slice and zeroes the rest.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResNetBackbone", "FPN", "load_backbone_weights", "group_norm_groups", "BasicBlock", "Bottleneck",
           "FrozenBatchNorm2d"]


# ResNet blocks with torchvision's layout (attribute names, construction order, so state_dict keys, random
# initialisation and outputs are the same), written here so that a network without torchvision's detection
# ops (PRN) does not import torchvision: its import pulls in torch._dynamo and sympy (~150 MB and seconds).


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, and a shortcut (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (buffers, never trained): y = x * scale + shift."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)     # a BatchNorm2d's counter: meaningless here
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift

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

    Keyword-only extensions (the defaults give exactly the plain backbone above, same keys and shapes):

    - ``in_channels``: input channels; ``x[:, :3]`` is RGB. The stem is built and initialised as a 3-channel one
      (same random draws), then ``conv1`` is widened with ZERO weights for channels ``3..in_channels-1``, so at
      the start the stem's output does not depend on the extra channels and ImageNet RGB weights keep their
      response. ``conv1.weight`` is then (width, in_channels, 7, 7); the key name is unchanged.
    - ``output_stride``: 32 (plain), 16 (layer4 dilated) or 8 (layer3 and layer4 dilated), as torchvision's
      ``replace_stride_with_dilation``: the dilated stage's first block keeps the previous dilation, its other
      blocks use the new one (BasicBlock included, which torchvision refuses). Only stride/dilation/padding
      attributes change, never a weight.
    - ``return_c2``: also return ``"c2"``, the layer1 output (stride 4), and list it in ``out_channels``.
    """

    def __init__(self, depth: int = 50, width: int = 64, norm: str = "bn", frozen_stages: int = 0, *,
                 in_channels: int = 3, output_stride: int = 32, return_c2: bool = False):
        super().__init__()
        if depth not in _SPECS:
            raise ValueError(f"unsupported ResNet depth {depth} (expected one of {sorted(_SPECS)})")
        if not 0 <= frozen_stages <= 5:
            raise ValueError(f"frozen_stages must be in 0..5, got {frozen_stages}")
        if in_channels < 3:
            raise ValueError(f"in_channels must be >= 3 (RGB first), got {in_channels}")
        if in_channels > 3 and frozen_stages >= 1:
            raise ValueError("a frozen stem would keep the weights of the extra input channels at zero forever: "
                             "use frozen_stages=0 with in_channels > 3")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, blocks = _SPECS[depth]
        norm_layer = _norm_factory(norm)
        self.depth, self.width, self.norm, self.frozen_stages = depth, width, norm, frozen_stages
        self.in_channels, self.output_stride, self.return_c2 = in_channels, output_stride, return_c2

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
        if return_c2:
            self.out_channels = {"c2": width * e, **self.out_channels}

        # torchvision's initialisation, so a fresh model matches resnetXX(weights=None) in distribution.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if in_channels > 3:
            # Widen after initialising: the RGB weights are the same draws as a 3-channel backbone's.
            w = self.conv1.weight
            extra = torch.zeros(w.shape[0], in_channels - 3, *w.shape[2:], dtype=w.dtype, device=w.device)
            self.conv1.weight = nn.Parameter(torch.cat([w.detach(), extra], dim=1))
            self.conv1.in_channels = in_channels
        dilation = 1
        for stage, dilate in ((self.layer3, output_stride == 8), (self.layer4, output_stride < 32)):
            if dilate:
                _dilate_stage(stage, dilation, dilation * 2)
                dilation *= 2
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
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        if self.return_c2:
            return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}
        return {"c3": c3, "c4": c4, "c5": c5}


def _dilate_stage(stage: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a stride-2 stage into a stride-1 dilated one in place, as torchvision's ``replace_stride_with_dilation``.

    The first block's 3x3 conv loses its stride and keeps ``previous_dilation``; every later block's 3x3 convs get
    ``dilation`` (padding = dilation, so sizes are kept). The downsample 1x1 conv loses its stride.
    """
    for i, blk in enumerate(stage):
        d = previous_dilation if i == 0 else dilation
        convs = [blk.conv1, blk.conv2] if isinstance(blk, BasicBlock) else [blk.conv2]  # the 3x3 convs
        for conv in convs:
            conv.stride = (1, 1)
            conv.dilation = (d, d)
            conv.padding = (d, d)
        if blk.downsample is not None:
            blk.downsample[0].stride = (1, 1)


_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> int:
    """Load a torchvision-format ResNet ``state_dict`` (e.g. ``resnet50-*.pth``) from the local file ``path``.

    The classifier (``fc.*``) is dropped. A checkpoint wrapping the dict under ``"state_dict"`` or ``"model"`` is
    unwrapped; a whole network's state_dict whose ResNet sits under ``backbone.`` (a prn base checkpoint, so
    PRN's encoder can start from the trained base model's) contributes that part. Normalisation statistics that the backbone has no slot for (GroupNorm backbones, or
    ``num_batches_tracked`` with frozen BN) are skipped; every other key must match by name and shape.

    A backbone whose stem takes more than 3 input channels (``in_channels > 3``) receives the file's 3-channel
    ``conv1.weight`` in its RGB slice, and its extra input channels are set to zero: the stem then responds to RGB
    exactly as the pretrained ResNet, whatever the extra channels hold.

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

    if not any(k.startswith("conv1.") for k in obj) and any(k.startswith("backbone.conv1.") for k in obj):
        # a whole network's state_dict (e.g. a prn base checkpoint): take its backbone
        obj = {k[len("backbone."):]: v for k, v in obj.items() if k.startswith("backbone.")}
    expected = backbone.state_dict()
    given = {k: v for k, v in obj.items() if not k.startswith("fc.")}
    stem = expected.get("conv1.weight")
    rgb = given.get("conv1.weight")
    if (stem is not None and rgb is not None and stem.dim() == rgb.dim() == 4 and rgb.shape[1] == 3
            and stem.shape[1] > 3 and stem.shape[0] == rgb.shape[0] and stem.shape[2:] == rgb.shape[2:]):
        extra = rgb.new_zeros(rgb.shape[0], stem.shape[1] - 3, *rgb.shape[2:])
        given["conv1.weight"] = torch.cat([rgb, extra], dim=1)  # widened stem: RGB slice + zero extra channels
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

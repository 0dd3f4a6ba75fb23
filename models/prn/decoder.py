"""Panoptic-DeepLab parts of PRN: ASPP, the dual decoders and the stride-4 prediction heads (docs/design.md, "PRN").

Contracts
---------
- :class:`ASPP` ``forward(x)``: (B, in_channels, h, w) -> (B, out_channels, h, w). With ``coords`` the two
  CoordConv channels are appended to ``x`` first (every branch sees them).
- :class:`PanopticDeepLabDecoder` ``forward(features)``: the backbone dict with ``"c2"`` (stride 4), ``"c3"``
  (stride 8) and ``"c5"`` (stride 16 or 32) -> (B, channels, H/4, W/4), the size of ``c2``.
- :class:`PredictionHead` ``forward(x)``: (B, in_channels, h, w) -> (B, out_channels, h, w) raw values (logits or
  regressions; activation and upsampling belong to the caller).

Every convolution that has coordinates appended takes them as its LAST two input channels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import group_norm_groups
from ..coordconv import COORD_CHANNELS, add_coords

__all__ = ["ASPP", "DepthwiseSeparableConv", "PanopticDeepLabDecoder", "PredictionHead", "norm_layer"]


def norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        return nn.GroupNorm(group_norm_groups(channels), channels)
    raise ValueError(f"unknown decoder norm {norm!r} (expected 'bn' or 'gn')")


def _init_conv(conv: nn.Conv2d) -> None:
    # detectron2's c2_xavier_fill (uniform fan-in, a=1), what its DeepLab/Panoptic-DeepLab decoders use.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def conv_norm_relu(in_ch: int, out_ch: int, kernel_size: int, norm: str, *, dilation: int = 1,
                   groups: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                     groups=groups, bias=False)
    _init_conv(conv)
    return nn.Sequential(conv, norm_layer(norm, out_ch), nn.ReLU(inplace=True))


class DepthwiseSeparableConv(nn.Sequential):
    """k x k depthwise conv + norm + ReLU, then 1x1 pointwise conv + norm + ReLU (Panoptic-DeepLab's 5x5 DSConv)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, kernel_size: int = 5):
        super().__init__(conv_norm_relu(in_ch, in_ch, kernel_size, norm, groups=in_ch),
                         conv_norm_relu(in_ch, out_ch, 1, norm))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, three 3x3 atrous convs and image pooling, concatenated, 1x1 conv.

    Each branch conv has norm + ReLU, except the pooling branch (1x1 conv with bias, no norm: one value per
    channel and image has no batch statistics worth normalising; BatchNorm would fail at batch size 1).
    Dropout (``dropout``) is applied to the projected output in training.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int], norm: str, *, pooling: bool = True,
                 dropout: float = 0.1, coords: bool = False):
        super().__init__()
        self.coords = coords
        in_ch = in_channels + (COORD_CHANNELS if coords else 0)
        self.branches = nn.ModuleList([conv_norm_relu(in_ch, out_channels, 1, norm)] +
                                      [conv_norm_relu(in_ch, out_channels, 3, norm, dilation=int(r)) for r in rates])
        self.pooling = None
        if pooling:
            conv = nn.Conv2d(in_ch, out_channels, 1, bias=True)
            _init_conv(conv)
            self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv, nn.ReLU(inplace=True))
        n = len(self.branches) + (1 if pooling else 0)
        self.project = conv_norm_relu(n * out_channels, out_channels, 1, norm)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:
            x = add_coords(x)
        outs = [b(x) for b in self.branches]
        if self.pooling is not None:
            outs.append(self.pooling(x).expand(-1, -1, *x.shape[-2:]))  # a 1x1 map: upsampling = broadcasting
        return self.dropout(self.project(torch.cat(outs, dim=1)))


class PanopticDeepLabDecoder(nn.Module):
    """One Panoptic-DeepLab decoder: ASPP on c5 -> bilinear up to stride 8, concat projected c3 -> fuse ->
    up to stride 4, concat projected c2 -> fuse. Fuse = one 5x5 depthwise-separable conv (the paper's setting).

    ``coords_aspp`` appends CoordConv channels before ASPP (CoordConvEnc); ``coords_fuse`` appends them before each
    fuse conv, after the upsampled and projected features (CoordConvDec).
    """

    def __init__(self, in_channels: dict[str, int], channels: int, aspp_channels: int, aspp_rates: Sequence[int],
                 projection_channels: Sequence[int], norm: str, *, aspp_pooling: bool = True,
                 aspp_dropout: float = 0.1, coords_aspp: bool = False, coords_fuse: bool = False):
        super().__init__()
        p3, p2 = projection_channels
        self.coords_fuse = coords_fuse
        extra = COORD_CHANNELS if coords_fuse else 0
        self.aspp = ASPP(in_channels["c5"], aspp_channels, aspp_rates, norm, pooling=aspp_pooling,
                         dropout=aspp_dropout, coords=coords_aspp)
        self.project3 = conv_norm_relu(in_channels["c3"], p3, 1, norm)
        self.fuse3 = DepthwiseSeparableConv(aspp_channels + p3 + extra, channels, norm)
        self.project2 = conv_norm_relu(in_channels["c2"], p2, 1, norm)
        self.fuse2 = DepthwiseSeparableConv(channels + p2 + extra, channels, norm)
        self.out_channels = channels

    def _fuse(self, x: torch.Tensor, skip: torch.Tensor, project: nn.Module, fuse: nn.Module) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, project(skip)], dim=1)
        if self.coords_fuse:
            x = add_coords(x)
        return fuse(x)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.aspp(features["c5"])
        x = self._fuse(x, features["c3"], self.project3, self.fuse3)
        return self._fuse(x, features["c2"], self.project2, self.fuse2)


class PredictionHead(nn.Module):
    """[coords] -> 5x5 depthwise-separable conv (``channels``) -> 1x1 predictor (``out_channels``, raw).

    The predictor starts at N(0, 0.001) weights and ``bias`` (default 0), as detectron2's Panoptic-DeepLab heads,
    so every map starts near its bias: logits ~0, center heatmap ~0, offsets ~0.
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int, norm: str, *, coords: bool = False,
                 bias: float = 0.0):
        super().__init__()
        self.coords = coords
        self.tower = DepthwiseSeparableConv(in_channels + (COORD_CHANNELS if coords else 0), channels, norm)
        self.predictor = nn.Conv2d(channels, out_channels, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:
            x = add_coords(x)
        return self.predictor(self.tower(x))

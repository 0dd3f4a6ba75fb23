"""CoordConv (Liu et al. 2018): give a convolution the pixel's position as two extra input channels.

Contracts
---------
- :func:`add_coords` ``(x)``: ``x`` (B, C, H, W) float -> (B, C + 2, H, W), same dtype and device; channel ``C``
  is x (varies along the width, -1 at column 0 to +1 at column W-1), channel ``C + 1`` is y (varies along the
  height, -1 at row 0 to +1 at row H-1), i.e. ``2 * index / (size - 1) - 1``. A size-1 axis gives -1.
- :class:`CoordConv2d`: an ``nn.Conv2d`` over ``in_channels + 2`` inputs whose ``forward`` appends the
  coordinates first; the coordinate weights are the last two input slices of ``weight``.

The coordinates span the tensor they are appended to (for a padded batch: the padded canvas), so they are
positions relative to the network input, not to an unpadded image inside it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["add_coords", "coord_maps", "CoordConv2d", "COORD_CHANNELS"]

#: Number of channels :func:`add_coords` appends.
COORD_CHANNELS = 2


def coord_maps(height: int, width: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(2, height, width): x then y, each normalised to [-1, 1] (see :func:`add_coords`)."""
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])


def add_coords(x: torch.Tensor) -> torch.Tensor:
    """Append the x and y coordinate channels to ``x`` (B, C, H, W) -> (B, C + 2, H, W)."""
    b, _, h, w = x.shape
    coords = coord_maps(h, w, dtype=x.dtype, device=x.device)
    return torch.cat([x, coords.unsqueeze(0).expand(b, -1, -1, -1)], dim=1)


class CoordConv2d(nn.Conv2d):
    """``nn.Conv2d`` that sees ``in_channels`` feature channels plus the 2 coordinate channels.

    Same arguments as ``nn.Conv2d``; ``in_channels`` counts the feature channels only (the weight has
    ``in_channels + 2`` input slices, coordinates last).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, **kwargs):
        super().__init__(in_channels + COORD_CHANNELS, out_channels, kernel_size, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(add_coords(x))

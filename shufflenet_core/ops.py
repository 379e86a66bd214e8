"""Layer factories of the builder: the one place that picks how a layer is implemented."""

from __future__ import annotations

from torch import nn

__all__ = ["pointwise_conv"]


def pointwise_conv(in_channels: int, out_channels: int, groups: int) -> nn.Conv2d:
    """A bias-free 1x1 (group) convolution with ``nn.Conv2d``'s weight layout."""
    return nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)

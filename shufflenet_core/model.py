"""The PyTorch ShuffleNet v1, built from a config exactly as the paper and official code.

Module names match :func:`shufflenet_core.complexity` layer names, so a count on the built
model can be compared layer by layer with the count from the config.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from .config import ShuffleNetConfig
from .ops import depthwise_conv, exporting, is_channels_last, pointwise_conv
from .structure import UnitSpec, unit_specs

__all__ = ["ShuffleNetV1", "ShuffleUnit", "build_model", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The paper's shuffle: reshape channels to (g, n), transpose to (n, g), flatten."""
    batch, channels, height, width = x.shape
    if is_channels_last(x) and height * width > 1:
        # Same permutation on NHWC storage: one copy, and the result stays channels_last.
        nhwc = x.permute(0, 2, 3, 1).reshape(batch, height, width, groups, channels // groups)
        return nhwc.transpose(3, 4).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    return (
        x.reshape(batch, groups, channels // groups, height, width)
        .transpose(1, 2)
        .reshape(batch, channels, height, width)
    )


class ShuffleUnit(nn.Module):
    """Paper Figure 2 (b) for stride 1 and (c) for stride 2."""

    def __init__(self, spec: UnitSpec, *, fast: bool = True) -> None:
        super().__init__()
        self.stride = spec.stride
        self.groups = spec.groups
        self.shuffle = spec.channel_shuffle and spec.groups > 1
        mid = spec.mid_channels
        mode = "auto" if fast else "conv"
        self.pw1 = pointwise_conv(spec.in_channels, mid, spec.first_pointwise_groups, mode=mode)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = depthwise_conv(mid, spec.stride, mode=mode)
        self.bn2 = nn.BatchNorm2d(mid)
        self.pw2 = pointwise_conv(mid, spec.branch_channels, spec.groups, mode=mode)
        self.bn3 = nn.BatchNorm2d(spec.branch_channels)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if spec.stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.bn1(self.pw1(x)))
        if self.shuffle:
            branch = channel_shuffle(branch, self.groups)
        branch = self.bn2(self.dw(branch))
        branch = self.bn3(self.pw2(branch))
        if self.stride == 1:
            return F.relu(branch + x)
        return torch.cat((self.shortcut(x), F.relu(branch)), dim=1)


class ShuffleNetV1(nn.Module):
    """Stem (conv 3x3/2, BN, ReLU, max pool 3x3/2), stages of units, global pool, FC."""

    def __init__(self, config: ShuffleNetConfig, *, fast: bool = True) -> None:
        super().__init__()
        self.config = config
        self.channels_last = fast  # small maps: BN, depthwise and bmm are all faster in NHWC
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(config.in_channels, config.stem_channels, 3, stride=2, padding=1, bias=False),
                bn=nn.BatchNorm2d(config.stem_channels),
                relu=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            )
        )
        stages: list[list[nn.Module]] = [[] for _ in config.stage_depths]
        for spec in unit_specs(config):
            stages[spec.stage].append(ShuffleUnit(spec, fast=fast))
        self.stages = nn.Sequential(*(nn.Sequential(*units) for units in stages))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(config.stage_out_channels[-1], config.num_classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4 and not exporting():
            x = x.contiguous(memory_format=torch.channels_last)
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.forward_features(x)), 1))


def build_model(config: ShuffleNetConfig, *, fast: bool = True) -> ShuffleNetV1:
    """The network described by ``config``, with PyTorch's default initialisation.

    ``fast=True`` uses the shape-dispatched layers of :mod:`shufflenet_core.ops` (bmm 1x1
    convs, small-map depthwise); ``fast=False`` the plain ``nn.Conv2d(groups)`` reference.
    Both have the same parameters and state_dict, so weights move freely between them.
    """
    if not isinstance(config, ShuffleNetConfig):
        raise TypeError(f"build_model needs a ShuffleNetConfig, got {type(config).__name__}")
    return ShuffleNetV1(config, fast=fast)

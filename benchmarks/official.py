"""The official megvii ShuffleNet v1 layout, written again here as the peer our builds are timed against.

``build_model(config, fast=False)`` is the plain reference a PyTorch user starts from: grouped
``nn.Conv2d``, the paper's shuffle (reshape to (g, n), transpose) after the first pointwise
conv. The official code (megvii-model/ShuffleNet-Series, ShuffleNetV1) differs in two places
that matter for speed, and this module reproduces them:

- the shuffle runs after the depthwise conv and its BN, not before (depthwise work commutes with
  a channel permutation), so stride-2 units shuffle a map a quarter the size;
- the shuffle reshapes channels to (n, g) and transposes (the inverse permutation of the
  paper's: as good a mixing, a different network function for the same weights);
- the head is ``AvgPool2d(7)`` (fixed 224 inputs) rather than a global pool.

Same parameter count and MACs as our builds for any config (tests/benchmarks/test_official.py);
only timed, never trained. Not a copy of the official files: written from the architecture.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shufflenet_core import ShuffleNetConfig
from shufflenet_core.structure import UnitSpec, unit_specs


class OfficialUnit(nn.Module):
    def __init__(self, spec: UnitSpec) -> None:
        super().__init__()
        mid = spec.mid_channels
        self.stride = spec.stride
        self.groups = spec.groups if spec.channel_shuffle else 1
        self.main_1 = nn.Sequential(
            nn.Conv2d(spec.in_channels, mid, 1, groups=spec.first_pointwise_groups, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, spec.stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
        )
        self.main_2 = nn.Sequential(
            nn.Conv2d(mid, spec.branch_channels, 1, groups=spec.groups, bias=False),
            nn.BatchNorm2d(spec.branch_channels),
        )
        self.projection = nn.AvgPool2d(3, stride=2, padding=1) if spec.stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.main_1(x)
        if self.groups > 1:
            batch, channels, height, width = branch.shape
            branch = (branch.reshape(batch, channels // self.groups, self.groups, height, width)
                      .permute(0, 2, 1, 3, 4).reshape(batch, channels, height, width))
        branch = self.main_2(branch)
        if self.projection is None:
            return F.relu(branch + x)
        return torch.cat((self.projection(x), F.relu(branch)), 1)


class OfficialShuffleNetV1(nn.Module):
    def __init__(self, config: ShuffleNetConfig) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv2d(config.in_channels, config.stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(config.stem_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        specs = list(unit_specs(config))
        self.features = nn.Sequential(*(OfficialUnit(spec) for spec in specs))
        self.globalpool = nn.AvgPool2d(specs[-1].output_size)
        self.classifier = nn.Linear(config.stage_out_channels[-1], config.num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.maxpool(self.first_conv(x)))
        return self.classifier(torch.flatten(self.globalpool(x), 1))


def build_official(config: ShuffleNetConfig) -> OfficialShuffleNetV1:
    return OfficialShuffleNetV1(config)

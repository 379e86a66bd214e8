"""The official layout the benchmarks time against is the same size of network as ours."""

from __future__ import annotations

import pytest
import torch

from shufflenet_core import build_model, get_preset
from tests.benchmarks.loading import load_benchmark
from tests.shufflenet_core.counting import hook_count, parameter_count


def _official():
    return load_benchmark("official")


@pytest.mark.parametrize("name", ["shufflenet_v1_1.0x_g3", "shufflenet_v1_2.0x_g3", "shufflenet_v1_1.0x_g8"])
def test_official_layout_has_our_parameters_and_macs(name: str) -> None:
    config = get_preset(name)
    official, ours = _official().build_official(config).eval(), build_model(config, fast=False).eval()
    assert parameter_count(official) == parameter_count(ours)
    assert sum(hook_count(official, 224).values()) == sum(hook_count(ours, 224).values())
    with torch.no_grad():
        assert official(torch.randn(1, 3, 224, 224)).shape == (1, 1000)

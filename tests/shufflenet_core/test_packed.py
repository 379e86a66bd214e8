"""Inference with BN folded into oneDNN-packed convs must give the plain build's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shufflenet_core import ShuffleNetConfig, build_model, fused, packed

from .checks import randomize_batch_norms

pytestmark = pytest.mark.skipif(not packed.available(), reason="this torch build has no oneDNN")


@pytest.fixture(autouse=True)
def inference_kernels_off(monkeypatch):
    """The packed convs are the fallback where the inference kernels are off or unbuilt."""
    monkeypatch.setenv(fused.SWITCH, "0")

CASES = [
    (ShuffleNetConfig.from_width(3, 1.0), 1),
    (ShuffleNetConfig.from_width(8, 0.5, num_classes=10, in_channels=1, input_size=32), 5),
    (ShuffleNetConfig.from_width(2, 0.5, num_classes=7, input_size=40, group_first_pointwise=True), 3),
    (ShuffleNetConfig.from_width(4, 0.25, num_classes=10, input_size=64, channel_shuffle=False), 2),
]


def _pair(config: ShuffleNetConfig) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    fast = build_model(config)
    randomize_batch_norms(fast)
    plain = build_model(config, fast=False)
    plain.load_state_dict(fast.state_dict())
    return fast.eval(), plain.eval()


@pytest.mark.parametrize(("config", "batch"), CASES, ids=lambda c: f"g{c.groups}_{c.input_size}" if isinstance(c, ShuffleNetConfig) else f"n{c}")
def test_packed_inference_matches_plain_build(config: ShuffleNetConfig, batch: int) -> None:
    fast, plain = _pair(config)
    x = torch.randn(batch, config.in_channels, config.input_size, config.input_size)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    # The packed path really ran: stem and every unit hold packed convs.
    assert fast._stem_folded is not None
    units = [unit for stage in fast.stages for unit in stage]
    assert all(isinstance(unit._folded[1][0], packed.PackedConv) for unit in units)


def test_without_onednn_the_bmm_fold_runs_and_matches() -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, in_channels=1, input_size=32)
    fast, plain = _pair(config)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        assert not packed.available()
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
        folded = fast.stages[0][0]._folded[1]
        assert not isinstance(folded[0], packed.PackedConv) and len(folded) == 6
    with torch.no_grad():  # and back on: repacked, same answer
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
        assert isinstance(fast.stages[0][0]._folded[1][0], packed.PackedConv)


def test_packed_convs_follow_shape_and_weight_changes() -> None:
    """Packed layouts are chosen per input shape and folds cache the weights: a new batch
    size, a training step or a load_state_dict must all reach the next output."""
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=32)
    fast, plain = _pair(config)
    with torch.no_grad():
        for batch in (1, 7, 1):
            x = torch.randn(batch, 3, 32, 32)
            torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    # One SGD step on both (the plain build is the reference), then eval again.
    x, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for model in (fast, plain):
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
        model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
        plain.load_state_dict(build_model(config, fast=False).state_dict())
        fast.load_state_dict(plain.state_dict())
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)


def test_run_packed_fuses_bias_residual_and_relu() -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(12, 2, 1, 1), torch.randn(12)
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 12, 5, 5).contiguous(memory_format=torch.channels_last)
    conv = packed.pack_conv(weight, bias, stride=1, groups=3, input_shape=x.shape)
    reference = nn.functional.conv2d(x, weight, bias, groups=3)
    with torch.no_grad():
        torch.testing.assert_close(packed.run_packed(conv, x), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed.run_packed(conv, x, relu=True), reference.relu(), atol=1e-5, rtol=1e-5)
        fused = packed.run_packed(conv, x, relu=True, residual=residual)
        torch.testing.assert_close(fused, (reference + residual).relu(), atol=1e-5, rtol=1e-5)
        assert fused.is_contiguous(memory_format=torch.channels_last)


def test_float64_inference_takes_the_bmm_fold() -> None:
    """oneDNN has no float64 convs: a double model in eval must still run, on the bmm fold."""
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=32)
    fast, plain = _pair(config)
    fast, plain = fast.double(), plain.double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-10, rtol=1e-10)
    assert not isinstance(fast.stages[0][0]._folded[1][0], packed.PackedConv)

"""The built model: shuffle permutation, the no-shuffle ablation, unit structure, input sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shufflenet_core import ShuffleNetConfig, build_model, get_preset
from shufflenet_core.model import ShuffleUnit, channel_shuffle, shuffle_nhwc, shuffle_order, unshuffle_order


def test_channel_shuffle_is_the_papers_permutation() -> None:
    # 6 channels, g=2: reshape to (2, 3) = [[0,1,2],[3,4,5]], transpose, flatten -> 0,3,1,4,2,5
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    # g=3, n=2: [[0,1],[2,3],[4,5]] -> 0,2,4,1,3,5
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    # Spatial positions move with their channel.
    y = torch.randn(2, 12, 3, 4)
    shuffled = channel_shuffle(y, 4)
    assert torch.equal(shuffled[:, 1], y[:, 3]) and torch.equal(shuffled[:, 3], y[:, 9])


@pytest.mark.parametrize(("channels", "groups"), [(6, 2), (12, 3), (24, 8), (5, 1)])
def test_the_shuffle_as_an_index_is_the_same_permutation(channels: int, groups: int) -> None:
    # The ONNX export and the packed inference path shuffle by index; both must be the paper's shuffle.
    x = torch.randn(2, channels, 3, 4)
    order = shuffle_order(channels, groups)
    assert torch.equal(x[:, order], channel_shuffle(x, groups))
    assert torch.equal(channel_shuffle(x, groups)[:, unshuffle_order(channels, groups)], x)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    shuffled = shuffle_nhwc(nhwc, torch.tensor(order))
    assert torch.equal(shuffled, channel_shuffle(x, groups))
    assert shuffled.is_contiguous(memory_format=torch.channels_last)


def test_no_shuffle_ablation_is_the_same_model_without_the_permutation() -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=64)
    torch.manual_seed(0)
    with_shuffle = build_model(config).eval()
    without = build_model(config.replace(channel_shuffle=False)).eval()
    state = with_shuffle.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in without.state_dict().items()}
    without.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(with_shuffle(x), without(x))
    # With g=1 the shuffle is the identity, so both must agree exactly.
    config1 = ShuffleNetConfig.from_width(1, 0.5, num_classes=10, input_size=64)
    a, b = build_model(config1).eval(), build_model(config1.replace(channel_shuffle=False)).eval()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_units_follow_reference_structure() -> None:
    model = build_model(get_preset("shufflenet_v1_1.0x_g3"))
    units = [m for m in model.modules() if isinstance(m, ShuffleUnit)]
    assert len(units) == 16
    first = units[0]
    assert first.pw1.groups == 1 and first.pw2.groups == 3 and first.pw2.out_channels == 240 - 24
    assert isinstance(first.shortcut, nn.AvgPool2d) and first.stride == 2
    assert units[1].pw1.groups == 3 and units[1].pw2.out_channels == 240 and units[1].stride == 1
    assert units[4].pw1.in_channels == 240 and units[4].pw2.out_channels == 480 - 240
    assert all(m.bias is None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert model.classifier.in_features == 960 and model.classifier.out_features == 1000
    grouped_first = build_model(get_preset("shufflenet_v1_1.0x_g3").replace(group_first_pointwise=True))
    assert grouped_first.stages[0][0].pw1.groups == 3


def test_stride1_unit_adds_then_relu_and_stride2_concats() -> None:
    config = ShuffleNetConfig.from_width(2, 0.5, num_classes=10, input_size=32)
    model = build_model(config).eval()
    unit = model.stages[0][0]
    x = torch.randn(1, config.stem_channels, 8, 8)
    out = unit(x)
    # The first channels of a stride-2 unit are the average-pooled input (no ReLU applied).
    assert torch.allclose(out[:, : config.stem_channels], nn.functional.avg_pool2d(x, 3, 2, 1))
    stride1 = model.stages[0][1]
    y = torch.randn(1, config.stage_out_channels[0], 4, 4)
    assert (stride1(y) >= 0).all()


@pytest.mark.parametrize("size", [32, 33, 64, 100, 224])
def test_any_input_size_from_32(size: int) -> None:
    model = build_model(get_preset("shufflenet_v1_0.5x_g3").replace(num_classes=7)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_deep_and_single_stage_configs_run() -> None:
    for depths in [(1,), (2, 2, 2, 2, 2)]:
        config = ShuffleNetConfig.from_width(4, 0.5, stage_depths=depths, num_classes=10, in_channels=1, input_size=32)
        model = build_model(config).eval()
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_the_fast_stem_conv_answers_nhwc_whatever_the_channel_count(in_channels: int) -> None:
    """A one-channel image is NCHW and NHWC at once, and a conv follows the strides it is given:
    the fast build hands the stem conv NHWC strides, so its output (the largest map) is not
    copied to NHWC forward and backward; the plain build keeps NCHW."""
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, in_channels=in_channels, input_size=32)
    for fast in (True, False):
        model = build_model(config, fast=fast).train()
        seen: list[torch.Tensor] = []
        model.stem.conv.register_forward_hook(lambda module, args, output: seen.append(output))
        model(torch.randn(4, in_channels, 32, 32)).sum().backward()
        nhwc = seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
        assert nhwc == fast

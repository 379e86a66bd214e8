"""The eval-mode kernels (shufflenet_core/csrc/inference.cpp, shufflenet_core.inference).

Each op equals its float64 composition to float32 rounding, writes only the channels it is
given (the stride-2 unit's concat and the shuffle ride on that), and the fast build in eval
takes them for the stem and every unit, with the plain build's outputs.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from shufflenet_core import ShuffleNetConfig, build_model, fused, inference, packed
from shufflenet_core.model import shuffle_order

from .checks import randomize_batch_norms, relative_error


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    monkeypatch.delenv(fused.SWITCH, raising=False)
    assert fused.available(), fused.status()


def _nhwc(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)


SENTINEL = 1234.5


def _wide_output(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    return torch.full((batch, channels, height, width), SENTINEL).contiguous(memory_format=torch.channels_last)


# per_group covers 1..7-lane tails, 1, 2 and 3 vectors and more than one block of 24;
# positions cover every remainder of the 4-, 6- and 8-row tiles.
POINTWISE = [  # groups, inputs per group, outputs per group, batch, height, width
    (1, 24, 60, 1, 7, 8), (3, 80, 20, 1, 5, 5), (3, 20, 80, 2, 3, 3), (8, 12, 12, 1, 4, 7),
    (2, 5, 33, 3, 1, 1), (4, 9, 7, 1, 2, 3), (3, 40, 160, 1, 7, 7), (1, 3, 1, 1, 1, 13),
]


@pytest.mark.parametrize(("groups", "depth", "per_group", "batch", "height", "width"), POINTWISE)
@pytest.mark.parametrize("residual", [False, True])
def test_pointwise_equals_the_float64_conv_and_writes_only_its_channels(groups, depth, per_group, batch, height,
                                                                        width, residual) -> None:
    torch.manual_seed(groups * 100 + depth + per_group)
    channels, outputs = groups * depth, groups * per_group
    x = _nhwc(batch, channels, height, width)
    weight, bias = torch.randn(outputs, depth, 1, 1), torch.randn(outputs)
    shuffled = shuffle_order(channels, groups)
    extra = _nhwc(batch, outputs, height, width) if residual else None
    reference = F.conv2d(x.double()[:, shuffled], weight.double(), bias.double(), groups=groups)
    if extra is not None:
        reference = reference + extra.double()
    out = _wide_output(batch, outputs + 5, height, width)
    conv = inference.pack_pointwise(weight, bias, groups, shuffled)
    inference.pointwise(x, conv, relu=True, residual=extra, out=out, offset=3)
    assert relative_error(out[:, 3:3 + outputs], reference.relu()) < 1e-6
    assert (out[:, :3] == SENTINEL).all() and (out[:, 3 + outputs:] == SENTINEL).all()
    plain = inference.pointwise(x, inference.pack_pointwise(weight, bias, groups), relu=False)
    assert plain.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(plain, F.conv2d(x.double(), weight.double(), bias.double(), groups=groups)) < 1e-6


@pytest.mark.parametrize(("channels", "size", "stride"), [
    (60, 9, 2), (60, 8, 1), (7, 5, 2), (13, 6, 1), (40, 1, 1), (40, 1, 2), (33, 2, 2), (8, 3, 1), (1, 4, 2)])
def test_depthwise_equals_the_float64_conv_and_writes_only_its_channels(channels, size, stride) -> None:
    torch.manual_seed(channels + size)
    x = _nhwc(2, channels, size, size + 1)
    weight, bias = torch.randn(channels, 1, 3, 3), torch.randn(channels)
    reference = F.conv2d(x.double(), weight.double(), bias.double(), stride=stride, padding=1, groups=channels)
    out = _wide_output(2, channels + 4, reference.shape[2], reference.shape[3])
    inference.depthwise(x, inference.pack_depthwise(weight, bias), stride, out=out, offset=1)
    assert relative_error(out[:, 1:1 + channels], reference) < 1e-6
    assert (out[:, :1] == SENTINEL).all() and (out[:, 1 + channels:] == SENTINEL).all()


def test_the_shortcut_taps_are_the_average_pool() -> None:
    x = _nhwc(2, 17, 7, 6)
    pooled = inference.depthwise(x, inference.shortcut_pool_taps(17), 2)
    torch.testing.assert_close(pooled, nn.AvgPool2d(3, 2, 1)(x), atol=1e-6, rtol=1e-6)


def _stem_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    conv = F.conv2d(x.double(), weight.double(), bias.double(), stride=2, padding=1)
    return F.max_pool2d(conv.relu(), 3, 2, 1)


@pytest.mark.parametrize(("in_channels", "channels", "height", "width"), [
    (3, 24, 32, 32), (1, 24, 17, 9), (3, 7, 5, 6), (2, 30, 11, 1), (3, 48, 3, 3), (4, 16, 1, 1)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_stem_equals_conv_relu_pool_in_float64(in_channels, channels, height, width, layout) -> None:
    torch.manual_seed(channels + height)
    x = torch.randn(2, in_channels, height, width)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a view: every other column of a wider image
        x = torch.randn(2, in_channels, height, 2 * width)[..., ::2]
    weight, bias = torch.randn(channels, in_channels, 3, 3), torch.randn(channels)
    out = inference.stem(x, *inference.pack_stem(weight, bias), channels)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(out, _stem_reference(x, weight, bias)) < 1e-6


def test_stem_keeps_pytorchs_nan_and_ties() -> None:
    x = torch.randn(1, 3, 9, 9)
    x[0, 1, 4, 4] = float("nan")
    weight, bias = torch.randn(24, 3, 3, 3), torch.randn(24)
    out = inference.stem(x, *inference.pack_stem(weight, bias), 24)
    reference = F.max_pool2d(F.relu(F.conv2d(x, weight, bias, stride=2, padding=1)), 3, 2, 1)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), reference.isnan())
    torch.testing.assert_close(out.nan_to_num(), reference.nan_to_num(), atol=1e-5, rtol=1e-5)


def test_two_threads_agree_with_one() -> None:
    x = _nhwc(1, 240, 28, 28)
    conv = inference.pack_pointwise(torch.randn(60, 80, 1, 1), torch.randn(60), 3)
    dw = inference.pack_depthwise(torch.randn(240, 1, 3, 3), torch.randn(240))
    image = torch.randn(1, 3, 64, 64)
    stem = inference.pack_stem(torch.randn(24, 3, 3, 3), torch.randn(24))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append((inference.pointwise(x, conv, relu=True), inference.depthwise(x, dw, 2),
                            inference.stem(image, *stem, 24)))
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


CONFIGS = [
    (ShuffleNetConfig.from_width(3, 1.0), 1, 224),
    (ShuffleNetConfig.from_width(8, 0.5, num_classes=10, in_channels=1, input_size=32), 5, 32),
    (ShuffleNetConfig.from_width(2, 0.5, num_classes=7, input_size=40, group_first_pointwise=True), 3, 37),
    (ShuffleNetConfig.from_width(4, 0.25, num_classes=10, input_size=64, channel_shuffle=False), 2, 64),
    (ShuffleNetConfig.from_width(1, 0.5, num_classes=10, input_size=32), 1, 9),
]


def _small_model() -> tuple[nn.Module, torch.Tensor]:
    """A 0.5x g3 model in eval for 32x32 images, and a batch of two."""
    torch.manual_seed(0)
    return build_model(ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=32)).eval(), torch.randn(2, 3, 32, 32)


def _case_id(value: object) -> str:
    return f"g{value.groups}" if isinstance(value, ShuffleNetConfig) else str(value)


@pytest.mark.parametrize(("config", "batch", "size"), CONFIGS, ids=_case_id)
def test_the_fast_build_in_eval_runs_the_kernels_with_the_float64_plain_builds_outputs(config, batch, size) -> None:
    torch.manual_seed(0)
    fast = build_model(config)
    randomize_batch_norms(fast)
    plain = build_model(config, fast=False).double()
    plain.load_state_dict(fast.state_dict())
    fast.eval(), plain.eval()
    x = torch.randn(batch, config.in_channels, size, size)
    with torch.no_grad():
        out, reference = fast(x), plain(x.double())
        float32_plain = build_model(config, fast=False).eval()
        float32_plain.load_state_dict(fast.state_dict())
        float32_error = relative_error(float32_plain(x), reference)
    # As close to float64 as PyTorch's own float32 path (within a factor for rounding order).
    assert relative_error(out, reference) < max(4 * float32_error, 1e-6)
    units = [unit for stage in fast.stages for unit in stage]
    assert all(isinstance(unit._folded[1][0], inference.PackedPointwise) for unit in units)
    assert fast._stem_folded is not None and fast._stem_folded[0][1] == "kernels"


def test_switched_off_hooked_or_in_autograd_the_kernels_stand_aside(monkeypatch) -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=32)
    torch.manual_seed(0)
    fast = build_model(config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = fast(x)
    unit = fast.stages[0][0]
    calls = []
    handle = unit.pw2.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)
    handle.remove()
    assert calls == [1]  # the hooked unit ran its layers one by one
    monkeypatch.setenv(fused.SWITCH, "0")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)
    if packed.available():
        assert isinstance(unit._folded[1][0], packed.PackedConv)
    monkeypatch.delenv(fused.SWITCH)
    torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)  # with autograd: no fold at all
    with torch.no_grad():
        fast(x)
    assert isinstance(unit._folded[1][0], inference.PackedPointwise)


def test_the_kernels_follow_weight_updates() -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=32)
    torch.manual_seed(0)
    fast = build_model(config).eval()
    plain = build_model(config, fast=False).eval()
    x = torch.randn(2, 3, 32, 32)
    for _ in range(2):
        plain.load_state_dict(fast.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
            for parameter in fast.parameters():
                parameter.mul_(1.1)


def test_reused_buffers_and_in_place_units_touch_nothing_the_caller_holds() -> None:
    """The model's own maps are reused and written over; the caller's image, a unit called on
    its own, and earlier outputs must come out untouched."""
    fast, image = _small_model()
    kept = image.clone()
    with torch.no_grad():
        first = fast.forward_features(image)
        first_copy = first.clone()
        second = fast.forward_features(torch.randn(2, 3, 32, 32))
        assert torch.equal(image, kept) and torch.equal(first, first_copy)
        assert second.data_ptr() != first.data_ptr()
        unit = fast.stages[0][1]  # stride 1: writes in place only inside the model
        x = torch.randn(2, unit.bn3.num_features, 8, 8).contiguous(memory_format=torch.channels_last)
        x_kept = x.clone()
        out = unit(x)
        assert torch.equal(x, x_kept) and out.data_ptr() != x.data_ptr()


def test_a_hooked_stage_sees_every_unit_run() -> None:
    fast, image = _small_model()
    with torch.no_grad():
        expected = fast(image)
        seen = []
        handle = fast.stages[1].register_forward_hook(lambda _module, _args, out: seen.append(out.clone()))
        torch.testing.assert_close(fast(image), expected, atol=1e-6, rtol=1e-6)
        handle.remove()
    assert len(seen) == 1


def test_a_hooked_unit_keeps_the_maps_it_saw() -> None:
    """A hook may keep a unit's input and output: no later unit may write over them."""
    fast, image = _small_model()
    with torch.no_grad():
        expected = fast(image)
        kept = []
        handle = fast.stages[0][1].register_forward_hook(
            lambda _module, args, out: kept.append((args[0], args[0].clone(), out, out.clone())))
        torch.testing.assert_close(fast(image), expected, atol=1e-6, rtol=1e-6)
        fast(torch.randn(2, 3, 32, 32))  # and another forward, which reuses the buffers
        handle.remove()
    seen_input, input_then, seen_output, output_then = kept[0]
    assert torch.equal(seen_input, input_then) and torch.equal(seen_output, output_then)


def test_inference_mode_and_no_grad_share_the_reused_buffers() -> None:
    fast, image = _small_model()
    with torch.inference_mode():
        first = fast(image)
    with torch.no_grad():
        second = fast(image)
        fast(torch.randn(3, 3, 40, 40))  # another shape in between
    with torch.inference_mode():
        third = fast(image)
    assert torch.equal(first, second) and torch.equal(second, third)


def test_the_reused_buffers_are_float32_whatever_the_default_dtype() -> None:
    """A fresh thread (no buffers yet) under a float64 default still runs a float32 model."""
    fast, image = _small_model()
    with torch.no_grad():
        expected = fast(image)
    results: list[torch.Tensor] = []

    def run() -> None:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            with torch.no_grad():
                results.append(fast(image))
        finally:
            torch.set_default_dtype(previous)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(results) == 1 and torch.equal(results[0], expected)

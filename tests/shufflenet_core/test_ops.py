"""The fast layers are nn.Conv2d in every respect but speed: outputs, gradients, weights, export.

Equivalence only; speed is measured side by side in benchmarks/speed.py.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from shufflenet_core import ShuffleNetConfig, build_model, fused
from shufflenet_core.model import channel_shuffle
from shufflenet_core.onnx_export import export_onnx
from shufflenet_core.structure import unit_specs
from shufflenet_core.ops import (
    DepthwiseConv2d,
    PointwiseConv2d,
    batch_norm_channels_last,
    uses_bmm,
)

from .checks import assert_training_batch_norm_close, backward_nodes, relative_error

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def _pair(fast: nn.Conv2d) -> nn.Conv2d:
    plain = nn.Conv2d(fast.in_channels, fast.out_channels, fast.kernel_size, fast.stride, fast.padding,
                      groups=fast.groups, bias=False)
    plain.load_state_dict(fast.state_dict())
    return plain


def _check_same(fast: nn.Module, plain: nn.Module, x: torch.Tensor) -> None:
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_plain = fast(xa), plain(xb)
    assert out_fast.shape == out_plain.shape
    torch.testing.assert_close(out_fast, out_plain, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out_plain)
    out_fast.backward(grad)
    out_plain.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mode", ["auto", "bmm"])
@pytest.mark.parametrize("groups", [1, 3, 8])
@pytest.mark.parametrize("batch, size", [(1, 7), (1, 28), (5, 1), (5, 2), (4, 9), (3, 20)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pointwise_matches_grouped_conv(mode: str, groups: int, batch: int, size: int, layout) -> None:
    torch.manual_seed(groups * 100 + size)
    fast = PointwiseConv2d(16 * groups, 8 * groups, groups, mode=mode)
    x = torch.randn(batch, 16 * groups, size, size + 1).contiguous(memory_format=layout)
    _check_same(fast, _pair(fast), x)


def test_auto_mode_really_takes_both_paths() -> None:
    assert uses_bmm("auto", 3, 128, 4, 4) and uses_bmm("auto", 3, 1, 56, 56)
    assert not uses_bmm("auto", 3, 128, 32, 32) and not uses_bmm("conv", 3, 1, 1, 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch, size", [(1, 1), (6, 1), (6, 2), (6, 3), (2, 7), (1, 14)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_depthwise_matches_conv(stride: int, batch: int, size: int, layout) -> None:
    torch.manual_seed(size)
    fast = DepthwiseConv2d(24, 3, stride)
    x = torch.randn(batch, 24, size, size).contiguous(memory_format=layout)
    _check_same(fast, _pair(fast), x)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("height, width", [(2, 2), (1, 2), (2, 1), (1, 4)])
def test_depthwise_on_tiny_maps_takes_tapwise_weight_gradient(stride: int, height: int, width: int,
                                                             monkeypatch) -> None:
    """Without the fused kernels, tiny NHWC maps in training take the tap-wise weight gradient
    (each tap over the output positions where it falls inside the map), which must equal conv's."""
    monkeypatch.setenv(fused.SWITCH, "0")
    torch.manual_seed(stride)
    fast = DepthwiseConv2d(40, 3, stride)
    x = torch.randn(32, 40, height, width).contiguous(memory_format=torch.channels_last)
    assert "_TinyMapDepthwiseBackward" in backward_nodes(fast(x.requires_grad_()).sum())
    _check_same(fast, _pair(fast), x.detach())


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch, channels, height, width", [
    (32, 40, 2, 2), (6, 24, 8, 8), (3, 13, 5, 7), (2, 9, 1, 4), (4, 3, 3, 1), (128, 120, 4, 4),
])
def test_the_fused_depthwise_kernel_equals_the_float64_conv(stride, batch, channels, height, width, monkeypatch):
    """NHWC maps in training take the fused 3x3 depthwise kernel (vector tails, odd and 1-wide
    maps, both strides, more rows than one thread's share): output and both gradients equal
    the float64 conv's to float32 rounding, with one thread or two."""
    monkeypatch.delenv(fused.SWITCH, raising=False)
    torch.manual_seed(channels + height)
    fast = DepthwiseConv2d(channels, 3, stride)
    x = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last) + 0.5
    reference = _pair(fast).double()
    ref_x = x.double().requires_grad_()
    expected = reference(ref_x)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            fast.zero_grad()
            a = x.clone().requires_grad_()
            out = fast(a)
            assert "_FusedDepthwiseBackward" in backward_nodes(out)
            assert out.is_contiguous(memory_format=torch.channels_last)
            out.backward(grad.float())
            assert relative_error(out, expected) < 1e-6
            assert relative_error(a.grad, ref_x.grad) < 1e-6
            assert relative_error(fast.weight.grad, reference.weight.grad) < 1e-6
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        assert fast(x).grad_fn is None  # inference: oneDNN's kernels (folded with the BN elsewhere)
    fast.weight.requires_grad_(False)
    assert fast(x).grad_fn is None  # nothing to differentiate: the plain conv


def test_a_depthwise_conv_the_kernel_does_not_cover_runs_the_conv(monkeypatch) -> None:
    """The fused kernel is 3x3 with stride 1 or 2; a stride-3 or 5x5 layer keeps oneDNN's conv."""
    monkeypatch.delenv(fused.SWITCH, raising=False)
    for fast in (DepthwiseConv2d(8, 3, 3), DepthwiseConv2d(8, 5, 1)):
        x = torch.randn(4, 8, 7, 7).contiguous(memory_format=torch.channels_last)
        assert "_FusedDepthwiseBackward" not in backward_nodes(fast(x.clone().requires_grad_()))
        _check_same(fast, _pair(fast), x)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("height, width", [(5, 7), (4, 4), (3, 1)])
def test_tapwise_weight_gradient_equals_convs_on_any_map(kernel: int, stride: int, height: int, width: int) -> None:
    """The tap-wise weight gradient itself, on maps larger than the ones the layer gives it:
    each tap's range of output positions must be right for every stride and border."""
    from shufflenet_core.ops import _depthwise_weight_grad

    torch.manual_seed(height * width)
    x = torch.randn(3, 8, height, width, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    shape, padding = (8, 1, kernel, kernel), kernel // 2
    out = torch.nn.functional.conv2d(x, torch.ones(shape, dtype=torch.float64), stride=stride, padding=padding, groups=8)
    grad = torch.randn_like(out).contiguous(memory_format=torch.channels_last)
    expected = torch.nn.grad.conv2d_weight(x, shape, grad, stride=stride, padding=padding, groups=8)
    torch.testing.assert_close(_depthwise_weight_grad(x, grad, kernel, stride, padding), expected)


def test_channel_shuffle_is_layout_independent() -> None:
    x = torch.randn(3, 12, 4, 5)
    torch.testing.assert_close(channel_shuffle(x.contiguous(memory_format=torch.channels_last), 3),
                               channel_shuffle(x, 3), atol=0, rtol=0)


@pytest.mark.parametrize("kernels", ["fused", "pytorch"])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("batch, channels, size", [(64, 24, 16), (32, 60, 4), (16, 48, 2), (2, 8, 3)])
def test_channels_last_batch_norm_matches_float64_reference(momentum, batch: int, channels: int, size: int,
                                                            kernels: str, monkeypatch) -> None:
    """Outputs, gradients and running statistics of the NHWC training path (the fused kernel,
    and PyTorch's ops where it is off) agree with a float64 ``nn.BatchNorm2d`` to float32
    rounding, over two steps (so running stats really average)."""
    monkeypatch.setenv(fused.SWITCH, "1" if kernels == "fused" else "0")
    assert fused.available() == (kernels == "fused")
    torch.manual_seed(channels + size)
    bn = nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    reference = nn.BatchNorm2d(channels, momentum=momentum).double()
    reference.load_state_dict(bn.state_dict())
    for step in range(2):
        x = torch.randn(batch, channels, size, size) * 3 + 2 * step - 1  # off-centre inputs
        grad = torch.randn_like(x)
        fast_x = x.clone(memory_format=torch.channels_last).requires_grad_()
        ref_x = x.double().requires_grad_()
        out = batch_norm_channels_last(bn, fast_x)
        expected = reference(ref_x)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert ("_FusedRowsBatchNormBackward" in backward_nodes(out)) == (kernels == "fused")
        out.backward(grad.contiguous(memory_format=torch.channels_last if step else torch.contiguous_format))
        expected.backward(grad.double())
        assert_training_batch_norm_close(out, expected, fast_x, ref_x, bn, reference, input_bound=1e-6)
    assert bn.num_batches_tracked.item() == 2


@pytest.mark.parametrize("case", ["eval", "nchw", "1x1"])
def test_channels_last_batch_norm_leaves_other_cases_to_batch_norm(case: str) -> None:
    torch.manual_seed(0)
    bn, twin = nn.BatchNorm2d(16), nn.BatchNorm2d(16)
    twin.load_state_dict(bn.state_dict())
    size = 1 if case == "1x1" else 4
    x = torch.randn(8, 16, size, size)
    if case != "nchw":
        x = x.contiguous(memory_format=torch.channels_last)
    if case == "eval":
        bn.eval(), twin.eval()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = batch_norm_channels_last(bn, a)
    assert "RowsBatchNorm" not in type(out.grad_fn).__name__
    assert torch.equal(out, twin(b))
    for name, value in twin.state_dict().items():
        assert torch.equal(bn.state_dict()[name], value), name


CONFIGS = [
    ShuffleNetConfig.from_width(3, 1.0, num_classes=10, input_size=32),
    ShuffleNetConfig.from_width(8, 0.5, num_classes=10, in_channels=1, input_size=64),
    ShuffleNetConfig.from_width(2, 0.5, num_classes=7, input_size=40, group_first_pointwise=True),
]


@pytest.mark.parametrize("kernels", ["fused", "pytorch"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"g{c.groups}_{c.input_size}")
def test_fast_and_plain_builds_train_the_same(config: ShuffleNetConfig, kernels: str, monkeypatch) -> None:
    monkeypatch.setenv(fused.SWITCH, "1" if kernels == "fused" else "0")
    assert fused.available() == (kernels == "fused")  # CI builds them (scripts/setup.sh)
    torch.manual_seed(0)
    fast, plain = build_model(config), build_model(config, fast=False)
    assert any(isinstance(m, PointwiseConv2d) for m in fast.modules())
    assert not any(isinstance(m, (PointwiseConv2d, DepthwiseConv2d)) for m in plain.modules())
    state = fast.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(state)
    x = torch.randn(16, config.in_channels, config.input_size, config.input_size)
    labels = torch.randint(0, config.num_classes, (16,))
    losses = []
    for model in (fast, plain):
        model.train()
        loss = nn.functional.cross_entropy(model(x), labels)
        # The fast build really trains in NHWC with the accurate BN (fused where the kernels are
        # built); the plain one never does.
        node = "_FusedRowsBatchNormBackward" if kernels == "fused" else "_RowsBatchNormBackward"
        assert (node in backward_nodes(loss)) == (model is fast)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    # In float32 a ReLU input within rounding of 0 can fall on either side in the two builds,
    # and BN over a tiny batch spreads that one flip: over 8 seeds per config the gradients
    # differed by up to 1% of their norm (4% of the largest entry) for the ops and the fused
    # kernels alike, and by 5e-6 where nothing flipped. Exact agreement is checked in float64
    # (test_fast_and_plain_builds_have_the_same_float64_gradients); here a wiring error, of
    # the order of the gradient itself, is what must not pass.
    fast_grad = torch.cat([p.grad.flatten() for p in fast.parameters()])
    plain_grad = torch.cat([p.grad.flatten() for p in plain.parameters()])
    assert (fast_grad - plain_grad).norm() <= 0.05 * plain_grad.norm()
    # Running statistics were updated identically, and eval outputs agree.
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    fast.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fast(x[:1]), plain(x[:1]), atol=1e-5, rtol=1e-4)
    # And back: plain weights load into a fresh fast build unchanged.
    again = build_model(config)
    again.load_state_dict(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"g{c.groups}_{c.input_size}")
def test_fast_and_plain_builds_have_the_same_float64_gradients(config: ShuffleNetConfig) -> None:
    """The fast build's layers (bmm 1x1 convs, NHWC BN, tiny-map depthwise, the shortcut pool
    as a conv) compute the plain build's gradients: in float64 no ReLU input falls within
    rounding of 0, so every entry agrees to 1e-12 of the scale. (The float32-only fused kernels
    are checked against float64 layer by layer and unit by unit in test_fused*.py.)"""
    torch.manual_seed(1)
    fast, plain = build_model(config).double(), build_model(config, fast=False).double()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(16, config.in_channels, config.input_size, config.input_size, dtype=torch.float64)
    labels = torch.randint(0, config.num_classes, (16,))
    for model in (fast, plain):
        nn.functional.cross_entropy(model.train()(x), labels).backward()
    scale = max(p.grad.abs().max().item() for p in plain.parameters())
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max().item() <= 1e-12 * scale, name


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_export_of_fast_build_has_the_plain_grouped_conv_graph(exporter: str, tmp_path) -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, input_size=32)
    torch.manual_seed(0)
    fast = build_model(config).eval()
    for bn in (m for m in fast.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # trained-like statistics:
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)  # the export reorders them per channel
        bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-1, 1)
    plain = build_model(config, fast=False).eval()
    plain.load_state_dict(fast.state_dict())
    state = {key: value.clone() for key, value in fast.state_dict().items()}
    graphs = {}
    for name, model in (("fast", fast), ("plain", plain)):
        path = export_onnx(model, tmp_path / f"{name}.onnx", exporter=exporter)
        graphs[name] = onnx.load(str(path)).graph
    ops = collections.Counter(node.op_type for node in graphs["fast"].node)
    assert ops == collections.Counter(node.op_type for node in graphs["plain"].node)
    units = sum(config.stage_depths)
    assert ops["Conv"] == 1 + 3 * units  # stem + pw1, dw, pw2 per unit
    assert ops["MatMul"] + ops["Gemm"] == 1 and ops["BatchMatMul"] == 0  # only the classifier
    groups = {attr.i for node in graphs["fast"].node if node.op_type == "Conv"
              for attr in node.attribute if attr.name == "group"}
    assert config.groups in groups and max(groups) > config.groups  # grouped 1x1 and depthwise
    # The shuffle is one Gather after each shuffling unit's depthwise conv (its weights reordered
    # in the file), no Reshape-Transpose-Reshape: faster in ONNX Runtime (benchmarks/speed.py).
    shuffled = sum(1 for spec in unit_specs(config) if spec.channel_shuffle and spec.groups > 1)
    assert ops["Gather"] == shuffled and ops["Transpose"] == 0
    assert all(torch.equal(value, fast.state_dict()[key]) for key, value in state.items())  # weights untouched
    session = onnxruntime.InferenceSession(str(tmp_path / "fast.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = fast(x).numpy()
    actual = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(actual - expected).max() < 1e-4
    # Exporting left the model on its fast path.
    assert fast.channels_last and isinstance(fast.stages[0][0].pw2, PointwiseConv2d)


def test_folded_inference_follows_weight_updates() -> None:
    """Eval without autograd folds each BN into its conv and caches that; any change of a
    parameter or statistic (optimizer step, load_state_dict) must reach the next output."""
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, in_channels=1, input_size=32)
    torch.manual_seed(0)
    fast, plain = build_model(config).eval(), build_model(config, fast=False).eval()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-4)
        assert fast.stages[0][0]._folded is not None  # the folded path really ran
        for model in (fast, plain):
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.add_(0.5)
                    module.weight.mul_(1.5)
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-4)
        plain.load_state_dict(build_model(config, fast=False).state_dict())
        fast.load_state_dict(plain.state_dict())
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernels", ["fused", "pytorch"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8])
def test_the_shortcut_pool_equals_the_average_pool_and_trains_tiny_maps_as_a_conv(size: int, kernels: str,
                                                                                  monkeypatch) -> None:
    """In training the shortcut's average pool runs as the fused depthwise kernel with 1/9
    weights where the kernels are built, else as oneDNN's conv on tiny maps, else the pool."""
    from shufflenet_core.ops import POOL_AS_CONV_MAX_POSITIONS, shortcut_pool

    monkeypatch.setenv(fused.SWITCH, "1" if kernels == "fused" else "0")
    torch.manual_seed(size)
    pool = nn.AvgPool2d(3, stride=2, padding=1)
    x = torch.randn(6, 10, size, size).contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = shortcut_pool(pool, a), pool(b)
    if kernels == "fused":
        assert type(out.grad_fn).__name__ == "_FusedDepthwiseBackward"
    else:
        as_conv = size * size <= POOL_AS_CONV_MAX_POSITIONS
        assert ("Convolution" in type(out.grad_fn).__name__) == as_conv
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-6)
    with torch.no_grad():  # inference keeps the pool (its forward is the cheap part)
        assert torch.equal(shortcut_pool(pool, x), pool(x))
    other = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(shortcut_pool(other, a), other(a), atol=0, rtol=0)

"""The fused training stem (shufflenet_core/csrc/fused_stem.cpp, shufflenet_core.fused_stem).

conv 3x3/2 -> BN -> ReLU -> max pool 3x3/2 as one kernel each way equals its float64
composition to float32 rounding (closer than PyTorch's own float32 ops), with the running
statistics; the pool keeps PyTorch's rules (first of equal maxima, NaN wins); the model takes
it in training only, and nowhere its layers are hooked, swapped or need other gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from shufflenet_core import ShuffleNetConfig, build_model, fused
from shufflenet_core.fused_stem import fused_stem, fused_stem_usable

from .checks import backward_nodes, relative_error


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    monkeypatch.delenv(fused.SWITCH, raising=False)
    assert fused.available(), fused.status()


def _stem(in_channels: int, channels: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    with torch.no_grad():
        stem[1].weight.uniform_(0.5, 1.5)
        stem[1].bias.uniform_(-0.5, 0.5)
    return stem


def _run_fused(stem: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    assert fused_stem_usable(*stem, x)
    return fused_stem(stem[0], stem[1], x)


@pytest.mark.parametrize("batch, in_channels, height, width, channels", [
    (16, 1, 32, 32, 24),   # the proxy's shape, 1.0x
    (8, 1, 32, 32, 48),    # 2.0x: six vectors of channels
    (4, 3, 17, 23, 7),     # RGB, odd sizes, a channel count off the vector width
    (3, 2, 5, 6, 5),       # tiny maps: every window at an edge
    (2, 1, 1, 1, 3),       # one pixel: one conv position, one window
])
def test_the_fused_stem_equals_the_float64_composition(batch, in_channels, height, width, channels) -> None:
    """Output, the weight, gamma and beta gradients and the running statistics over two steps
    (inputs off centre and of changing mean), and at least as close as PyTorch's float32 ops."""
    stem = _stem(in_channels, channels, seed=channels + height)
    reference = _stem(in_channels, channels, seed=0).double()
    reference.load_state_dict(stem.state_dict())
    pytorch = _stem(in_channels, channels, seed=0)
    pytorch.load_state_dict(stem.state_dict())
    for step in range(2):
        x = torch.randn(batch, in_channels, height, width) * 2 + 3 * step + 1.5
        out = _run_fused(stem, x)
        expected = reference(x.double())
        assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
        assert "_FusedStemBackward" in backward_nodes(out)
        assert relative_error(out, expected) < 1e-6
        grad = torch.randn_like(expected)
        for model in (stem, reference, pytorch):
            model.zero_grad()
        out.backward(grad.float())
        expected.backward(grad)
        pytorch(x).backward(grad.float())
        for (name, p), r, q in zip(stem.named_parameters(), reference.parameters(), pytorch.parameters(), strict=True):
            fused_error, pytorch_error = relative_error(p.grad, r.grad), relative_error(q.grad, r.grad)
            # (two single pixels per channel make BN nearly scale-free: every float32 path loses
            # digits there, PyTorch's more)
            assert fused_error < max(2e-6, pytorch_error), (name, fused_error, pytorch_error)
            assert fused_error <= max(1.5 * pytorch_error, 2e-7), (name, fused_error, pytorch_error)
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(stem.state_dict()[name], value.to(stem.state_dict()[name].dtype), atol=1e-6,
                                       rtol=1e-6, msg=name)


def test_cumulative_running_statistics_and_nchw_or_nhwc_images() -> None:
    """momentum=None (a cumulative average) as nn.BatchNorm2d; RGB images in either layout."""
    stem, twin = _stem(3, 8, seed=1), _stem(3, 8, seed=1)
    for model in (stem, twin):
        model[1].momentum = None
    x = torch.randn(4, 3, 12, 12) + 2
    for _ in range(3):
        _run_fused(stem, x.contiguous(memory_format=torch.channels_last))
        twin(x)
    for name, value in twin.state_dict().items():
        torch.testing.assert_close(stem.state_dict()[name], value, atol=1e-6, rtol=1e-6, msg=name)
    torch.testing.assert_close(_run_fused(stem, x), _run_fused(stem, x.contiguous(memory_format=torch.channels_last)))


def test_equal_maxima_send_the_gradient_to_the_first_as_pytorch_does() -> None:
    """Only the centre tap weighs, and the pixels it reads are all equal within an image: every
    pool window is a tie, so the pool's rule (row-major, the first maximum stays) alone decides
    which position's patch the weight gradient sees; the other pixels differ, so a wrong
    winner changes the gradient of the other taps."""
    stem, twin = _stem(1, 4, seed=2), _stem(1, 4, seed=2)
    with torch.no_grad():
        for model in (stem, twin):
            model[0].weight.zero_()
            model[0].weight[:, 0, 1, 1] = torch.arange(1.0, 5.0) / 4
            model[1].bias.fill_(2.0)  # the ReLU passes every winner
    torch.manual_seed(5)
    x = torch.randn(2, 1, 9, 9)
    x[0, 0, ::2, ::2] = 1.0
    x[1, 0, ::2, ::2] = 2.0  # a second level, so the batch has a variance
    grad = torch.randn(2, 4, 3, 3)
    _run_fused(stem, x).backward(grad)
    twin(x).backward(grad)
    for (name, p), q in zip(stem.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_nan_pixel_gives_nan_like_pytorch() -> None:
    stem = _stem(1, 4, seed=3)
    x = torch.randn(2, 1, 8, 8)
    x[0, 0, 3, 3] = float("nan")
    assert torch.isnan(_run_fused(stem, x)).all()  # the batch statistics are NaN, so is every value


def test_two_threads_agree_with_one() -> None:
    stem = _stem(1, 24, seed=4)
    x = torch.randn(16, 1, 32, 32)
    grad = torch.randn(16, 24, 8, 8)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            stem.zero_grad()
            out = _run_fused(stem, x)
            out.backward(grad)
            results.append([out.detach(), *(p.grad.clone() for p in stem.parameters())])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert relative_error(two, one.double()) < 1e-6


def test_the_model_trains_through_the_fused_stem_only_where_it_may() -> None:
    config = ShuffleNetConfig.from_width(3, 0.5, num_classes=10, in_channels=1, input_size=32)
    model = build_model(config).train()
    x = torch.randn(4, 1, 32, 32)
    assert model._can_fuse_stem(x)
    assert "_FusedStemBackward" in backward_nodes(model(x))
    assert not model._can_fuse_stem(x.double())
    assert not model._can_fuse_stem(x.clone().requires_grad_())  # the images want a gradient: the ops give it
    assert "_FusedStemBackward" not in backward_nodes(model(x.clone().requires_grad_()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not model._can_fuse_stem(x)
    seen = []
    handle = model.stem.bn.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert "_FusedStemBackward" not in backward_nodes(model(x))
    handle.remove()
    assert seen == [torch.Size((4, model.stem.bn.num_features, 16, 16))]  # the hook saw the BN run
    model.stem.pool.ceil_mode = True
    assert not model._can_fuse_stem(x)
    model.stem.pool.ceil_mode = False
    model.eval()
    with torch.no_grad():
        assert "_FusedStem" not in str(model(x).grad_fn)


def test_the_model_wires_the_fused_stem_like_its_own_layers() -> None:
    """A whole training step of the fast build: the stem's output and running statistics are
    the float64 stem's, and its parameter gradients are what the float64 stem gives for the
    gradient that reached it from the stages (taking that gradient as given keeps the check
    exact: the stages' own float32 rounding can flip a ReLU whose input is within rounding of
    0, and then the gradient reaching the stem differs between any two float32 builds)."""
    config = ShuffleNetConfig.from_width(3, 1.0, num_classes=10, in_channels=1, input_size=32)
    torch.manual_seed(0)
    model = build_model(config).train()
    reference = nn.Sequential(*(copy.deepcopy(layer) for layer in model.stem)).double()
    reached = []
    model.stages.register_forward_pre_hook(lambda module, inputs: reached.append(inputs[0]) or inputs[0].retain_grad())
    for step in range(2):
        x, labels = torch.randn(16, 1, 32, 32) + step, torch.randint(0, 10, (16,))
        model.zero_grad()
        reference.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        assert "_FusedStemBackward" in backward_nodes(loss)
        loss.backward()
        expected = reference(x.double())
        assert relative_error(reached[-1], expected) < 1e-6
        expected.backward(reached[-1].grad.double())
        for (name, p), r in zip(model.stem.named_parameters(), reference.parameters(), strict=True):
            assert relative_error(p.grad, r.grad) < 2e-6, name
        for (name, value), mine in zip(reference.state_dict().items(), model.stem.state_dict().values(), strict=True):
            torch.testing.assert_close(mine, value.to(mine.dtype), atol=1e-6, rtol=1e-6, msg=name)

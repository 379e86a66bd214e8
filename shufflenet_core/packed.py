"""Inference convolutions with weights packed once for oneDNN, BN folded in, ReLU fused.

``F.conv2d`` reorders its weight into oneDNN's blocked layout on every call, which at batch 1
costs as much as the arithmetic of a ShuffleNet layer. Packing each folded weight once (and
fusing the ReLU and the residual add into the conv) made eager 1.0x g3 inference at 224x224
about 1.6x faster than the bmm path here (``benchmarks/speed.py``). The ops are PyTorch's
own (``torch.ops.mkldnn``, the ones TorchInductor emits for CPU convs); where a build lacks
them or oneDNN is switched off, :func:`available` is false and callers keep their other path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["PackedConv", "available", "pack_conv", "run_packed", "usable_for"]


def _ops():
    return torch.ops.mkldnn


def available() -> bool:
    """Whether this torch build can run :func:`run_packed` now (oneDNN built and enabled)."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    try:
        ops = _ops()
        return bool(ops._convolution_pointwise and ops._reorder_convolution_weight)
    except (AttributeError, RuntimeError):
        return False


def usable_for(x: torch.Tensor) -> bool:
    """Whether an input like ``x`` can take the packed path (oneDNN available, float32 on CPU;
    oneDNN has no float64 convs, and other types are left to PyTorch's own kernels)."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and available()


class PackedConv(NamedTuple):
    """A conv's packed weight, its bias (e.g. a folded BN's shift) and its geometry."""

    weight: torch.Tensor
    bias: torch.Tensor
    padding: list[int]
    stride: list[int]
    groups: int


def pack_conv(weight: torch.Tensor, bias: torch.Tensor, *, stride: int, groups: int,
              input_shape: torch.Size) -> PackedConv:
    """Pack ``weight`` (``nn.Conv2d`` layout, square kernel, "same" padding) for inputs of
    ``input_shape``; oneDNN picks the blocked layout for that shape."""
    padding = [weight.shape[-1] // 2] * 2
    strides = [stride] * 2
    packed = _ops()._reorder_convolution_weight(weight.detach().contiguous(), padding, strides, [1, 1], groups,
                                                list(input_shape))
    return PackedConv(packed, bias.detach().contiguous(), padding, strides, groups)


def run_packed(conv: PackedConv, x: torch.Tensor, *, relu: bool = False,
               residual: torch.Tensor | None = None) -> torch.Tensor:
    """``conv(x) + bias``, then ``+ residual`` if given, then ReLU if asked: one oneDNN call.

    The output has ``x``'s memory format (channels_last in, channels_last out).
    """
    ops = _ops()
    args = (conv.padding, conv.stride, [1, 1], conv.groups)
    if residual is None:
        return ops._convolution_pointwise(x, conv.weight, conv.bias, *args, "relu" if relu else "none", [], "")
    return ops._convolution_pointwise.binary(x, residual, conv.weight, conv.bias, *args, "add", 1.0,
                                             "relu" if relu else None, [], "")

"""The stem in training (conv 3x3/2, BN, ReLU, max pool 3x3/2) as one fused kernel each way.

PyTorch's ops write and re-read the conv's full-resolution map (the largest in the network,
4x the pooled one) about five times forward and backward. ``csrc/fused_stem.cpp`` never stores
it: the batch statistics of a conv's output follow from its input patches' mean and covariance,
and the backward needs sums over the pool's winning positions only. Same results as the
separate ops (closer to float64, tested); the images take no gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import fused
from .ops import exporting, fusable_batch_norm, moved_by_kernel, running_stats_factor

__all__ = ["fused_stem", "fused_stem_usable", "is_stem_conv", "is_stem_pool"]


def _pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return (value, value) if isinstance(value, int) else tuple(value)


def is_stem_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is the stem conv as built: 3x3, stride 2, padding 1, no bias."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (2, 2)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None
            and conv.padding_mode == "zeros")


def is_stem_pool(pool: nn.Module) -> bool:
    """Whether ``pool`` is the stem's max pool as built: 3x3, stride 2, padding 1."""
    return (type(pool) is nn.MaxPool2d and _pair(pool.kernel_size) == (3, 3) and _pair(pool.stride) == (2, 2)
            and _pair(pool.padding) == (1, 1) and _pair(pool.dilation) == (1, 1) and not pool.ceil_mode
            and not pool.return_indices)


def fused_stem_usable(conv: nn.Module, bn: nn.Module, relu: nn.Module, pool: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`fused_stem` computes ``pool(relu(bn(conv(x))))``: the ShuffleNet stem's
    layers as built, a training BN with running statistics, float32 CPU images that need no
    gradient, no autocast or export, and the kernels built."""
    if not (is_stem_conv(conv) and is_stem_pool(pool) and type(relu) is nn.ReLU and fusable_batch_norm(bn)):
        return False
    assert isinstance(conv, nn.Conv2d)
    if conv.weight.dtype != torch.float32:
        return False
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu" or x.requires_grad:
        return False
    if x.shape[1] != conv.in_channels or x.shape[0] * ((x.shape[2] + 1) // 2) * ((x.shape[3] + 1) // 2) < 2:
        return False  # bn itself raises for a single value per channel
    if torch.is_autocast_enabled("cpu") or exporting():
        return False
    return fused.available()


def fused_stem(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``max_pool(relu(bn(conv(x))), 3, 2, 1)`` in training, as a channels_last tensor; updates
    ``bn``'s running statistics as ``bn`` would. Call only where :func:`fused_stem_usable` holds."""
    factor = running_stats_factor(bn)
    out = _FusedStem.apply(x, conv.weight, bn.weight, bn.bias, bn.eps, bn.running_mean, bn.running_var, factor)
    moved_by_kernel(bn)
    return out


class _FusedStem(torch.autograd.Function):
    """Saves the images, the pooled output (kept by the next layer anyway), one byte per pooled
    value for the pool's winner and the patch statistics: the conv's map is never stored."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float):
        weight, gamma = weight.contiguous(), gamma.contiguous()
        out, winners, var, stats = fused.ops().stem(x, weight, gamma, beta.contiguous(), eps, running_mean, running_var,
                                                    momentum)
        ctx.save_for_backward(x, out, winners, weight, gamma, var, stats)
        ctx.eps = eps
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, out, winners, weight, gamma, var, stats = ctx.saved_tensors
        grad_weight, grad_gamma, grad_beta = fused.ops().stem_backward(grad, x, out, winners, weight, gamma, var,
                                                                       stats, ctx.eps)
        needs = ctx.needs_input_grad
        return (None, grad_weight if needs[1] else None, grad_gamma if needs[2] else None,
                grad_beta if needs[3] else None, None, None, None, None)

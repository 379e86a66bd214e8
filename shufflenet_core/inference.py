"""Eval-mode kernels of the fast build (``csrc/inference.cpp``), with every BN folded in.

oneDNN runs a ShuffleNet's grouped 1x1 convs at batch 1 at 45-70 GFLOP/s on this kind of
machine: it vectorizes over a group's 20-40 output channels in 16- or 32-wide blocks. The
kernels here keep 4 rows x 24 channels of outputs in registers (85-100 GFLOP/s on the same
layers), write a stride-2 unit's two branches straight into their halves of the output (no
concat), read pw2's input through the channel shuffle's index (no gather), and run the stem's
conv, BN, ReLU and max pool as one pass. Same numbers as the separate ops to float32 rounding
(tested). They are built with the training kernels (:mod:`shufflenet_core.fused`); where those
are unavailable the units keep oneDNN's packed convs (:mod:`shufflenet_core.packed`).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import torch

from . import fused
from .structure import conv_output_size, stem_output_size

__all__ = [
    "PackedDepthwise",
    "PackedPointwise",
    "is_scratch",
    "scratch_map",
    "pack_depthwise",
    "pack_pointwise",
    "pack_stem",
    "pointwise",
    "depthwise",
    "shortcut_pool_taps",
    "stem",
    "usable_for",
]

LANES = 8
"""The kernels' vector width: packed weights are zero-padded to a multiple of it."""
BLOCK = 3 * LANES
"""Output channels of a pointwise tile: packed weights are stored block after block."""


def usable_for(x: torch.Tensor) -> bool:
    """Whether an input like ``x`` can take these kernels: float32 on the CPU, kernels built."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and fused.available()


def _padded(count: int) -> int:
    return -(-count // LANES) * LANES


def _pad_last(values: torch.Tensor, count: int) -> torch.Tensor:
    """``values`` with its last dimension zero-padded from ``count`` to a multiple of LANES."""
    out = values.new_zeros((*values.shape[:-1], _padded(count)))
    out[..., :count] = values
    return out.contiguous()


class PackedPointwise(NamedTuple):
    """A grouped 1x1 conv with its BN folded: weight (groups, inputs per group x padded
    outputs, in blocks of :data:`BLOCK` outputs), bias (groups, padded), the input channel
    each group's inputs are, outputs per group."""

    weight: torch.Tensor
    bias: torch.Tensor
    columns: torch.Tensor
    per_group: int


def pack_pointwise(weight: torch.Tensor, bias: torch.Tensor, groups: int,
                   columns: list[int] | None = None) -> PackedPointwise:
    """Pack ``weight`` (``nn.Conv2d`` layout, 1x1) and ``bias``; ``columns[j]`` is the input
    channel that the conv's input ``j`` is read from (a shuffle's order; default: ``j``)."""
    out_channels, depth = weight.shape[0], weight.shape[1]
    per_group = out_channels // groups
    by_group = _pad_last(weight.detach().reshape(groups, per_group, depth).transpose(1, 2), per_group)
    blocks = [by_group[:, :, first:first + BLOCK].reshape(groups, -1) for first in range(0, by_group.shape[2], BLOCK)]
    index = list(range(depth * groups)) if columns is None else columns
    return PackedPointwise(torch.cat(blocks, dim=1).contiguous(),
                           _pad_last(bias.detach().reshape(groups, per_group), per_group),
                           torch.tensor(index, dtype=torch.int32), per_group)


class PackedDepthwise(NamedTuple):
    """A 3x3 depthwise conv with its BN folded: weight tap by tap (9, padded), bias (padded)."""

    taps: torch.Tensor
    bias: torch.Tensor


def pack_depthwise(weight: torch.Tensor, bias: torch.Tensor) -> PackedDepthwise:
    channels = weight.shape[0]
    return PackedDepthwise(_pad_last(weight.detach().reshape(channels, 9).t(), channels),
                           _pad_last(bias.detach(), channels))


def shortcut_pool_taps(channels: int) -> PackedDepthwise:
    """``AvgPool2d(3, 2, 1)`` (zeros counted: ``count_include_pad``) as a depthwise conv."""
    return PackedDepthwise(_pad_last(torch.full((9, channels), 1.0 / 9.0), channels), torch.zeros(_padded(channels)))


def pack_stem(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stem conv's folded weight tap by tap ((in channel, ky, kx), padded outputs), and bias."""
    out_channels = weight.shape[0]
    taps = weight.detach().permute(1, 2, 3, 0).reshape(-1, out_channels)
    return _pad_last(taps, out_channels), _pad_last(bias.detach(), out_channels)


def _map(batch: int, channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty((batch, channels, height, width), dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last)


SCRATCH_MAX_FLOATS = 4 << 20
"""Largest map (16 MB) kept for reuse; bigger ones (large batches) are allocated per call."""

SCRATCH_MAX_VIEWS = 256
"""Views of the buffers cached per thread (one per slot and shape): a view costs 3 us to make,
which is most of what a unit's call costs beyond its arithmetic at small sizes."""

_scratch = threading.local()


def scratch_map(slot: int, batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """An NHWC float32 map from this thread's reusable buffer ``slot``, for the model's own
    maps inside a forward, which the kernels overwrite whole before anything reads them.

    A fresh 0.4-1.5 MB map per layer costs page faults on every call (glibc hands blocks that
    large back to the kernel when freed): 1,072 minor faults per 2.0x g3 forward at batch 1.
    Buffers are per thread, so concurrent forwards in several threads do not share them; the
    caller must be done with a slot's previous map before asking for it again.
    """
    key = (slot, batch, channels, height, width)
    views = getattr(_scratch, "views", None)
    if views is None:
        views = _scratch.views = {}
        _scratch.buffers = {}
    view = views.get(key)
    if view is not None:
        return view
    size = batch * channels * height * width
    if size > SCRATCH_MAX_FLOATS:
        return torch.empty((batch, channels, height, width), dtype=torch.float32, memory_format=torch.channels_last)
    buffers = _scratch.buffers
    if slot not in buffers or buffers[slot].numel() < size:
        buffers[slot] = torch.empty(size, dtype=torch.float32)  # the kernels' type, whatever the default
        for stale in [known for known in views if known[0] == slot]:  # views of the old buffer
            del views[stale]
    if len(views) >= SCRATCH_MAX_VIEWS:  # inputs of ever new shapes: keep the cache bounded
        views.clear()
    view = views[key] = buffers[slot][:size].view(batch, height, width, channels).permute(0, 3, 1, 2)
    return view


def is_scratch(x: torch.Tensor) -> bool:
    """Whether ``x`` lives in one of this thread's reused buffers (:func:`scratch_map`)."""
    pointer = x.untyped_storage().data_ptr()
    buffers = getattr(_scratch, "buffers", {})
    return any(buffer.untyped_storage().data_ptr() == pointer for buffer in buffers.values())


def pointwise(x: torch.Tensor, conv: PackedPointwise, *, relu: bool, residual: torch.Tensor | None = None,
              out: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """``relu?(conv(x) + bias + residual?)`` of an NHWC map, into channels ``offset...`` of
    ``out`` (a new map when none is given), which it returns."""
    if out is None:
        out = _map(x.shape[0], conv.bias.shape[0] * conv.per_group, x.shape[2], x.shape[3], x)
    fused.ops().pointwise_infer(x, conv.weight, conv.bias, conv.columns, conv.per_group, residual, relu, out, offset)
    return out


def depthwise(x: torch.Tensor, conv: PackedDepthwise, stride: int, *, out: torch.Tensor | None = None,
              offset: int = 0) -> torch.Tensor:
    """The 3x3 depthwise conv (padding 1) + bias of an NHWC map, into channels ``offset...`` of
    ``out`` (a new map when none is given), which it returns."""
    batch, channels, height, width = x.shape
    if out is None:
        out = _map(batch, channels, conv_output_size(height, stride=stride), conv_output_size(width, stride=stride), x)
    fused.ops().depthwise_infer(x, conv.taps, conv.bias, stride, out, offset)
    return out


def stem(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, channels: int, *,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """max_pool(relu(conv(x) + bias)), 3x3/2 each, of an image (any memory format), into
    ``out`` (a new NHWC map when none is given), which it returns."""
    if out is None:
        out = _map(x.shape[0], channels, stem_output_size(x.shape[2])[1], stem_output_size(x.shape[3])[1], x)
    fused.ops().stem_infer(x, weight, bias, channels, out)
    return out

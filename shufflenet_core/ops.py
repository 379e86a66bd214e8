"""Layer factories of the builder: the one place that picks how a layer is implemented.

The grouped 1x1 convolution is most of ShuffleNet's MACs, and on CPU ``nn.Conv2d(groups=g)``
is slow on small feature maps (mkldnn's grouped kernel has a high fixed cost per call). One
``torch.bmm`` over the groups does the same arithmetic 3-9x faster there, so
:class:`PointwiseConv2d` keeps ``nn.Conv2d``'s parameters (same ``weight`` of shape
``(out, in/g, 1, 1)``, no bias, same state_dict) and only changes how forward computes.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import fused

__all__ = [
    "BMM_MAX_POSITIONS",
    "CHANNELS_LAST_DEPTHWISE_MAX_POSITIONS",
    "POINTWISE_MODES",
    "TAPWISE_WEIGHT_GRAD_MAX_POSITIONS",
    "DepthwiseConv2d",
    "PointwiseConv2d",
    "ResidualGradient",
    "batch_norm_affine",
    "batch_norm_channels_last",
    "depthwise_conv",
    "exporting",
    "fold_pointwise",
    "is_shortcut_average",
    "fusable_batch_norm",
    "fused_batch_norm",
    "fused_batch_norm_usable",
    "fused_map_usable",
    "grouped_pointwise_bmm",
    "is_channels_last",
    "pointwise_affine_bmm",
    "pointwise_conv",
    "shortcut_pool",
    "uses_bmm",
]

POINTWISE_MODES = ("auto", "bmm", "conv")

#: ``auto`` uses bmm when a sample's feature map has at most this many positions (H x W), or
#: for batch 1. Measured here (2-core EPYC, torch 2.13, forward + backward, batch 128,
#: 1.0x g3 layers): bmm is 1.1-2.8x faster than the grouped conv from 1x1 to 16x16 maps and
#: 1.1-1.3x at batch 1 for 7x7..56x56; at 32x32 in training the two were even.
BMM_MAX_POSITIONS = 16 * 16

#: A depthwise conv on a feature map this small runs in channels_last (its NCHW kernel has a
#: large per-call cost: 2x2 maps, batch 128: 3.4-15 ms NCHW vs 0.9-2.4 ms channels_last);
#: on a 1x1 map a 3x3 "same" conv only sees its centre tap and is a per-channel scale.
CHANNELS_LAST_DEPTHWISE_MAX_POSITIONS = 3 * 3

#: Without the fused kernels (:func:`fused_depthwise_usable`, which take every NHWC depthwise
#: conv in training where built): up to this many positions (2x2), a depthwise conv in
#: training takes its weight gradient as one per-channel dot product per tap: oneDNN's took
#: 1.2-1.6 ms on 128x240x2x2 and 128x480x2x2 maps here against 0.3-0.4 ms, and it is 3% of a
#: 2.0x g3 proxy step.
TAPWISE_WEIGHT_GRAD_MAX_POSITIONS = 2 * 2


#: Without the fused kernels (which run every NHWC shortcut pool in training, as a depthwise
#: conv with 1/9 weights): in training, the stride-2 shortcut (3x3 average pool, stride 2,
#: padding 1, zeros counted) on NHWC maps up to this size runs as a depthwise conv with
#: constant 1/9 weights: ATen's NHWC average-pool backward is slow on tiny maps (forward +
#: backward, batch 128, 1 thread: 1936 vs 302 us on 960x2x2, 749 vs 584 us on 480x4x4; on
#: 24x8x8 the pool wins, 188 vs 343).
POOL_AS_CONV_MAX_POSITIONS = 4 * 4


def exporting() -> bool:
    """True while a graph is captured (ONNX legacy/dynamo, torch.export, jit trace)."""
    return (
        torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_exporting()
        or torch.compiler.is_compiling()
    )


def uses_bmm(mode: str, groups: int, batch: int, height: int, width: int) -> bool:
    """Whether ``mode`` computes a 1x1 conv with these shapes as one batched matmul."""
    if mode == "conv":
        return False
    if mode == "bmm":
        return True
    return batch == 1 or height * width <= BMM_MAX_POSITIONS


class PointwiseConv2d(nn.Conv2d):
    """A bias-free 1x1 group convolution: ``nn.Conv2d`` in every respect but its speed.

    ``mode="auto"`` picks per call between one ``torch.bmm`` over the groups and the plain
    conv by the input's shape (:func:`uses_bmm`); ``"bmm"`` and ``"conv"`` force one. While a
    graph is exported it always runs the plain conv, so ONNX gets standard grouped ``Conv``
    nodes.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1, *, mode: str = "auto") -> None:
        if mode not in POINTWISE_MODES:
            raise ValueError(f"pointwise mode must be one of {', '.join(POINTWISE_MODES)}, got {mode!r}")
        super().__init__(in_channels, out_channels, 1, groups=groups, bias=False)
        self.mode = mode

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}"

    def takes_bmm(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` computes ``x`` as one bmm (else the plain conv)."""
        if x.dim() != 4 or exporting():
            return False
        batch, _, height, width = x.shape
        return uses_bmm(self.mode, self.groups, batch, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.takes_bmm(x):
            return super().forward(x)
        return grouped_pointwise_bmm(x, self.weight, self.groups)


def is_channels_last(x: torch.Tensor) -> bool:
    """Stored as NHWC (a 1x1 map is both layouts at once and counts as channels_last)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and (
        not x.is_contiguous() or x.shape[-1] * x.shape[-2] == 1
    )


class ResidualGradient:
    """Hands a stride-1 unit's residual gradient from its last BN's backward (which computes
    it first: that BN is the unit's last op) to its first 1x1 conv's backward, which adds its
    own gradient into it in place (``baddbmm_``). The unit's input then receives one gradient,
    not two for autograd to sum: one 4 MB pass and one fresh buffer fewer per unit on a 2.0x g3
    proxy map. If that conv's backward does not run (only other gradients were asked for), the
    slot is simply dropped with the graph."""

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        return grad


def grouped_pointwise_bmm(x: torch.Tensor, weight: torch.Tensor, groups: int,
                          residual_gradient: ResidualGradient | None = None) -> torch.Tensor:
    """``conv2d(x, weight, groups=groups)`` for a 1x1 ``weight`` as one ``bmm`` over groups.

    The input becomes ``(g, in/g, N*H*W)`` (free for batch 1), is multiplied by the weight as
    ``(g, out/g, in/g)`` and permuted back to ``(N, out, H, W)``. ``residual_gradient`` (NHWC
    ``x`` only) is added into the input's gradient (see :class:`ResidualGradient`).
    """
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[0]
    positions = height * width
    in_per_group, out_per_group = in_channels // groups, out_channels // groups
    w = weight.reshape(groups, out_per_group, in_per_group)
    if is_channels_last(x):
        rows = x.permute(0, 2, 3, 1).reshape(batch * positions, in_channels)  # a view of NHWC storage
        y = _GroupedRowsMatmul.apply(rows, weight, groups, residual_gradient)
        return y.view(batch, height, width, out_channels).permute(0, 3, 1, 2)
    if residual_gradient is not None:
        raise ValueError("a residual gradient is handed on only for NHWC maps")
    if batch == 1:
        y = torch.bmm(w, x.reshape(groups, in_per_group, positions))
        return y.reshape(1, out_channels, height, width)
    columns = x.reshape(batch, groups, in_per_group, positions).permute(1, 2, 0, 3)
    columns = columns.reshape(groups, in_per_group, batch * positions)
    y = torch.bmm(w, columns)
    return y.reshape(groups, out_per_group, batch, positions).permute(2, 0, 1, 3).reshape(batch, out_channels, height, width)


class _GroupedRowsMatmul(torch.autograd.Function):
    """The grouped 1x1 conv of an NHWC map seen as its ``(N*H*W, C)`` rows, without copies.

    Each group is a strided ``(rows, C/g)`` view of the input, and ``bmm`` writes each
    group's result straight into its columns of the output (``out=`` a transposed view), in
    the forward pass and in both gradients: no regrouping copy before or after any bmm, which
    otherwise cost 10-15% of a training step.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, groups: int,
                residual_gradient: ResidualGradient | None = None) -> torch.Tensor:
        rows = rows.contiguous()  # already so for an NHWC map's rows
        count = rows.shape[0]
        out_channels, in_per_group = weight.shape[:2]
        w = weight.reshape(groups, out_channels // groups, in_per_group)
        out = rows.new_empty(count, groups, out_channels // groups)
        torch.bmm(rows.view(count, groups, in_per_group).transpose(0, 1), w.transpose(1, 2), out=out.transpose(0, 1))
        ctx.save_for_backward(rows, weight)
        ctx.groups, ctx.residual_gradient = groups, residual_gradient
        return out.view(count, out_channels)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        groups, count = ctx.groups, rows.shape[0]
        out_channels, in_per_group = weight.shape[:2]
        w = weight.reshape(groups, out_channels // groups, in_per_group)
        grad_groups = grad.contiguous().view(count, groups, out_channels // groups).transpose(0, 1)
        grad_rows = grad_weight = None
        if ctx.needs_input_grad[0]:
            pending = ctx.residual_gradient.take() if ctx.residual_gradient is not None else None
            if pending is not None and pending.shape == rows.shape and pending.is_contiguous():
                grad_rows = pending.view(count, groups, in_per_group)
                grad_rows.transpose(0, 1).baddbmm_(grad_groups, w)  # the residual's gradient plus this one
            else:
                grad_rows = rows.new_empty(count, groups, in_per_group)
                torch.bmm(grad_groups, w, out=grad_rows.transpose(0, 1))
                if pending is not None:
                    grad_rows += pending.view(count, groups, in_per_group)
            grad_rows = grad_rows.view(count, groups * in_per_group)
        if ctx.needs_input_grad[1]:
            columns = rows.view(count, groups, in_per_group).transpose(0, 1)
            grad_weight = torch.bmm(grad_groups.transpose(1, 2), columns).reshape(weight.shape)
        return grad_rows, grad_weight, None, None


def batch_norm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``bn`` as ``x * scale + shift`` per channel, to fold into the layer before it."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bias - bn.running_mean * scale


class _RowsBatchNorm(torch.autograd.Function):
    """Training-mode BN of an NHWC map seen as its ``(N*H*W, C)`` matrix of rows.

    Every per-channel statistic is a column sum of that matrix (PyTorch's cascaded, accurate
    float32 sum); the mean is taken first and the variance from the centred rows, which the
    backward pass reuses. Returns the output rows and the batch mean and biased variance.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        count = rows.shape[0]
        mean = rows.sum(0) / count
        centred = rows - mean
        work = torch.square(centred)
        var = work.sum(0) / count
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        ctx.save_for_backward(centred, scale, invstd)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)  # no zero gradients for the statistics
        return torch.addcmul(bias, centred, scale, out=work), mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, _mean: None, _var: None):
        if grad is None:
            return None, None, None, None
        centred, scale, invstd = ctx.saved_tensors
        count = grad.shape[0]
        grad_bias = grad.sum(0)
        work = torch.mul(grad, centred)
        grad_centred = work.sum(0)  # sum of grad * x_hat, over invstd
        # d/dx = scale * (grad - mean(grad) - x_hat * mean(grad * x_hat))
        shift = grad_bias * (scale / -count)
        slope = grad_centred * (scale * invstd * invstd / -count)
        grad_rows = torch.addcmul(shift, grad, scale, out=work).addcmul_(centred, slope)
        return grad_rows, grad_centred * invstd, grad_bias, None


def batch_norm_channels_last(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``, computed on the ``(N*H*W, C)`` rows of an NHWC ``x`` in training mode.

    PyTorch's own NHWC BN kernel is 3-12x faster than its NCHW one on small maps but sums
    rows one by one in float32 (10-20x the rounding error, amplified by backward). This path
    (the fused kernel where built, else column sums in PyTorch ops) is faster and at least as
    accurate as the NCHW kernel, and updates ``running_mean``,
    ``running_var`` (unbiased) and ``num_batches_tracked`` exactly as ``bn`` would. Anything
    else (eval mode, NCHW or 1x1 maps, export, no running stats) runs ``bn`` itself.
    """
    batch, channels, height, width = x.shape if x.dim() == 4 else (0, 0, 0, 0)
    count = batch * height * width
    if (not _trains_with_running_stats(bn) or height * width == 1 or count < 2 or not is_channels_last(x)
            or exporting()):
        return bn(x)
    rows = x.permute(0, 2, 3, 1).reshape(count, channels)  # a view of NHWC storage
    if fused_batch_norm_usable(bn, x):
        out = _fused_rows(bn, rows, None, False, 1, None)
    else:
        out, mean, var = _RowsBatchNorm.apply(rows, bn.weight, bn.bias, bn.eps)
        _update_running_stats(bn, mean, var, count)
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def running_stats_factor(bn: nn.BatchNorm2d) -> float:
    """Counts the batch in ``num_batches_tracked`` and returns how far the running statistics
    move towards the batch's, as ``nn.BatchNorm2d.forward`` does (the fused kernels move them)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    return factor


def moved_by_kernel(bn: nn.BatchNorm2d) -> None:
    """Marks ``bn``'s running statistics as changed in place (a kernel wrote them): their
    ``_version`` is what cached folds of the BN are keyed on."""
    assert bn.running_mean is not None and bn.running_var is not None, "the fused paths need them"
    torch.autograd.graph.increment_version((bn.running_mean, bn.running_var))


def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """``running_mean``, ``running_var`` (unbiased) and ``num_batches_tracked`` as ``bn`` updates them."""
    factor = running_stats_factor(bn)
    assert bn.running_mean is not None and bn.running_var is not None, "checked by the callers"
    with torch.no_grad():
        bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1 - factor).add_(var, alpha=factor * count / (count - 1))


def _trains_with_running_stats(bn: nn.Module) -> bool:
    """A BatchNorm2d in training mode with affine parameters and running statistics to update:
    what both NHWC training paths compute (anything else runs ``bn`` itself)."""
    return (isinstance(bn, nn.BatchNorm2d) and bn.training and bn.track_running_stats and bn.affine
            and bn.running_mean is not None and bn.running_var is not None)


def fused_batch_norm_usable(bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`fused_batch_norm` can run ``bn`` on ``x``: a training BN with running
    statistics and affine parameters (:func:`fusable_batch_norm`) and a map the kernels take
    (:func:`fused_map_usable`)."""
    return fusable_batch_norm(bn) and fused_map_usable(x)


def fusable_batch_norm(bn: nn.Module) -> bool:
    """A training float32 BN with running statistics and affine parameters."""
    return (_trains_with_running_stats(bn) and bn.weight is not None and bn.bias is not None
            and bn.weight.dtype == torch.float32)


def fused_map_usable(x: torch.Tensor) -> bool:
    """A float32 NHWC map of at least 2 positions in all on the CPU, no autocast, no graph
    capture, and the fused kernels built (:func:`shufflenet_core.fused.available`)."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu"):
        return False  # the convs between the BNs would hand them bfloat16 maps
    if not is_channels_last(x) or x.shape[0] * x.shape[2] * x.shape[3] < 2 or exporting():
        return False
    return fused.available()


def fused_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, *, relu: bool = False, residual: torch.Tensor | None = None,
                     shuffle_groups: int = 1, residual_gradient: ResidualGradient | None = None) -> torch.Tensor:
    """``relu(channel_shuffle(bn(x), shuffle_groups) + residual)`` (each part optional; a
    residual and a shuffle not together) for a training ``bn`` on NHWC maps, as one fused
    kernel forward and one backward; updates the running statistics as ``bn`` would.
    Call only where :func:`fused_batch_norm_usable` holds. With ``residual_gradient`` the
    residual's gradient goes there instead of to autograd (see :class:`ResidualGradient`).
    Returns a channels_last tensor."""
    batch, channels, height, width = x.shape
    count = batch * height * width
    rows = x.permute(0, 2, 3, 1).reshape(count, channels)
    residual_rows = None if residual is None else residual.permute(0, 2, 3, 1).reshape(count, channels)
    out = _fused_rows(bn, rows, residual_rows, relu, shuffle_groups, residual_gradient)
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def _fused_rows(bn: nn.BatchNorm2d, rows: torch.Tensor, residual: torch.Tensor | None, relu: bool,
                shuffle_groups: int, residual_gradient: ResidualGradient | None) -> torch.Tensor:
    """:class:`_FusedRowsBatchNorm` with ``bn``'s parameters; the kernel moves its running statistics."""
    factor = running_stats_factor(bn)
    out = _FusedRowsBatchNorm.apply(rows, bn.weight, bn.bias, residual, bn.eps, relu, shuffle_groups, residual_gradient,
                                    bn.running_mean, bn.running_var, factor)
    moved_by_kernel(bn)
    return out


class _FusedRowsBatchNorm(torch.autograd.Function):
    """:func:`fused_batch_norm` on ``(N*H*W, C)`` rows (the kernels of :mod:`shufflenet_core.fused`).

    Saves the input rows (the backward recomputes x - mean) and, with ReLU, the output for its
    mask: both are kept alive by neighbouring layers anyway, so nothing extra is stored."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None,
                eps: float, relu: bool, shuffle_groups: int, residual_gradient: ResidualGradient | None = None,
                running_mean: torch.Tensor | None = None, running_var: torch.Tensor | None = None,
                momentum: float = 0.0):
        rows = rows.contiguous()
        if residual is not None:
            residual = residual.contiguous()
        out, mean, var = fused.ops().batch_norm_act(rows, weight.contiguous(), bias.contiguous(), eps, relu, residual,
                                                    shuffle_groups, running_mean, running_var, momentum)
        ctx.save_for_backward(rows, out if relu else None, mean, var, weight)
        ctx.eps, ctx.shuffle_groups, ctx.has_residual = eps, shuffle_groups, residual is not None
        ctx.residual_gradient = residual_gradient
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, out, mean, var, weight = ctx.saved_tensors
        grad_rows, grad_weight, grad_bias, grad_residual = fused.ops().batch_norm_act_backward(
            grad, rows, out, mean, var, weight.contiguous(), ctx.eps, ctx.has_residual, ctx.shuffle_groups)
        if not ctx.has_residual or not ctx.needs_input_grad[3]:
            grad_residual = None
        elif ctx.residual_gradient is not None:
            ctx.residual_gradient.grad, grad_residual = grad_residual, None  # the first conv adds its own into it
        return grad_rows, grad_weight, grad_bias, grad_residual, None, None, None, None, None, None, None


def fold_pointwise(
    weight: torch.Tensor, groups: int, scale: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 group conv's weight times a per-output-channel ``scale``, as ``(g, in/g, out/g)``
    for :func:`pointwise_affine_bmm`, with ``shift`` as its ``(g, 1, out/g)`` bias."""
    out_channels, in_per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    folded = (weight.reshape(out_channels, in_per_group) * scale[:, None]).reshape(groups, out_per_group, in_per_group)
    return folded.transpose(1, 2).contiguous(), shift.reshape(groups, 1, out_per_group)


def pointwise_affine_bmm(x: torch.Tensor, folded: torch.Tensor, bias: torch.Tensor, shuffle_groups: int = 1) -> torch.Tensor:
    """``channel_shuffle(conv2d(x, weight, groups) * scale + shift, shuffle_groups)`` for NHWC ``x``.

    ``folded, bias = fold_pointwise(weight, groups, scale, shift)``. Inference only: the
    affine (a folded BN) rides in one ``baddbmm``, and the shuffle costs no extra pass, since
    regrouping the bmm's output into NHWC is one copy whichever channel order it writes.
    Returns a channels_last tensor.
    """
    batch, _, height, width = x.shape
    groups, in_per_group, out_per_group = folded.shape
    out_channels, rows = groups * out_per_group, batch * height * width
    columns = x.permute(0, 2, 3, 1).reshape(rows, groups, in_per_group).transpose(0, 1)
    y = torch.baddbmm(bias, columns, folded).transpose(0, 1)
    if shuffle_groups > 1:
        y = y.reshape(rows, shuffle_groups, out_channels // shuffle_groups).transpose(1, 2)
    return y.reshape(batch, height, width, out_channels).permute(0, 3, 1, 2)


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free k x k depthwise conv ("same" padding): ``nn.Conv2d`` but fast on tiny maps.

    Parameters, state_dict and results are ``nn.Conv2d``'s; only small feature maps (the last
    stages of a 32x32 proxy) take a faster route, and export always sees the plain conv.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(channels, channels, kernel_size, stride=stride, padding=kernel_size // 2,
                         groups=channels, bias=False)
        self.centre = kernel_size // 2
        """The "same" padding, an int (``self.padding`` may also be a string for nn.Conv2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or exporting():
            return super().forward(x)
        return self.forward_affine(x, self.weight, None)

    def forward_affine(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This conv with ``weight`` and an optional per-channel ``bias`` (e.g. a folded BN)."""
        height, width = x.shape[-2:]
        if height == 1 and width == 1:
            centre = self.centre
            y = x * weight[:, 0, centre, centre].reshape(1, -1, 1, 1)
            return y if bias is None else y + bias.reshape(1, -1, 1, 1)
        if height * width <= CHANNELS_LAST_DEPTHWISE_MAX_POSITIONS and x.shape[0] > 1 and not is_channels_last(x):
            fast = x.contiguous(memory_format=torch.channels_last)
            return self._conv_forward(fast, weight, bias).contiguous()
        if (bias is None and self.kernel_size == (3, 3) and self.stride[0] == self.stride[1] in (1, 2)
                and fused_depthwise_usable(x, weight)):
            return _FusedDepthwise.apply(x, weight, self.stride[0])
        if (bias is None and height * width <= TAPWISE_WEIGHT_GRAD_MAX_POSITIONS and torch.is_grad_enabled()
                and weight.requires_grad and is_channels_last(x)):
            return _TinyMapDepthwise.apply(x, weight, self.stride[0], self.centre)
        return self._conv_forward(x, weight, bias)


class _TinyMapDepthwise(torch.autograd.Function):
    """A depthwise conv of a tiny NHWC map: oneDNN's forward and input gradient, and the
    weight gradient as one dot product per tap and channel (see
    :data:`TAPWISE_WEIGHT_GRAD_MAX_POSITIONS`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return torch.nn.functional.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], weight.shape[0],
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_weight = _depthwise_weight_grad(x, grad, weight.shape[-1], stride, padding)
        return grad_x, grad_weight, None, None


def fused_depthwise_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the fused 3x3 depthwise kernel (``csrc/fused_depthwise.cpp``) runs a conv of
    ``x``: in training (autograd on), a float32 NHWC CPU map, no autocast or export, and the
    kernels built. Measured against oneDNN, forward + backward, batch 128, 1 thread: 1.8 vs
    1.3 ms on 120x8x8, 1.4 vs 0.19 ms on 240x2x2, 5.9 vs 0.56 ms for the shortcut pool on 960x2x2."""
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if not is_channels_last(x) or torch.is_autocast_enabled("cpu") or exporting():
        return False
    return fused.available()


class _FusedDepthwise(torch.autograd.Function):
    """A 3x3 depthwise conv (padding 1, stride 1 or 2) of an NHWC map: the fused kernels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        weight = weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return fused.ops().depthwise3x3(x, weight, stride)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight = fused.ops().depthwise3x3_backward(grad, x, weight, ctx.stride, ctx.needs_input_grad[0],
                                                               ctx.needs_input_grad[1])
        return grad_x, grad_weight, None


def _depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """d(loss)/d(weight) of a depthwise conv: per tap, the sum over batch and positions of
    ``grad`` times the input that tap saw (NHWC, so each sum runs over rows of channels).

    Only the output positions whose tap falls inside the map take part (no zero-padded copy
    of the input: on a 2x2 map that is 16 of the 36 products, and no freshly allocated
    buffer to fill)."""
    rows_in, grad_rows = x.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)
    height, width, out_height, out_width = *rows_in.shape[1:3], *grad_rows.shape[1:3]
    taps = x.new_zeros(x.shape[1], kernel, kernel)
    for i in range(kernel):
        rows = _outputs_inside(i, stride, padding, height, out_height)
        for j in range(kernel):
            columns = _outputs_inside(j, stride, padding, width, out_width)
            if not rows or not columns:
                continue
            seen = rows_in[:, _inputs_seen(rows, i, stride, padding), _inputs_seen(columns, j, stride, padding)]
            taps[:, i, j] = (seen * grad_rows[:, rows.start:rows.stop, columns.start:columns.stop]).sum((0, 1, 2))
    return taps.unsqueeze(1)


def _outputs_inside(tap: int, stride: int, padding: int, size: int, out_size: int) -> range:
    """The output indices along one axis whose ``tap`` reads an input inside the map
    (input index ``stride * out + tap - padding`` in ``[0, size)``)."""
    first = max(0, -((tap - padding) // stride))
    last = min(out_size - 1, (size - 1 + padding - tap) // stride)
    return range(first, last + 1)


def _inputs_seen(outputs: range, tap: int, stride: int, padding: int) -> slice:
    """The input indices ``outputs`` read through ``tap``, as a slice."""
    return slice(stride * outputs.start + tap - padding, stride * (outputs.stop - 1) + tap - padding + 1, stride)


def is_shortcut_average(pool: nn.Module) -> bool:
    """Whether ``pool`` is the stride-2 shortcut as built: ``AvgPool2d(3, 2, 1)`` counting the
    padding, i.e. a 3x3 depthwise conv of weights 1/9."""
    return (isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
            and not pool.ceil_mode and pool.count_include_pad and pool.divisor_override is None)


def shortcut_pool(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)`` for the stride-2 unit's shortcut; in training on tiny NHWC maps, the same
    average as a depthwise conv (see :data:`POOL_AS_CONV_MAX_POSITIONS`)."""
    if not is_shortcut_average(pool):
        return pool(x)
    if not torch.is_grad_enabled() or not is_channels_last(x) or exporting():
        return pool(x)
    mean = _mean_weight(x.shape[1], x.dtype, x.device)
    if fused_depthwise_usable(x, mean):
        return _FusedDepthwise.apply(x, mean, 2)
    if x.shape[-1] * x.shape[-2] > POOL_AS_CONV_MAX_POSITIONS:
        return pool(x)
    return torch.nn.functional.conv2d(x, mean, None, 2, 1, 1, x.shape[1])


@functools.lru_cache(maxsize=64)
def _mean_weight(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.full((channels, 1, 3, 3), 1 / 9, dtype=dtype, device=device)


def depthwise_conv(channels: int, stride: int, *, mode: str = "auto") -> nn.Conv2d:
    """The unit's 3x3 depthwise conv; ``mode="conv"`` gives a plain ``nn.Conv2d``."""
    if mode == "conv":
        return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)
    return DepthwiseConv2d(channels, 3, stride)


def pointwise_conv(in_channels: int, out_channels: int, groups: int, *, mode: str = "auto") -> nn.Conv2d:
    """A bias-free 1x1 (group) convolution with ``nn.Conv2d``'s weight layout.

    ``mode="conv"`` gives a plain ``nn.Conv2d`` (the reference build); otherwise a
    :class:`PointwiseConv2d` with that mode.
    """
    if mode == "conv":
        return nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)
    return PointwiseConv2d(in_channels, out_channels, groups, mode=mode)

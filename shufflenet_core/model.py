"""The PyTorch ShuffleNet v1, built from a config exactly as the paper and official code.

Module names match :func:`shufflenet_core.complexity` layer names, so a count on the built
model can be compared layer by layer with the count from the config.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module_globals

from . import inference, packed
from .config import ShuffleNetConfig
from .fused_stem import fused_stem, fused_stem_usable, is_stem_conv, is_stem_pool
from .ops import (
    DepthwiseConv2d,
    PointwiseConv2d,
    ResidualGradient,
    batch_norm_affine,
    batch_norm_channels_last,
    depthwise_conv,
    exporting,
    fold_pointwise,
    fusable_batch_norm,
    fused_batch_norm,
    fused_map_usable,
    grouped_pointwise_bmm,
    is_channels_last,
    is_shortcut_average,
    pointwise_affine_bmm,
    pointwise_conv,
    shortcut_pool,
    uses_bmm,
)
from .structure import UnitSpec, conv_output_size, stem_output_size, unit_specs

__all__ = ["ShuffleNetV1", "ShuffleUnit", "build_model", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The paper's shuffle: reshape channels to (g, n), transpose to (n, g), flatten."""
    batch, channels, height, width = x.shape
    if is_channels_last(x) and height * width > 1:
        # Same permutation on NHWC storage: one copy, and the result stays channels_last.
        nhwc = x.permute(0, 2, 3, 1).reshape(batch, height, width, groups, channels // groups)
        return nhwc.transpose(3, 4).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    return (
        x.reshape(batch, groups, channels // groups, height, width)
        .transpose(1, 2)
        .reshape(batch, channels, height, width)
    )


def shuffle_order(channels: int, groups: int) -> list[int]:
    """The channel shuffle as an index: channel ``j`` of ``channel_shuffle(x)`` is channel ``order[j]`` of ``x``."""
    per_group = channels // groups
    return [group * per_group + index for index in range(per_group) for group in range(groups)]


def unshuffle_order(channels: int, groups: int) -> list[int]:
    """The inverse of :func:`shuffle_order`: channel ``order[j]`` of ``channel_shuffle(x)`` is channel ``j`` of ``x``.

    A per-channel layer (depthwise conv, BN) with its weights taken in this order acts on the
    unshuffled map exactly as the original does on the shuffled one, so the shuffle can move
    past it to where the map is smaller (after a stride-2 depthwise conv)."""
    order = shuffle_order(channels, groups)
    return sorted(range(channels), key=order.__getitem__)


def shuffle_nhwc(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle`` of an NHWC map given its :func:`shuffle_order` as a tensor: one
    gather along the contiguous channel axis (2x faster here than ATen's NHWC shuffle kernel
    at batch 1); the result is channels_last."""
    batch, channels, height, width = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(-1, channels)
    return rows.index_select(1, order).view(batch, height, width, channels).permute(0, 3, 1, 2)


def _normalize(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``; a BatchNorm2d nobody hooks trains NHWC maps with the fast accurate kernel."""
    if not isinstance(bn, nn.BatchNorm2d) or not bn.training or _hooked(bn):
        return bn(x)
    return batch_norm_channels_last(bn, x)


def _hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook would see any of ``modules`` (its own hooks or global ones)."""
    if _module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks:
        return True
    for module in modules:
        if module._forward_hooks or module._forward_pre_hooks:
            return True
    return False


class ShuffleUnit(nn.Module):
    """Paper Figure 2 (b) for stride 1 and (c) for stride 2."""

    def __init__(self, spec: UnitSpec, *, fast: bool = True) -> None:
        super().__init__()
        self.stride = spec.stride
        self.groups = spec.groups
        self.shuffle = spec.channel_shuffle and spec.groups > 1
        self.fast = fast
        mid = spec.mid_channels
        mode = "auto" if fast else "conv"
        self.pw1 = pointwise_conv(spec.in_channels, mid, spec.first_pointwise_groups, mode=mode)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = depthwise_conv(mid, spec.stride, mode=mode)
        self.bn2 = nn.BatchNorm2d(mid)
        self.pw2 = pointwise_conv(mid, spec.branch_channels, spec.groups, mode=mode)
        self.bn3 = nn.BatchNorm2d(spec.branch_channels)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if spec.stride == 2 else nn.Identity()
        self._folded: tuple[tuple, tuple[torch.Tensor, ...]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self._fold_route(x)
        if path is not None:
            return self._forward_folded(x, path)
        if self._can_fuse(x):
            return self._forward_fused(x)
        if self.shuffle and not self.training and torch.onnx.is_in_onnx_export():
            return self._forward_onnx(x)
        branch = F.relu(self.norm(self.bn1, self.pw1(x)))
        if self.shuffle:
            branch = channel_shuffle(branch, self.groups)
        branch = self.norm(self.bn2, self.dw(branch))
        branch = self.norm(self.bn3, self.pw2(branch))
        if self.stride == 1:
            return F.relu(branch + x)
        return torch.cat((self._shortcut(x), F.relu(branch)), dim=1)

    def _can_fuse(self, x: torch.Tensor) -> bool:
        """Training on NHWC maps with the fused BN kernels: each BN runs with what follows it."""
        if not self.fast or not self.training or _hooked(self.bn1, self.bn2, self.bn3):
            return False
        batch, _, height, width = x.shape
        if batch * ((height - 1) // self.stride + 1) * ((width - 1) // self.stride + 1) < 2:
            return False  # one value per channel: nn.BatchNorm2d's own error says so
        return all(fusable_batch_norm(bn) for bn in (self.bn1, self.bn2, self.bn3)) and fused_map_usable(x)

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with bn1 + ReLU + shuffle, bn2, and bn3 + residual add + ReLU each one
        fused kernel (2 passes over memory forward, 2 backward, instead of 6 and 6)."""
        handed_on = self._residual_gradient_slot(x)
        first = self.pw1(x) if handed_on is None else grouped_pointwise_bmm(x, self.pw1.weight, self.pw1.groups, handed_on)
        branch = fused_batch_norm(self.bn1, first, relu=True, shuffle_groups=self.groups if self.shuffle else 1)
        branch = fused_batch_norm(self.bn2, self.dw(branch))
        if self.stride == 1:
            return fused_batch_norm(self.bn3, self.pw2(branch), relu=True, residual=x, residual_gradient=handed_on)
        return torch.cat((self._shortcut(x), fused_batch_norm(self.bn3, self.pw2(branch), relu=True)), dim=1)

    def _residual_gradient_slot(self, x: torch.Tensor) -> ResidualGradient | None:
        """A stride-1 unit whose pw1 is the NHWC bmm: bn3's backward hands the residual's
        gradient to pw1's, which adds its own into it (:class:`ResidualGradient`)."""
        if self.stride != 1 or not isinstance(self.pw1, PointwiseConv2d) or _hooked(self.pw1):
            return None
        return ResidualGradient() if self.pw1.takes_bmm(x) else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-2 shortcut; the fast build trains it on tiny maps as a depthwise conv."""
        if not self.fast or _hooked(self.shortcut):
            return self.shortcut(x)
        return shortcut_pool(self.shortcut, x)

    def _forward_onnx(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` as the ONNX graph: the shuffle after the depthwise conv, as one Gather.

        Depthwise conv and BN act per channel, so they commute with the shuffle once their
        weights are put in the unshuffled order (folded here, constants in the file). ONNX
        Runtime then moves the map a stride-2 unit shuffles at a quarter of the size, and a
        Gather beats Reshape-Transpose-Reshape (benchmarks/speed.py times it against the official layout).
        """
        branch = F.relu(self.bn1(self.pw1(x)))
        weight, shift = self._folded_depthwise(unshuffled=True)  # constants of the graph
        branch = F.conv2d(branch, weight, shift, stride=self.dw.stride, padding=self.dw.padding,
                          groups=self.bn2.num_features)
        order = torch.tensor(shuffle_order(self.bn2.num_features, self.groups))
        branch = self.bn3(self.pw2(branch.index_select(1, order)))
        if self.stride == 1:
            return F.relu(branch + x)
        return torch.cat((self.shortcut(x), F.relu(branch)), dim=1)

    def _folded_depthwise(self, *, unshuffled: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """dw + bn2 as one conv's weight and bias; with ``unshuffled``, in the channel order that
        lets the shuffle move after them (:func:`unshuffle_order`)."""
        scale, shift = batch_norm_affine(self.bn2)
        weight = self.dw.weight * scale.reshape(-1, 1, 1, 1)
        if not unshuffled:
            return weight, shift
        index = torch.tensor(unshuffle_order(self.bn2.num_features, self.groups))
        return weight.index_select(0, index), shift.index_select(0, index)

    def norm(self, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``bn(x)``; the fast build trains NHWC maps with the accurate NHWC kernel."""
        return _normalize(bn, x) if self.fast else bn(x)

    def _fold_route(self, x: torch.Tensor) -> str | None:
        """Inference on NHWC maps: BNs fold into the convs before them (the inference kernels,
        else oneDNN packed convs for any shape, else the bmm path where it is the fast one).
        The :meth:`_fold_path` to take, or None to run the layers as they are."""
        if not _inference_without_autograd(self) or not is_channels_last(x):
            return None
        return self._foldable_path(x)

    def _foldable_path(self, x: torch.Tensor) -> str | None:
        """:meth:`_fold_path`, or None where the layers are not the fast build's or are hooked."""
        layers = self._modules  # the dict itself: nn.Module's attribute lookup costs a call each
        pw1, dw, pw2 = layers["pw1"], layers["dw"], layers["pw2"]
        if (not isinstance(pw1, PointwiseConv2d) or not isinstance(dw, DepthwiseConv2d)
                or not isinstance(pw2, PointwiseConv2d) or pw2.mode == "conv"):
            return None
        if _hooked(*(layer for layer in layers.values() if layer is not None)):
            return None  # hooks (MAC counters, profilers) must see every layer run
        return self._fold_path(x)

    def _fold_path(self, x: torch.Tensor) -> str | None:
        """Which folded layers run ``x``: "kernels" (:mod:`shufflenet_core.inference`),
        "packed" (oneDNN), "bmm", or None (no folding)."""
        if inference.usable_for(x) and self.dw.kernel_size == (3, 3) and self.stride in (1, 2) and (
                self.stride == 1 or is_shortcut_average(self.shortcut)):
            return "kernels"
        if packed.usable_for(x):
            return "packed"
        batch, _, height, width = x.shape
        pw1 = self.pw1
        assert isinstance(pw1, PointwiseConv2d), "callers checked the layers"
        return "bmm" if uses_bmm(pw1.mode, pw1.groups, batch, height, width) else None

    def train(self, mode: bool = True) -> ShuffleUnit:
        self._folded = None
        return super().train(mode)

    def _folded_layers(self, x: torch.Tensor, path: str) -> tuple:
        """pw1+bn1, dw+bn2 and pw2+bn3 folded for inference on inputs shaped like ``x`` (on
        ``path``, a :meth:`_fold_path`), cached until a parameter or buffer changes (see
        :func:`_fold_key`)."""
        key = _fold_key(self, x, path)
        self._folded = _refreshed(self._folded, key, lambda: self._fold(x.shape, path=key[1]))
        return self._folded[1]

    def _fold(self, shape: torch.Size, *, path: str) -> tuple:
        pw1_scale, pw1_shift = batch_norm_affine(self.bn1)
        pw2_scale, pw2_shift = batch_norm_affine(self.bn3)
        # Packed or in the kernels, the shuffle moves after the depthwise conv, whose weights take
        # the unshuffled order.
        dw_weight, dw_shift = self._folded_depthwise(unshuffled=path != "bmm" and self.shuffle)
        if path == "kernels":
            mid = self.bn1.num_features
            order = shuffle_order(mid, self.groups) if self.shuffle else None  # pw2 reads through it
            return (
                inference.pack_pointwise(self.pw1.weight * pw1_scale.reshape(-1, 1, 1, 1), pw1_shift, self.pw1.groups),
                inference.pack_depthwise(dw_weight, dw_shift),
                inference.pack_pointwise(self.pw2.weight * pw2_scale.reshape(-1, 1, 1, 1), pw2_shift, self.pw2.groups,
                                         order),
                inference.shortcut_pool_taps(shape[1]) if self.stride == 2 else None,
            )
        if path == "bmm":
            return (*fold_pointwise(self.pw1.weight, self.pw1.groups, pw1_scale, pw1_shift), dw_weight, dw_shift,
                    *fold_pointwise(self.pw2.weight, self.pw2.groups, pw2_scale, pw2_shift))
        batch, _, height, width = shape
        mid = self.bn1.num_features
        out_height, out_width = (height - 1) // self.stride + 1, (width - 1) // self.stride + 1
        shuffle = torch.tensor(shuffle_order(mid, self.groups)) if self.shuffle else None
        return (
            packed.pack_conv(self.pw1.weight * pw1_scale.reshape(-1, 1, 1, 1), pw1_shift, stride=1,
                             groups=self.pw1.groups, input_shape=shape),
            packed.pack_conv(dw_weight, dw_shift, stride=self.stride, groups=mid,
                             input_shape=torch.Size((batch, mid, height, width))),
            packed.pack_conv(self.pw2.weight * pw2_scale.reshape(-1, 1, 1, 1), pw2_shift, stride=1,
                             groups=self.pw2.groups, input_shape=torch.Size((batch, mid, out_height, out_width))),
            shuffle,
        )

    def _forward_folded(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """:meth:`forward` in eval mode without autograd, each BN folded into the conv before
        it: fewer passes over memory, fewer calls."""
        layers = self._folded_layers(x, path)
        if isinstance(layers[0], inference.PackedPointwise):
            return self._forward_kernels(x, *layers)
        if isinstance(layers[0], packed.PackedConv):
            return self._forward_packed(x, *layers)
        pw1_weight, pw1_bias, dw_weight, dw_bias, pw2_weight, pw2_bias = layers
        # The shuffle rides in pw1's output copy.
        branch = F.relu_(pointwise_affine_bmm(x, pw1_weight, pw1_bias, self.groups if self.shuffle else 1))
        dw = self.dw
        assert isinstance(dw, DepthwiseConv2d), "_fold_route admits only the fast depthwise layer"
        branch = dw.forward_affine(branch, dw_weight, dw_bias)
        branch = pointwise_affine_bmm(branch, pw2_weight, pw2_bias)
        if self.stride == 1:
            return F.relu_(branch.add_(x))
        return torch.cat((self.shortcut(x), F.relu_(branch)), dim=1)

    def _forward_kernels(self, x: torch.Tensor, pw1: inference.PackedPointwise, dw: inference.PackedDepthwise,
                         pw2: inference.PackedPointwise, pool: inference.PackedDepthwise | None, *,
                         reuse: bool = False, overwrite: bool = False, out_slot: int | None = None) -> torch.Tensor:
        """The folded unit in the inference kernels: pw1 + ReLU, the depthwise conv, pw2 reading
        its input through the shuffle, + residual + ReLU; a stride-2 unit's pool and branch
        write their halves of the output, so there is no concat. Inside the model's own loop
        (:meth:`ShuffleNetV1.forward_features`): ``reuse`` puts pw1's and the depthwise conv's
        outputs in reused buffers; ``overwrite`` lets a stride-1 unit write its output over
        ``x`` (each output value reads only its own residual value first); ``out_slot`` puts a
        stride-2 unit's output in that reused buffer."""
        batch, _, height, width = x.shape
        mid = pw1.bias.shape[0] * pw1.per_group
        if reuse:
            first = inference.pointwise(x, pw1, relu=True, out=inference.scratch_map(0, batch, mid, height, width))
            out_height, out_width = conv_output_size(height, stride=self.stride), conv_output_size(width, stride=self.stride)
            branch = inference.depthwise(first, dw, self.stride,
                                         out=inference.scratch_map(1, batch, mid, out_height, out_width))
        else:
            branch = inference.depthwise(inference.pointwise(x, pw1, relu=True), dw, self.stride)
        if pool is None:
            return inference.pointwise(branch, pw2, relu=True, residual=x, out=x if overwrite else None)
        _, _, out_height, out_width = branch.shape
        channels = x.shape[1] + pw2.per_group * pw2.bias.shape[0]
        if out_slot is None:
            out = torch.empty((batch, channels, out_height, out_width), dtype=x.dtype, memory_format=torch.channels_last)
        else:
            out = inference.scratch_map(out_slot, batch, channels, out_height, out_width)
        inference.depthwise(x, pool, 2, out=out)
        return inference.pointwise(branch, pw2, relu=True, out=out, offset=x.shape[1])

    def _forward_own_map(self, x: torch.Tensor, *, owned: bool, out_slot: int | None) -> tuple[torch.Tensor, bool]:
        """``self(x)`` inside the model's loop, in eval without autograd, and whether the result
        is the model's own (no hook saw it). The kernels reuse buffers, and write over ``x``
        if it is ``owned``; a stride-2 unit writes into buffer ``out_slot`` if given. A unit
        that hooks or other layers keep from the kernels runs as a module on a map of its own."""
        path = None if _hooked(self) else self._foldable_path(x)
        if path != "kernels":
            return self(x.clone() if inference.is_scratch(x) else x), False
        layers = self._folded_layers(x, path)
        return self._forward_kernels(x, *layers, reuse=True, overwrite=owned, out_slot=out_slot), True

    def _forward_packed(self, x: torch.Tensor, pw1: packed.PackedConv, dw: packed.PackedConv,
                        pw2: packed.PackedConv, order: torch.Tensor | None) -> torch.Tensor:
        """The folded unit as three oneDNN calls: ReLU fused into pw1, and for stride 1 the
        residual add and the ReLU fused into pw2. The shuffle comes after the depthwise conv
        (folded with its weights in the unshuffled order): a stride-2 unit then shuffles a
        quarter of the map."""
        branch = packed.run_packed(dw, packed.run_packed(pw1, x, relu=True))
        if order is not None:
            branch = shuffle_nhwc(branch, order)
        if self.stride == 1:
            return packed.run_packed(pw2, branch, relu=True, residual=x)
        return torch.cat((self.shortcut(x), packed.run_packed(pw2, branch, relu=True)), dim=1)


def _as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in NHWC memory format. A one-channel image is NCHW and NHWC at once; it gets the
    strides that say NHWC (no copy), since convolutions follow the strides: otherwise the stem
    conv answers NCHW and its output (the largest map of the network) is copied to NHWC,
    forward and backward (2.4% of a 2.0x g3 proxy training step)."""
    batch, channels, height, width = x.shape
    if channels == 1 and x.is_contiguous():
        return x.as_strided(x.shape, (height * width, 1, width, 1))
    return x.contiguous(memory_format=torch.channels_last)


def _inference_without_autograd(module: nn.Module) -> bool:
    """Eval mode, no autograd, no graph capture: BNs may fold into the convs before them."""
    return not module.training and not torch.is_grad_enabled() and not exporting()


def _refreshed(cache: tuple | None, key: tuple, build) -> tuple:
    """``cache`` if it was built for ``key``, else ``(key, build())`` (built without autograd)."""
    if cache is not None and cache[0] == key:
        return cache
    with torch.no_grad():
        return key, build()


def _fold_key(module: nn.Module, x: torch.Tensor, path: object) -> tuple:
    """What a fold of ``module``'s layers depends on: the input shape (packed layouts are
    chosen per shape), which folded layers run (``path``), and every parameter and buffer
    (in-place updates bump ``_version``; new storage changes the pointer)."""
    state: list[tuple[int, int]] = []
    pending = [module]
    while pending:  # module.modules() without its memo and names: this runs every forward
        current = pending.pop()
        state.extend((t.data_ptr(), t._version) for t in current._parameters.values() if t is not None)
        state.extend((t.data_ptr(), t._version) for t in current._buffers.values() if t is not None)
        pending.extend(child for child in current._modules.values() if child is not None)
    return (tuple(x.shape), path, tuple(state))


class _Stem(nn.Sequential):
    """conv -> bn -> relu -> pool, named (the state_dict keys are ``stem.conv.weight``, ...);
    the annotations tell type checkers what the named children are."""

    conv: nn.Conv2d
    bn: nn.BatchNorm2d
    relu: nn.ReLU
    pool: nn.MaxPool2d


class ShuffleNetV1(nn.Module):
    """Stem (conv 3x3/2, BN, ReLU, max pool 3x3/2), stages of units, global pool, FC."""

    def __init__(self, config: ShuffleNetConfig, *, fast: bool = True) -> None:
        super().__init__()
        self.config = config
        self.channels_last = fast  # small maps: BN, depthwise and bmm are all faster in NHWC
        self.stem = _Stem(
            OrderedDict(
                conv=nn.Conv2d(config.in_channels, config.stem_channels, 3, stride=2, padding=1, bias=False),
                bn=nn.BatchNorm2d(config.stem_channels),
                relu=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            )
        )
        stages: list[list[nn.Module]] = [[] for _ in config.stage_depths]
        for spec in unit_specs(config):
            stages[spec.stage].append(ShuffleUnit(spec, fast=fast))
        self.stages = nn.Sequential(*(nn.Sequential(*units) for units in stages))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(config.stage_out_channels[-1], config.num_classes, bias=False)
        self._stem_folded: tuple[tuple, tuple] | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last or x.dim() != 4 or exporting():
            return self.stages(self.stem(x))
        # NHWC from the stem conv on: the BNs, depthwise convs and bmm 1x1 convs of small maps
        # are all faster in NHWC, and the folded units need it.
        if self.training and self._can_fuse_stem(x):
            return self.stages(fused_stem(self.stem.conv, self.stem.bn, x))
        if self._stem_kernel_usable(x):  # any memory format: the kernel reads the image as it is
            weight, bias = self._folded_stem(x, "kernels")
            if _hooked(self.stages, *self.stages):  # a stage's hook would keep its maps
                return self.stages(inference.stem(x, weight, bias, self.stem.conv.out_channels))
            return self._run_stages_own_maps(x, weight, bias)
        x = _as_channels_last(x)
        if self._can_fold_stem(x) and packed.usable_for(x):
            (conv,) = self._folded_stem(x, "packed")
            x = packed.run_packed(conv, x, relu=True)
            return self.stages(self.stem.pool(x.contiguous(memory_format=torch.channels_last)))
        x = _normalize(self.stem.bn, self.stem.conv(x).contiguous(memory_format=torch.channels_last))
        if _hooked(self.stem.relu, self.stem.pool):
            return self.stages(self.stem.pool(self.stem.relu(x)))
        # Max pool and ReLU commute (both monotone), outputs and gradients alike: ReLU on the
        # pooled map touches a quarter of the values, forward and backward.
        return self.stages(self.stem.relu(self.stem.pool(x)))

    def _run_stages_own_maps(self, image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Stem and stages in the inference kernels, every map the model's own: the units reuse
        buffers and write in place, and the stem's and stride-2 units' outputs alternate
        between two reused buffers (a unit reads one, writes the other); the last stage's maps
        are fresh, since they are returned."""
        channels = self.stem.conv.out_channels
        slot = 2
        x = inference.stem(image, weight, bias, channels,
                           out=inference.scratch_map(slot, image.shape[0], channels, stem_output_size(image.shape[2])[1],
                                                     stem_output_size(image.shape[3])[1]))
        last = len(self.stages) - 1
        owned = True
        for index, stage in enumerate(self.stages):
            assert isinstance(stage, nn.Sequential)
            for unit in stage:
                if not isinstance(unit, ShuffleUnit):
                    x, owned = unit(x.clone() if inference.is_scratch(x) else x), False
                    continue
                if unit.stride == 2:
                    slot = 5 - slot  # 2 <-> 3
                x, owned = unit._forward_own_map(x, owned=owned, out_slot=slot if index < last else None)
        return x.clone() if inference.is_scratch(x) else x  # what is returned is never a reused buffer

    def _can_fuse_stem(self, x: torch.Tensor) -> bool:
        """Training with the fused kernels: the whole stem is one kernel each way."""
        stem = self.stem
        return (not _hooked(stem.conv, stem.bn, stem.relu, stem.pool)
                and fused_stem_usable(stem.conv, stem.bn, stem.relu, stem.pool, x))

    def _can_fold_stem(self, x: torch.Tensor) -> bool:
        """Inference: the stem's BN folds into its conv, ReLU fused (oneDNN packed conv)."""
        stem = self.stem
        return (_inference_without_autograd(self) and isinstance(stem.bn, nn.BatchNorm2d)
                and isinstance(stem.relu, nn.ReLU) and not _hooked(stem.conv, stem.bn, stem.relu))

    def _stem_kernel_usable(self, x: torch.Tensor) -> bool:
        """Inference in one kernel: conv + folded BN + ReLU + max pool (the stem as built)."""
        stem = self.stem
        return (self._can_fold_stem(x) and not _hooked(stem.pool) and is_stem_conv(stem.conv)
                and is_stem_pool(stem.pool) and x.shape[1] == stem.conv.in_channels and inference.usable_for(x))

    def _folded_stem(self, x: torch.Tensor, path: str) -> tuple:
        """The stem conv with its BN folded, packed for ``path`` ("kernels" or "packed")."""
        def fold() -> tuple:
            scale, shift = batch_norm_affine(self.stem.bn)
            conv = self.stem.conv
            weight = conv.weight * scale.reshape(-1, 1, 1, 1)
            if path == "kernels":
                return inference.pack_stem(weight, shift)
            return (packed.pack_conv(weight, shift, stride=conv.stride[0], groups=conv.groups, input_shape=x.shape),)

        self._stem_folded = _refreshed(self._stem_folded, _fold_key(self.stem, x, path), fold)
        return self._stem_folded[1]

    def train(self, mode: bool = True) -> ShuffleNetV1:
        self._stem_folded = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.forward_features(x)), 1))


def build_model(config: ShuffleNetConfig, *, fast: bool = True) -> ShuffleNetV1:
    """The network described by ``config``, with PyTorch's default initialisation.

    ``fast=True`` uses the shape-dispatched layers of :mod:`shufflenet_core.ops` (bmm 1x1
    convs, small-map depthwise); ``fast=False`` the plain ``nn.Conv2d(groups)`` reference.
    Both have the same parameters and state_dict, so weights move freely between them.
    """
    if not isinstance(config, ShuffleNetConfig):
        raise TypeError(f"build_model needs a ShuffleNetConfig, got {type(config).__name__}")
    return ShuffleNetV1(config, fast=fast)

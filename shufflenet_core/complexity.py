"""Exact complexity of a config, counted from the config alone (no model is built).

Convention (the paper's and its official code's): MACs are the multiply-accumulates of the
conv and fully connected layers at ``config.input_size``; BN, ReLU, pooling, add, concat and
shuffle count zero. Parameters are every learnable tensor: conv and FC weights (no biases)
and the BN affine scale and shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .config import ShuffleNetConfig
from .structure import UnitSpec, stem_output_size, unit_specs

__all__ = ["Complexity", "LayerCost", "complexity", "layer_costs", "unit_complexity", "unit_layers"]


@dataclass(frozen=True)
class LayerCost:
    """One layer of the built model, named as in ``model.named_modules()``."""

    name: str
    kind: str  # "conv", "linear" or "bn"
    macs: int
    params: int


@dataclass(frozen=True)
class Complexity:
    """Totals for a config; ``layers`` gives the per-layer breakdown on demand."""

    macs: int
    params: int
    config: ShuffleNetConfig = field(repr=False)

    @property
    def layers(self) -> tuple[LayerCost, ...]:
        return layer_costs(self.config)

    @property
    def mflops(self) -> float:
        """Millions of MACs: what the paper calls MFLOPs."""
        return self.macs / 1e6

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def classifier_macs(self) -> int:
        return self.config.stage_out_channels[-1] * self.config.num_classes

    @property
    def conv_macs(self) -> int:
        """MACs without the FC layer: the convention of the paper's Table 1."""
        return self.macs - self.classifier_macs


def _conv(name: str, c_in: int, c_out: int, kernel: int, groups: int, out_size: int) -> LayerCost:
    weights = c_out * (c_in // groups) * kernel * kernel
    return LayerCost(name, "conv", weights * out_size * out_size, weights)


def _bn(name: str, channels: int) -> LayerCost:
    return LayerCost(name, "bn", 0, 2 * channels)


def unit_layers(spec: UnitSpec) -> tuple[LayerCost, ...]:
    """The conv and BN layers of one unit, named as in the built model."""
    prefix = spec.module_name
    mid, size_in, size_out = spec.mid_channels, spec.input_size, spec.output_size
    return (
        _conv(f"{prefix}.pw1", spec.in_channels, mid, 1, spec.first_pointwise_groups, size_in),
        _bn(f"{prefix}.bn1", mid),
        _conv(f"{prefix}.dw", mid, mid, 3, mid, size_out),
        _bn(f"{prefix}.bn2", mid),
        _conv(f"{prefix}.pw2", mid, spec.branch_channels, 1, spec.groups, size_out),
        _bn(f"{prefix}.bn3", spec.branch_channels),
    )


def unit_complexity(spec: UnitSpec) -> tuple[int, int]:
    """(MACs, params) of one unit: the same layers as :func:`unit_layers`, summed directly."""
    mid, branch = spec.mid_channels, spec.branch_channels
    area_in, area_out = spec.input_size**2, spec.output_size**2
    pw1 = spec.in_channels // spec.first_pointwise_groups * mid
    pw2 = mid // spec.groups * branch
    dw = 9 * mid
    macs = pw1 * area_in + (dw + pw2) * area_out
    params = pw1 + dw + pw2 + 4 * mid + 2 * branch
    return macs, params


def _stem_and_head(config: ShuffleNetConfig) -> tuple[LayerCost, LayerCost, LayerCost]:
    stem_size, _ = stem_output_size(config.input_size)
    features = config.stage_out_channels[-1]
    return (
        _conv("stem.conv", config.in_channels, config.stem_channels, 3, 1, stem_size),
        _bn("stem.bn", config.stem_channels),
        LayerCost("classifier", "linear", features * config.num_classes, features * config.num_classes),
    )


@lru_cache(maxsize=4096)
def layer_costs(config: ShuffleNetConfig) -> tuple[LayerCost, ...]:
    """Every conv, BN and linear layer of ``config`` in model order, named as in the model."""
    stem_conv, stem_bn, classifier = _stem_and_head(config)
    layers = [stem_conv, stem_bn]
    for spec in unit_specs(config):
        layers.extend(unit_layers(spec))
    layers.append(classifier)
    return tuple(layers)


@lru_cache(maxsize=65536)
def complexity(config: ShuffleNetConfig) -> Complexity:
    """MACs and parameters of ``config`` at its deployment resolution (no model is built)."""
    macs = params = 0
    for layer in _stem_and_head(config):
        macs += layer.macs
        params += layer.params
    for spec in unit_specs(config):
        unit_macs, unit_params = unit_complexity(spec)
        macs += unit_macs
        params += unit_params
    return Complexity(macs=macs, params=params, config=config)

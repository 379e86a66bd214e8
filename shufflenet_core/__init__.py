"""ShuffleNet v1: one typed config, the model it builds, and its exact complexity."""

from __future__ import annotations

from .complexity import Complexity, LayerCost, complexity
from .config import CONFIG_SCHEMA_VERSION, PAPER_STAGE2_CHANNELS, ShuffleNetConfig, quantize_channels
from .io import load, save
from .presets import PRESETS, Preset, get_preset, preset_names
from .structure import UnitSpec, unit_specs

__all__ = [
    "CONFIG_SCHEMA_VERSION",
    "PAPER_STAGE2_CHANNELS",
    "PRESETS",
    "Complexity",
    "LayerCost",
    "Preset",
    "ShuffleNetConfig",
    "UnitSpec",
    "build_model",
    "complexity",
    "get_preset",
    "load",
    "preset_names",
    "quantize_channels",
    "save",
    "unit_specs",
]

__version__ = "0.1.0"


def build_model(config: ShuffleNetConfig, *, fast: bool = True):  # noqa: ANN201 - torch is imported lazily
    """Build the PyTorch model for ``config`` (imports torch on first use).

    ``fast=False`` builds the plain ``nn.Conv2d(groups)`` reference; the default picks the
    fastest conv implementation by shape, with the same weights (see ``shufflenet_core.ops``).
    """
    from .model import build_model as _build

    return _build(config, fast=fast)

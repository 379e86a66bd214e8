"""Random sweeps through the same define-by-run ``suggest`` the searches use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shufflenet_core import ShuffleNetConfig

from .space import DesignSpace, suggest

__all__ = ["RandomSuggester", "sample_configs", "knobs_of"]


class RandomSuggester:
    """A seeded stand-in for an Optuna trial: uniform over each knob, records what it drew."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = choices[int(self.rng.integers(len(choices)))]
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int:
        value = int(low + step * self.rng.integers((high - low) // step + 1))
        self.params[name] = value
        return value


def sample_configs(
    space: DesignSpace, budget_macs: int | None, count: int, *, seed: int = 0
) -> list[tuple[ShuffleNetConfig, dict[str, Any]]]:
    """``count`` seeded random samples as (config, knobs); each draw is bounded work."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        suggester = RandomSuggester(rng)
        samples.append((suggest(suggester, space, budget_macs), suggester.params))
    return samples


def knobs_of(config: ShuffleNetConfig) -> dict[str, Any]:
    """The knob values (as ``suggest`` names them) that describe ``config``."""
    knobs: dict[str, Any] = {
        "groups": config.groups,
        "bottleneck_ratio": config.bottleneck_ratio,
        "stem_channels": config.stem_channels,
    }
    for index, depth in enumerate(config.stage_depths):
        knobs[f"depth_stage{index + 2}"] = depth
    return knobs

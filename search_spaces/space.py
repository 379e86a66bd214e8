"""A declarative ShuffleNet v1 design space and budget-aware, define-by-run sampling.

The space names the knobs a search may turn (groups, bottleneck ratio, per-stage depths,
stem width, shuffle on/off) and the allowed width range. Width is not sampled: given the
other knobs and a MAC budget, :func:`solve_width` finds the largest quantized width that
fits, so every sample uses most of the budget instead of being rejected (pycls samples
within [0.99, 1.01] of a target by rejection; here it is solved with a bounded search).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shufflenet_core import PAPER_STAGE2_CHANNELS, ShuffleNetConfig, complexity

__all__ = ["DesignSpace", "Suggester", "solve_width", "suggest", "width_grid"]


class Suggester(Protocol):
    """What ``suggest`` needs from a trial: Optuna's ``Trial`` and :class:`RandomSuggester` fit."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int: ...


@dataclass(frozen=True)
class DesignSpace:
    """Which ShuffleNet v1 networks a search may propose."""

    groups: tuple[int, ...] = (1, 2, 3, 4, 8)
    """Group counts of the pointwise convolutions (paper: 1, 2, 3, 4, 8)."""
    width: tuple[float, float] = (0.25, 4.0)
    """Allowed width multipliers (relative to the paper's 1x channels for each g)."""
    bottleneck_ratios: tuple[float, ...] = (0.125, 0.25, 0.5)
    """Bottleneck width as a fraction of the unit's output (paper: 0.25)."""
    stage_depths: tuple[tuple[int, int], ...] = ((2, 6), (4, 12), (2, 6))
    """Inclusive (min, max) units per stage; the number of pairs is the number of stages."""
    stem_channels: tuple[int, ...] = (12, 24, 48)
    """Stem widths (each rounded to a multiple of g)."""
    channel_shuffle: tuple[bool, ...] = (True,)
    """(True,) searches ShuffleNets; (True, False) also tries the no-shuffle ablation."""
    channel_multiple: int = 1
    """Channels are multiples of lcm(g, channel_multiple) (8 suits many accelerators)."""
    input_size: int = 224
    """Deployment resolution at which budgets are judged."""
    num_classes: int = 1000
    """Classifier outputs counted in the budget (the paper counts a 1000-way FC)."""
    name: str = "shufflenet-v1"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "width", tuple(float(w) for w in self.width))
        object.__setattr__(self, "bottleneck_ratios", tuple(float(r) for r in self.bottleneck_ratios))
        object.__setattr__(self, "stage_depths", tuple(tuple(int(v) for v in pair) for pair in self.stage_depths))
        object.__setattr__(self, "stem_channels", tuple(int(s) for s in self.stem_channels))
        object.__setattr__(self, "channel_shuffle", tuple(bool(s) for s in self.channel_shuffle))
        self._validate()

    def _validate(self) -> None:
        if not self.groups or any(g not in PAPER_STAGE2_CHANNELS for g in self.groups):
            raise ValueError(f"groups must be a non-empty subset of {sorted(PAPER_STAGE2_CHANNELS)}, got {list(self.groups)}")
        if len(self.width) != 2 or not 0 < self.width[0] <= self.width[1]:
            raise ValueError(f"width must be [min, max] with 0 < min <= max, got {list(self.width)}")
        if not self.bottleneck_ratios or any(not 0 < r <= 4 for r in self.bottleneck_ratios):
            raise ValueError(f"bottleneck_ratios must be non-empty values in (0, 4], got {list(self.bottleneck_ratios)}")
        if not self.stage_depths:
            raise ValueError("stage_depths needs one [min, max] pair per stage")
        for index, pair in enumerate(self.stage_depths):
            if len(pair) != 2 or not 1 <= pair[0] <= pair[1]:
                raise ValueError(f"stage_depths[{index}] must be [min, max] with 1 <= min <= max, got {list(pair)}")
        if not self.stem_channels or any(s < 1 for s in self.stem_channels):
            raise ValueError(f"stem_channels must be positive, got {list(self.stem_channels)}")
        if not self.channel_shuffle:
            raise ValueError("channel_shuffle must list true and/or false")
        if self.channel_multiple < 1 or self.input_size < 32 or self.num_classes < 1:
            raise ValueError("channel_multiple >= 1, input_size >= 32 and num_classes >= 1 are required")

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extra")
        data["width"] = list(self.width)
        data["stage_depths"] = [list(pair) for pair in self.stage_depths]
        for key in ("groups", "bottleneck_ratios", "stem_channels", "channel_shuffle"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DesignSpace:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown design-space key(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            return cls(**dict(data))
        except TypeError as error:
            raise ValueError(f"bad design-space value: {error}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def describe(self) -> str:
        depths = ", ".join(f"{lo}-{hi}" for lo, hi in self.stage_depths)
        return (
            f"groups {list(self.groups)}; width {self.width[0]:g}-{self.width[1]:g}x (solved to fill the budget); "
            f"bottleneck ratio {list(self.bottleneck_ratios)}; stage depths {depths}; stem {list(self.stem_channels)}; "
            f"shuffle {list(self.channel_shuffle)}; MACs at {self.input_size}x{self.input_size}"
        )

    # -- size of the space ------------------------------------------------------------------
    def smallest_config(self) -> ShuffleNetConfig:
        """The config with the fewest MACs the space can produce (to check budgets against)."""
        candidates = [
            _config_for(self, g, k, min(self.bottleneck_ratios), tuple(lo for lo, _ in self.stage_depths), stem, True)
            for g in self.groups
            for stem in self.stem_channels
            for k in [width_grid(self, g)[0]]
        ]
        return min(candidates, key=lambda c: complexity(c).macs)


def _quantum(space: DesignSpace, groups: int) -> int:
    return math.lcm(groups, space.channel_multiple)


def width_grid(space: DesignSpace, groups: int) -> tuple[int, int]:
    """Allowed stage-2 widths as multiples k of the channel quantum: (k_min, k_max)."""
    quantum = _quantum(space, groups)
    base = PAPER_STAGE2_CHANNELS[groups]
    k_min = max(1, math.ceil(space.width[0] * base / quantum - 1e-9))
    k_max = max(k_min, math.floor(space.width[1] * base / quantum + 1e-9))
    return k_min, k_max


def _config_for(
    space: DesignSpace, groups: int, k: int, ratio: float, depths: tuple[int, ...], stem: int, shuffle: bool
) -> ShuffleNetConfig:
    quantum = _quantum(space, groups)
    stage2 = k * quantum
    stem_q = max(quantum, int(math.floor(stem / quantum + 0.5)) * quantum)
    while stem_q >= stage2 and stem_q > quantum:  # the first unit's branch must be positive
        stem_q -= quantum
    return ShuffleNetConfig(
        groups=groups,
        stage_out_channels=tuple(stage2 * 2**i for i in range(len(depths))),
        stage_depths=depths,
        stem_channels=stem_q,
        bottleneck_ratio=ratio,
        num_classes=space.num_classes,
        input_size=space.input_size,
        channel_shuffle=shuffle,
    )


def solve_width(
    space: DesignSpace,
    budget_macs: int | None,
    *,
    groups: int,
    bottleneck_ratio: float,
    stage_depths: tuple[int, ...],
    stem_channels: int,
    channel_shuffle: bool = True,
) -> ShuffleNetConfig:
    """The widest config with these knobs whose MACs fit ``budget_macs``.

    Stage widths double stage to stage from ``k x quantum`` channels; MACs grow with k, so a
    binary search over k (at most ~log2(k_max) complexity counts of ~30 us) finds the largest
    fitting k. Without a budget, the paper's 1x width (clipped to the space) is used. If even
    the narrowest width exceeds the budget, the narrowest config is returned: its constraint
    then marks it infeasible.
    """
    k_min, k_max = width_grid(space, groups)

    def make(k: int) -> ShuffleNetConfig:
        return _config_for(space, groups, k, bottleneck_ratio, stage_depths, stem_channels, channel_shuffle)

    if budget_macs is None:
        one_x = round(PAPER_STAGE2_CHANNELS[groups] / _quantum(space, groups))
        return make(min(max(one_x, k_min), k_max))
    low, high = k_min, k_max
    if complexity(make(low)).macs > budget_macs:
        return make(low)
    while low < high:  # invariant: make(low) fits
        middle = (low + high + 1) // 2
        if complexity(make(middle)).macs <= budget_macs:
            low = middle
        else:
            high = middle - 1
    return make(low)


def suggest(trial: Suggester, space: DesignSpace, budget_macs: int | None) -> ShuffleNetConfig:
    """Define-by-run sampling shared by Optuna, Ray Tune and random sweeps.

    Knobs are drawn from ``trial`` (so samplers learn them); width is solved for the budget.
    """
    groups = trial.suggest_categorical("groups", list(space.groups))
    ratio = trial.suggest_categorical("bottleneck_ratio", list(space.bottleneck_ratios))
    depths = tuple(
        trial.suggest_int(f"depth_stage{index + 2}", lo, hi) for index, (lo, hi) in enumerate(space.stage_depths)
    )
    stem = trial.suggest_categorical("stem_channels", list(space.stem_channels))
    shuffle = (
        trial.suggest_categorical("channel_shuffle", list(space.channel_shuffle))
        if len(space.channel_shuffle) > 1
        else space.channel_shuffle[0]
    )
    return solve_width(
        space, budget_macs, groups=groups, bottleneck_ratio=ratio, stage_depths=depths,
        stem_channels=stem, channel_shuffle=shuffle,
    )

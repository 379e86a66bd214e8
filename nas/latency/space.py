"""Which configs a lookup table must cover, and random configs to validate it on.

Until a design space file is given (``--space FILE`` through ``search_spaces.load_space``),
the default space is the paper's family: groups {1, 2, 3, 4, 8} x widths, free stage depths.
Everything here takes or returns plain iterables of configs, so any space plugs in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError
from shufflenet_core.config import ShuffleNetConfig

__all__ = ["ConfigSpace", "default_space", "load_config_space"]

DEFAULT_GROUPS = (1, 2, 3, 4, 8)
DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DEFAULT_DEPTH_RANGES = ((1, 6), (2, 10), (1, 6))


@dataclass(frozen=True)
class ConfigSpace:
    """``covering()`` yields configs that together contain every unit shape of the space
    (depth does not create shapes beyond the first two units of a stage); ``sample(rng)``
    draws one random member."""

    name: str
    covering: Callable[[], Iterable[ShuffleNetConfig]]
    sample: Callable[[random.Random], ShuffleNetConfig]

    def samples(self, count: int, seed: int = 0) -> Iterator[ShuffleNetConfig]:
        rng = random.Random(seed)
        for _ in range(count):
            yield self.sample(rng)


def default_space(
    groups: Iterable[int] = DEFAULT_GROUPS,
    widths: Iterable[float] = DEFAULT_WIDTHS,
    depth_ranges: tuple[tuple[int, int], ...] = DEFAULT_DEPTH_RANGES,
    input_size: int = 224,
) -> ConfigSpace:
    group_list, width_list = tuple(groups), tuple(widths)

    def covering() -> Iterator[ShuffleNetConfig]:
        depths = tuple(max(2, high) for _, high in depth_ranges)
        for group in group_list:
            for width in width_list:
                yield ShuffleNetConfig.from_width(group, width, stage_depths=depths, input_size=input_size)

    def sample(rng: random.Random) -> ShuffleNetConfig:
        depths = tuple(rng.randint(low, high) for low, high in depth_ranges)
        return ShuffleNetConfig.from_width(rng.choice(group_list), rng.choice(width_list), stage_depths=depths,
                                           input_size=input_size)

    name = f"default(groups={list(group_list)}, widths={list(width_list)})"
    return ConfigSpace(name, covering, sample)


def load_config_space(path: str | Path | None, budget_macs: int | None = None) -> ConfigSpace:
    """The default space, or a design space file (``search_spaces.load_space``) as the search
    samples it: for each knob combination, the width ``solve_width`` picks for the budget."""
    if path is None:
        if budget_macs is not None:
            raise UserError("--budget applies to a --space file (the default space has fixed widths)")
        return default_space()
    try:
        from search_spaces import SpaceFileError, load_space
    except ImportError:
        raise UserError("--space needs the search_spaces package (not installed in this checkout)") from None
    try:
        space = load_space(path)
    except SpaceFileError as error:
        raise UserError(str(error)) from None
    return design_space(space, budget_macs, name=str(path))


def design_space(space: Any, budget_macs: int | None, *, name: str = "") -> ConfigSpace:
    """Adapt the lead's ``DesignSpace``: covering = every knob combination, solved for the budget."""
    import itertools

    import numpy as np

    from search_spaces import RandomSuggester, solve_width, suggest

    def covering() -> Iterator[ShuffleNetConfig]:
        depth_choices = itertools.product(*(range(low, high + 1) for low, high in space.stage_depths))
        for depths in depth_choices:
            for groups, ratio, stem, shuffle in itertools.product(space.groups, space.bottleneck_ratios,
                                                                  space.stem_channels, space.channel_shuffle):
                yield solve_width(space, budget_macs, groups=groups, bottleneck_ratio=ratio, stage_depths=depths,
                                  stem_channels=stem, channel_shuffle=shuffle)

    def sample(rng: random.Random) -> ShuffleNetConfig:
        return suggest(RandomSuggester(np.random.default_rng(rng.getrandbits(63))), space, budget_macs)

    budget = f", budget {budget_macs / 1e6:g}M MACs" if budget_macs else ""
    return ConfigSpace(f"{name or space.name}{budget}", covering, sample)

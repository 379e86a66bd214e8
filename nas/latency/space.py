"""Which configs a lookup table must cover, and random configs to validate it on.

Until a design space file is given (``--space FILE`` through ``search_spaces.load_space``),
the default space is the paper's family: groups {1, 2, 3, 4, 8} x widths, free stage depths.
Everything here takes or returns plain iterables of configs, so any space plugs in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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


def load_config_space(path: str | Path | None) -> ConfigSpace:
    """The default space, or the lead's design space file through ``search_spaces.load_space``."""
    if path is None:
        return default_space()
    try:
        from search_spaces import load_space  # type: ignore[attr-defined]
    except ImportError:
        raise UserError("--space needs the search_spaces package (not installed in this checkout)") from None
    if not Path(path).exists():
        raise UserError(f"space file {path} does not exist")
    space = load_space(path)
    return _adapt(space, str(path))


def _adapt(space: Any, name: str) -> ConfigSpace:
    """Accept a space object with ``covering_configs()``/``enumerate()`` and ``sample(rng)``."""
    covering = None
    for attribute in ("covering_configs", "enumerate_configs", "enumerate", "configs", "grid"):
        if callable(getattr(space, attribute, None)):
            covering = getattr(space, attribute)
            break
    sampler = getattr(space, "sample", None) or getattr(space, "sample_config", None)
    if sampler is None:
        raise UserError(f"space {name} cannot be sampled (no sample(rng) method)")
    if covering is None:
        def covering() -> Iterator[ShuffleNetConfig]:  # sample densely: a LUT then covers most shapes
            rng = random.Random(12345)
            for _ in range(400):
                yield sampler(rng)
    return ConfigSpace(name, covering, sampler)

"""Samplers as a small registry: each entry makes an Optuna sampler tuned for short searches
(tens of trials, not thousands) and says whether it models (and so wants a designed start)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "SamplerEntry", "make_sampler", "startup_count"]

DEFAULT_SAMPLER = "tpe"


def startup_count(n_trials: int) -> int:
    """Trials a model-based sampler takes before it models: a third of a short search, 4 to 10."""
    return max(4, min(10, n_trials // 3))


@dataclass(frozen=True)
class SamplerEntry:
    make: Callable[[int | None, int], optuna.samplers.BaseSampler]
    """(seed, n_trials) -> sampler."""
    model_based: bool
    """Models the results (its random start-up is replaced by the space-filling design)."""
    description: str


def _tpe(seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_count(n_trials), multivariate=True, constant_liar=True)


def _nsga2(seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, n_trials // 3)))


def _random(seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, SamplerEntry] = {
    "tpe": SamplerEntry(_tpe, True, "multivariate TPE, constant liar for parallel workers"),
    "nsga2": SamplerEntry(_nsga2, True, "NSGA-II, population a third of the search (4-20)"),
    "random": SamplerEntry(_random, False, "uniform random: the baseline"),
}


def make_sampler(name: str, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name`` (KeyError for an unknown name: callers validate first)."""
    return SAMPLERS[name].make(seed, n_trials)

"""How far a cheap proxy can be trusted: rank correlation with longer training, and seed noise.

`nas proxy-check` and benchmarks/proxy_fidelity.py run :func:`check_proxy`; the statistics
are pure functions tested on hand-computed cases.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from search_spaces import DesignSpace, sample_configs
from shufflenet_core import ShuffleNetConfig, complexity

__all__ = ["FidelityReport", "check_proxy", "diverse_configs", "pooled_seed_sd", "ranks", "spearman", "kendall_tau"]


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and values[order[end + 1]] == values[order[position]]:
            end += 1
        average = (position + end) / 2 + 1
        for index in order[position : end + 1]:
            result[index] = average
        position = end + 1
    return result


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two sequences of equal length >= 2")
    ra, rb = np.asarray(ranks(a)), np.asarray(ranks(b))
    da, db = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((da**2).sum() * (db**2).sum()))
    return float((da * db).sum() / denominator) if denominator else 0.0


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a: (concordant - discordant) pairs over all pairs."""
    n = len(a)
    if n != len(b) or n < 2:
        raise ValueError("kendall_tau needs two sequences of equal length >= 2")
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            score += int(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]))
    return score / (n * (n - 1) / 2)


def pooled_seed_sd(per_config: Sequence[Sequence[float]]) -> float | None:
    """Pooled within-config standard deviation across seeds (None without repeats)."""
    squares, dof = 0.0, 0
    for values in per_config:
        if len(values) > 1:
            mean = statistics.fmean(values)
            squares += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
    return math.sqrt(squares / dof) if dof else None


def diverse_configs(count: int, *, seed: int = 0, space: DesignSpace | None = None) -> list[ShuffleNetConfig]:
    """``count`` configs spread over groups and over budgets from ~10 to ~150 MFLOPs."""
    space = space or DesignSpace()
    budgets = np.geomspace(10e6, 150e6, count)
    configs = []
    for index, budget in enumerate(budgets):
        group = space.groups[index % len(space.groups)]
        narrowed = DesignSpace.from_dict({**space.to_dict(), "groups": [group]})
        config, _ = sample_configs(narrowed, int(budget), 1, seed=seed + index)[0]
        configs.append(config)
    return configs


@dataclass
class ConfigResult:
    config: dict
    mflops: float
    proxy_per_seed: list[float]
    reference: float
    proxy_seconds: float
    reference_seconds: float


@dataclass
class FidelityReport:
    proxy: str
    reference: str
    spearman: float
    kendall_tau: float
    seed_sd: float | None
    results: list[ConfigResult] = field(default_factory=list)
    ties_within_noise: int = 0
    """Pairs of configs whose proxy means differ by less than the seed noise."""

    def to_dict(self) -> dict:
        return asdict(self)


def check_proxy(
    configs: Sequence[ShuffleNetConfig],
    proxy_score: Callable[[ShuffleNetConfig, int], float],
    reference_score: Callable[[ShuffleNetConfig], float],
    *,
    seeds: Sequence[int] = (0, 1),
    proxy_name: str = "proxy",
    reference_name: str = "reference",
    on_progress: Callable[[str], None] | None = None,
) -> FidelityReport:
    """Score every config with the proxy (per seed) and the reference; compare the rankings."""
    results = []
    for index, config in enumerate(configs):
        started = time.perf_counter()
        per_seed = [proxy_score(config, seed) for seed in seeds]
        middle = time.perf_counter()
        reference = reference_score(config)
        ended = time.perf_counter()
        results.append(
            ConfigResult(config.to_dict(), complexity(config).mflops, per_seed, reference, middle - started, ended - middle)
        )
        if on_progress is not None:
            on_progress(
                f"[{index + 1}/{len(configs)}] {config.short_name}: proxy {statistics.fmean(per_seed):.4f} "
                f"reference {reference:.4f}"
            )
    proxy_means = [statistics.fmean(r.proxy_per_seed) for r in results]
    references = [r.reference for r in results]
    noise = pooled_seed_sd([r.proxy_per_seed for r in results])
    ties = 0
    if noise is not None:
        ties = sum(
            1 for i in range(len(proxy_means)) for j in range(i + 1, len(proxy_means))
            if abs(proxy_means[i] - proxy_means[j]) < noise
        )
    return FidelityReport(
        proxy=proxy_name,
        reference=reference_name,
        spearman=spearman(proxy_means, references),
        kendall_tau=kendall_tau(proxy_means, references),
        seed_sd=noise,
        results=results,
        ties_within_noise=ties,
    )

"""Rank statistics and the fidelity check on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from nas.evaluation.proxy_trust import check_proxy, diverse_configs, kendall_tau, pooled_seed_sd, ranks, spearman
from shufflenet_core import complexity


def test_ranks_average_ties() -> None:
    assert ranks([10, 30, 20, 20]) == [1.0, 4.0, 2.5, 2.5]


def test_spearman_and_kendall_hand_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = (0, 0, 1, -1): 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def test_pooled_seed_sd() -> None:
    # (1, 3): var 2; (2, 2, 5): squares 6 over dof 2 -> pooled (2 + 6) / 3
    assert pooled_seed_sd([[1, 3], [2, 2, 5], [7]]) == pytest.approx(math.sqrt(8 / 3))
    assert pooled_seed_sd([[1], [2]]) is None


def test_diverse_configs_span_groups_and_budgets() -> None:
    configs = diverse_configs(10, seed=0)
    assert {c.groups for c in configs} == {1, 2, 3, 4, 8}
    mflops = sorted(complexity(c).mflops for c in configs)
    assert mflops[0] < 25 and mflops[-1] > 100


def test_check_proxy_reports_correlation_noise_and_ties() -> None:
    configs = diverse_configs(4, seed=1)
    size = {c: complexity(c).mflops for c in configs}
    report = check_proxy(
        configs,
        proxy_score=lambda c, seed: size[c] + (0.5 if seed else 0.0),
        reference_score=lambda c: -size[c],
        seeds=(0, 1),
    )
    assert report.spearman == pytest.approx(-1.0)
    assert report.seed_sd == pytest.approx(math.sqrt(0.125))
    assert len(report.results) == 4

"""Summaries: the front over accuracy or a zero-cost score, seed noise, ties with the best."""

from __future__ import annotations

import pytest

from nas.records import StudyInfo, TrialRecord
from nas.reporting.summary import best_record, seed_noise, ties_with_best


def record(number: int, accuracy: float | None, mflops: float, *, seeds=(), score=None, feasible=True) -> TrialRecord:
    attrs = {"accuracy_per_seed": list(seeds)}
    if score is not None:
        attrs["score"] = score
    return TrialRecord("s", number, "COMPLETE", None, int(mflops * 1e6), 1, accuracy, None, None, feasible, (), None, attrs)


INFO = StudyInfo("s", 140_000_000, "140M", ("accuracy", "mflops"), None, {"accuracy_noise_sd": 0.01})


def test_ties_within_the_noise_of_the_best_front_point() -> None:
    records = [record(0, 0.80, 100), record(1, 0.845, 130), record(2, 0.85, 139), record(3, 0.70, 120), record(4, 0.9, 150, feasible=False)]
    assert [r.number for r in ties_with_best(records, INFO, 0.01)] == [1, 2]
    assert [r.number for r in ties_with_best(records, INFO, 0.001)] == [2]
    assert best_record(records).number == 2


def test_seed_noise_prefers_measured_spread_over_the_recipe_constant() -> None:
    assert seed_noise([record(0, 0.8, 100)], INFO) == 0.01
    spread = [record(0, 0.8, 100, seeds=(0.79, 0.81)), record(1, 0.7, 90, seeds=(0.70, 0.70))]
    assert seed_noise(spread, INFO) == pytest.approx(0.01)  # pooled: sqrt((2e-4 + 0) / 2)


def test_zero_cost_scores_make_the_front() -> None:
    info = StudyInfo("z", 40_000_000, "40M", ("synflow", "mflops"), None, {})
    records = [record(0, None, 30, score=15.0), record(1, None, 39, score=18.0), record(2, None, 35, score=14.0)]
    assert [r.number for r in ties_with_best(records, info, 0.5)] == [1]
    assert best_record(records).number == 1

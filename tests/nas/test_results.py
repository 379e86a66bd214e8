"""A study's answer: the front over accuracy or a zero-cost score, the best trial, seed noise, ties."""

from __future__ import annotations

import pytest

from nas.records import StudyInfo, TrialRecord
from nas.results import best_trial, choose_best, seed_noise, study_front, ties_with_best


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
    assert best_trial(records, INFO).number == 2


def test_seed_noise_prefers_measured_spread_over_the_recipe_constant() -> None:
    assert seed_noise([record(0, 0.8, 100)], INFO) == 0.01
    spread = [record(0, 0.8, 100, seeds=(0.79, 0.81)), record(1, 0.7, 90, seeds=(0.70, 0.70))]
    assert seed_noise(spread, INFO) == pytest.approx(0.01)  # pooled: sqrt((2e-4 + 0) / 2)


def test_zero_cost_scores_make_the_front() -> None:
    info = StudyInfo("z", 40_000_000, "40M", ("synflow", "mflops"), None, {})
    records = [record(0, None, 30, score=15.0), record(1, None, 39, score=18.0), record(2, None, 35, score=14.0)]
    assert [r.number for r in ties_with_best(records, info, 0.5)] == [1]
    assert best_trial(records, info).number == 1


def test_a_zero_cost_study_has_a_best_trial_ranked_by_its_score() -> None:
    """Regression: `nas export --best` said "no feasible completed trial (0 completed)" on a
    zero-cost study, because "completed" meant "has an accuracy"."""
    info = StudyInfo("z", 40_000_000, "40M", ("synflow", "mflops"), None, {})
    records = [record(0, None, 30, score=15.0), record(1, None, 39, score=18.0), record(2, None, 45, score=30.0, feasible=False)]
    choice = choose_best(records, info, budget_macs=40_000_000)
    assert choice.record is not None and choice.record.number == 1 and choice.reason is None
    assert [r.number for r in study_front(records, info)] == [0, 1]


def test_re_proposed_configs_are_left_out_of_the_front_unless_asked_for() -> None:
    original = record(1, 0.85, 139)
    copy = TrialRecord("s", 5, "COMPLETE", None, original.macs, 1, 0.85, None, None, True, (), None,
                       {"accuracy_per_seed": [], "duplicate_of": 1})
    records = [record(0, 0.80, 100), original, copy]
    assert [r.number for r in study_front(records, INFO)] == [0, 1]
    assert [r.number for r in study_front(records, INFO, with_duplicates=True)] == [0, 1, 5]


def test_no_best_trial_says_why() -> None:
    records = [record(0, 0.80, 100), record(1, 0.85, 130)]
    choice = choose_best(records, INFO, budget_macs=50_000_000, budget_label="50M")
    assert choice.record is None and "no feasible trial within 50M" in str(choice.reason)
    assert "smallest feasible trial uses 100.0 MFLOPs" in str(choice.reason)
    failed = [TrialRecord("s", 0, "FAIL", None, None, None, None, None, None, True, (), None, {})]
    assert "no feasible trial with a result" in str(choose_best(failed, INFO).reason)

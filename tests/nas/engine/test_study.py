"""Search settings that decide how a study opens (no training: pure functions)."""

from __future__ import annotations

import pytest

from nas.engine.samplers import startup_count
from nas.engine.settings import SearchSettings
from nas.engine.study import start_trials_for


@pytest.mark.parametrize(
    ("sampler", "n_trials", "start_trials", "prescreen", "expected"),
    [
        ("tpe", 64, None, 0, 10),  # model-based samplers: the design replaces their random start-up
        ("nsga2", 32, None, 0, 10),
        ("tpe", 12, None, 0, 4),
        ("random", 64, None, 0, 0),  # random search stays the pure-random baseline
        ("tpe", 64, None, 20, 0),  # --prescreen brings its own start
        ("random", 64, 6, 0, 6),  # an explicit --start-trials wins
        ("tpe", 3, 10, 0, 3),  # never more than the study's trials
    ],
)
def test_start_trials_by_sampler_and_options(sampler, n_trials, start_trials, prescreen, expected) -> None:
    settings = SearchSettings(budgets=(), evaluator=None, sampler=sampler, n_trials=n_trials,
                              start_trials=start_trials, prescreen=prescreen)
    assert start_trials_for(settings) == expected


def test_startup_count_is_a_third_of_a_short_search_within_4_to_10() -> None:
    assert [startup_count(n) for n in (1, 12, 21, 30, 64, 1000)] == [4, 4, 7, 10, 10, 10]

"""Successive halving among MFLOPs peers: the rule alone, on a real (in-memory) Optuna study."""

from __future__ import annotations

import optuna
import pytest

from nas import records as R
from nas.engine.early_stopping import HalvingRule, below_top_fraction


def test_successive_halving_keeps_the_top_fraction() -> None:
    assert below_top_fraction(0.5, [0.9, 0.8, 0.7, 0.6, 0.4], eta=3) is True  # top 2 of 6 are 0.9, 0.8
    assert below_top_fraction(0.85, [0.9, 0.8, 0.7, 0.6, 0.4], eta=3) is False
    assert below_top_fraction(0.1, [0.2], eta=3) is True  # always keep at least the best one
    assert below_top_fraction(0.2, [0.2], eta=3) is False  # a tie with the kept one survives


def _study(*trials: tuple[str, int, list[float]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for state, macs, curve in trials:
        kwargs = {"values": [curve[-1], macs / 1e6]} if state == "COMPLETE" else {}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], user_attrs={R.MACS: macs, R.LEARNING_CURVE: curve}, **kwargs,
        ))
    return study


@pytest.mark.parametrize(("accuracy", "stopped"), [(0.50, True), (0.75, True), (0.80, False), (0.85, False)])
def test_a_trial_below_the_top_third_of_its_peers_is_stopped(accuracy: float, stopped: bool) -> None:
    # peers at epoch 0: 0.8, 0.7, 0.6, 0.65; with the trial, 5 values, of which the top 5 // 3 = 1 go on
    study = _study(("COMPLETE", 100_000_000, [0.8, 0.9]), ("COMPLETE", 110_000_000, [0.7, 0.85]),
                   ("PRUNED", 95_000_000, [0.6]), ("COMPLETE", 105_000_000, [0.65, 0.8]))
    assert HalvingRule().should_stop(study, 99, 100_000_000, 0, accuracy) is stopped


def test_only_trials_of_similar_mflops_are_peers() -> None:
    big = [("COMPLETE", 400_000_000, [0.9, 0.95])] * 5  # 4x the MACs: a small model never loses to these
    study = _study(*big, ("COMPLETE", 110_000_000, [0.3, 0.4]))
    rule = HalvingRule()
    assert rule.peers_at(study, 99, 100_000_000, 0) == [0.3]
    assert rule.should_stop(study, 99, 100_000_000, 0, 0.1) is False  # one peer is fewer than min_peers


def test_peers_must_have_reached_the_epoch() -> None:
    study = _study(*[("PRUNED", 100_000_000, [0.9])] * 4)
    assert HalvingRule().peers_at(study, 99, 100_000_000, 1) == []
    assert HalvingRule().should_stop(study, 99, 100_000_000, 0, 0.1) is True

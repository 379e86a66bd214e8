"""Tune's OptunaSearch over the project's design space, seeded from the study storage.

OptunaSearch keeps its Optuna study in memory. Before each run that in-memory study is
filled with the finished trials our storage holds (params, values, constraints), and our
enqueued trials (paper presets) are enqueued in it too: the sampler continues from where
an interrupted run stopped, and nothing already measured is run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray.tune.search.optuna import OptunaSearch

from nas.backends.ray.trainable import FINAL, STATE, WAITING
from nas.engine.samplers import make_sampler
from nas.records import Direction, directions_for
from search_spaces import DesignSpace, suggest

if TYPE_CHECKING:
    import optuna

__all__ = ["SpaceFunction", "StoredOptunaSearch", "build_searcher"]

MEMORY_STUDY = "optuna"  # the name OptunaSearch gives its in-memory study


class SpaceFunction:
    """The same define-by-run ``suggest`` as the local search (a class: Tune pickles its searcher).

    Enqueued trials (presets) also return their number in our study, so the worker claims it.
    """

    def __init__(self, space: DesignSpace, budget_macs: int) -> None:
        self.space = space
        self.budget_macs = budget_macs

    def __call__(self, trial) -> dict[str, Any] | None:
        suggest(trial, self.space, self.budget_macs)
        waiting = trial.user_attrs.get(WAITING)
        return None if waiting is None else {WAITING: int(waiting)}


def _seeded_memory_study(study: optuna.Study, directions: Sequence[Direction], sampler) -> optuna.storages.InMemoryStorage:
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.InMemoryStorage()
    memory = optuna.create_study(storage=storage, study_name=MEMORY_STUDY, directions=directions, sampler=sampler)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if not trial.distributions:
            continue
        memory.add_trial(
            optuna.trial.create_trial(
                state=trial.state, values=trial.values, params=trial.params, distributions=trial.distributions,
                intermediate_values=trial.intermediate_values, system_attrs=dict(trial.system_attrs),
            )
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        fixed = trial.system_attrs.get("fixed_params") or trial.params
        memory.enqueue_trial(dict(fixed), user_attrs={WAITING: trial.number})
    return storage


class StoredOptunaSearch(OptunaSearch):
    """Only a trial's final result is a measurement; an ASHA stop is a PRUNED trial."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(FINAL):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result is not None and result.get(STATE) == "FAIL":
            result, error = None, True
        elif result is not None and not result.get(FINAL):
            result = None  # stopped early by the scheduler
        super().on_trial_complete(trial_id, result, error)


def build_searcher(study: optuna.Study, settings, budget_macs: int):
    """An OptunaSearch with the project's sampler, objectives and directions."""
    directions = directions_for(settings.objectives)
    sampler = make_sampler(settings.sampler, settings.seed, settings.n_trials)
    storage = _seeded_memory_study(study, directions, sampler)
    modes = ["max" if direction == "maximize" else "min" for direction in directions]
    metric: Any = list(settings.objectives) if len(directions) > 1 else settings.objectives[0]
    mode: Any = modes if len(directions) > 1 else modes[0]
    return StoredOptunaSearch(
        space=SpaceFunction(settings.space, budget_macs), metric=metric, mode=mode,
        sampler=sampler, storage=storage, study_name=MEMORY_STUDY,
    )

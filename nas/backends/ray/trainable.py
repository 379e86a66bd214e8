"""The Ray Tune trainable: one trial of the project's study, run where Ray places it.

The params OptunaSearch chose become a real trial of *our* study (fixed params, so the same
define-by-run ``suggest`` returns them), and the project's ``TrialRunner`` runs on it: every
attribute, value and constraint is stored exactly as in a local search. The worker opens the
storage itself, so its URL must be reachable from every node (see README "Scaling out with
Ray"). The data set comes from Ray's object store, not from the node's disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas import records as R

if TYPE_CHECKING:
    import optuna

    from nas.engine.study import Budget, SearchSettings

__all__ = ["RayJob", "claim_trial", "ray_trial"]

# Keys of the results the trainable reports to Tune.
EPOCH = "epoch"
EPOCH_ACCURACY = "epoch_accuracy"  # what ASHA compares after each epoch
FINAL = "nas_final"  # 1 on the last result, once the trial is stored as finished
STATE = "nas_state"  # COMPLETE or FAIL on the last result
TRIAL_NUMBER = "nas_trial"
WAITING = "nas_waiting"  # config key: number of an enqueued (preset) trial to claim

# Trial user attributes that say which Ray run and Tune trial ran it.
RAY_RUN = "ray_run"
RAY_TRIAL_ID = "ray_trial_id"
BACKEND = "backend"


@dataclass
class RayJob:
    """What every trial of one budget needs (shipped once through the object store)."""

    settings: "SearchSettings"
    budget: "Budget"
    study_name: str
    run_name: str
    cpus_per_trial: int
    epochs: int


def claim_trial(study: "optuna.Study", params: dict[str, Any], waiting_number: int | None) -> "optuna.trial.Trial":
    """A RUNNING trial of ``study`` with ``params`` fixed.

    An enqueued trial (a preset or a start-design setting) is claimed atomically, as Optuna's
    own ``ask`` does; if a crashed attempt already used it, a new trial carries its user
    attributes instead.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    inherited: dict[str, Any] = {}
    if waiting_number is not None:
        # Reading the study's waiting trials first, as Optuna's own ask does, lets a cached
        # storage know the trial: without it, the trial's first suggest fails (KeyError).
        storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
        waiting_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(waiting_number))
        try:
            if storage.set_trial_state_values(waiting_id, state=TrialState.RUNNING):
                return optuna.trial.Trial(study, waiting_id)
        except UpdateFinishedTrialError:
            pass
        inherited = dict(storage.get_trial(waiting_id).user_attrs)
    trial_id = storage.create_new_trial(study._study_id)
    storage.set_trial_system_attr(trial_id, "fixed_params", params)
    for key, value in inherited.items():
        storage.set_trial_user_attr(trial_id, key, value)
    return optuna.trial.Trial(study, trial_id)


def ray_trial(config: dict[str, Any], job: RayJob, dataset: Any = None) -> None:
    """Tune's function trainable (``tune.with_parameters`` puts ``job`` and ``dataset`` in the object store)."""
    import optuna
    import torch
    from ray import tune

    from nas.engine.trial_runner import TrialRunner
    from nas.storage import open_storage

    torch.set_num_threads(job.cpus_per_trial)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = job.settings
    if dataset is not None and hasattr(settings.evaluator, "_dataset"):
        settings.evaluator._dataset = dataset  # the object store's copy: no disk needed here
    study = optuna.load_study(
        study_name=job.study_name, storage=open_storage(settings.storage, create=False),
        sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner(),
    )
    params = {key: value for key, value in config.items() if not key.startswith("nas_")}
    trial = claim_trial(study, params, config.get(WAITING))
    trial.set_user_attr(BACKEND, "ray")
    trial.set_user_attr(RAY_RUN, job.run_name)
    trial.set_user_attr(RAY_TRIAL_ID, tune.get_context().get_trial_id())

    def report_epoch(epoch: int, accuracy: float) -> None:
        if epoch + 1 < job.epochs:  # the last epoch is reported once the trial is stored
            tune.report({EPOCH: epoch + 1, EPOCH_ACCURACY: accuracy, TRIAL_NUMBER: trial.number, FINAL: 0})

    runner = TrialRunner(
        space=settings.space, budget_macs=job.budget.macs, evaluator=settings.evaluator, objectives=settings.objectives,
        weights_dir=settings.runs_dir / "weights" if settings.keep_weights else None, latency=settings.latency,
        halving=None, on_epoch_stored=report_epoch,  # ASHA decides early stops for the Ray backend
    )
    try:
        values = runner(trial)
    except optuna.TrialPruned:
        raise  # not raised with halving=None and a NopPruner; kept for clarity
    except Exception as error:  # noqa: BLE001 - a bad candidate fails its trial, not the search
        trial.set_user_attr(R.FAIL_REASON, f"{type(error).__name__}: {error}"[:500])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tune.report({EPOCH: job.epochs, TRIAL_NUMBER: trial.number, FINAL: 1, STATE: "FAIL"})
        return
    study.tell(trial, values)
    values = values if isinstance(values, tuple) else (values,)
    result = {EPOCH: job.epochs, TRIAL_NUMBER: trial.number, FINAL: 1, STATE: "COMPLETE", "worker_pid": os.getpid()}
    result.update({name: float(value) for name, value in zip(settings.objectives, values)})
    curve = trial.user_attrs.get(R.LEARNING_CURVE) or []
    if len(curve) >= job.epochs and not trial.user_attrs.get("skipped"):
        result[EPOCH_ACCURACY] = float(curve[-1])
    tune.report(result)

"""The Ray Tune trainable: one trial of the project's study, run where Ray places it.

The params OptunaSearch chose become a real trial of *our* study (fixed params, so the same
define-by-run ``suggest`` returns them), and the project's ``TrialRunner`` runs on it: every
attribute, value and constraint is stored exactly as in a local search. The worker opens the
storage itself, so its URL must be reachable from every node (see README "Scaling out with
Ray"), and records a heartbeat while the trial runs (RDB storages), so that a node that dies
leaves no trial RUNNING for ever. The data set comes from Ray's object store, not the node's disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas import records as R
from nas.engine.settings import Budget, SearchSettings

if TYPE_CHECKING:
    import optuna

__all__ = ["RayJob", "claim_trial", "ray_trial"]

# Keys of the results the trainable reports to Tune (Tune's, not stored in the study).
EPOCH = "epoch"
EPOCH_ACCURACY = "epoch_accuracy"  # what ASHA compares after each epoch
FINAL = "nas_final"  # 1 on the last result, once the trial is stored as finished
STATE = "nas_state"  # COMPLETE or FAIL on the last result
TRIAL_NUMBER = "nas_trial"
WAITING = "nas_waiting"  # config key: number of an enqueued (preset) trial to claim


@dataclass
class RayJob:
    """What every trial of one study needs (shipped once through the object store)."""

    settings: SearchSettings
    budget: Budget
    study_name: str
    run_name: str
    cpus_per_trial: int
    epochs: int
    gpus_per_trial: float = 0.0


def claim_trial(
    study: optuna.Study, storage: optuna.storages.BaseStorage, params: dict[str, Any], waiting_number: int | None
) -> optuna.trial.Trial:
    """A RUNNING trial of ``study`` with ``params`` fixed.

    An enqueued trial (a preset, a start-design setting, a lost trial's retry) is claimed
    atomically (see nas/storage/optuna_adapter.py); if another worker or a crashed attempt
    already used it, a new trial carries its user attributes instead.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from nas.storage.optuna_adapter import new_trial_with_params, running_trial, trial_id_of

    inherited: dict[str, Any] = {}
    if waiting_number is not None:
        # Reading the study's waiting trials first, as Optuna's own ask does, lets a cached
        # storage know the trial: without it, the trial's first suggest fails (KeyError).
        study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        waiting_id = trial_id_of(storage, study.study_name, int(waiting_number))
        try:
            if storage.set_trial_state_values(waiting_id, state=TrialState.RUNNING):
                return running_trial(study, waiting_id)
        except UpdateFinishedTrialError:
            pass
        inherited = dict(storage.get_trial(waiting_id).user_attrs)
    trial = new_trial_with_params(study, storage, params)
    for key, value in inherited.items():
        trial.set_user_attr(key, value)
    return trial


def ray_trial(config: dict[str, Any], job: RayJob, dataset: Any = None) -> None:
    """Tune's function trainable (``tune.with_parameters`` puts ``job`` and ``dataset`` in the object store)."""
    import optuna
    import ray
    import torch
    from ray import tune

    from nas.engine.study import open_search_storage
    from nas.engine.trial_runner import make_runner
    from nas.storage.optuna_adapter import heartbeat, trial_id_of

    torch.set_num_threads(job.cpus_per_trial)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = job.settings
    evaluator = settings.evaluator.with_dataset(dataset)  # the object store's copy: no disk needed here
    storage = open_search_storage(settings, create=False)
    study = optuna.load_study(
        study_name=job.study_name, storage=storage,
        sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner(),
    )
    params = {key: value for key, value in config.items() if not key.startswith("nas_")}
    trial = claim_trial(study, storage, params, config.get(WAITING))
    trial.set_user_attr(R.RAY_RUN, job.run_name)
    trial.set_user_attr(R.RAY_TRIAL_ID, tune.get_context().get_trial_id())
    trial.set_user_attr(R.RAY_NODE, ray.util.get_node_ip_address())
    trial.set_user_attr(R.RAY_NODE_ID, ray.get_runtime_context().get_node_id())
    if job.gpus_per_trial:
        # Ray hands the trial its GPUs through CUDA_VISIBLE_DEVICES; a fraction also caps memory.
        trial.set_user_attr(R.RAY_GPU_IDS, [str(gpu) for gpu in ray.get_gpu_ids()])
        if job.gpus_per_trial < 1 and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(job.gpus_per_trial, 0)

    def report_epoch(epoch: int, accuracy: float) -> None:
        if epoch + 1 < job.epochs:  # the last epoch is reported once the trial is stored
            tune.report({EPOCH: epoch + 1, EPOCH_ACCURACY: accuracy, TRIAL_NUMBER: trial.number, FINAL: 0})

    runner = make_runner(
        _with_evaluator(settings, evaluator), job.budget, worker="ray", backend="ray", on_epoch_stored=report_epoch,
        early_stopping=False,  # ASHA decides early stops for the Ray backend
    )
    with heartbeat(storage, trial_id_of(storage, study.study_name, trial.number)):
        try:
            values = runner(trial)
        except Exception:  # noqa: BLE001 - a bad candidate fails its trial (reason stored by the runner), not the search
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            tune.report({EPOCH: job.epochs, TRIAL_NUMBER: trial.number, FINAL: 1, STATE: "FAIL"})
            return
        study.tell(trial, values)
    values = values if isinstance(values, tuple) else (values,)
    result = {EPOCH: job.epochs, TRIAL_NUMBER: trial.number, FINAL: 1, STATE: "COMPLETE", "worker_pid": os.getpid()}
    result.update({name: float(value) for name, value in zip(settings.objectives, values, strict=True)})
    curve = trial.user_attrs.get(R.LEARNING_CURVE) or []
    if curve and len(curve) >= job.epochs and not trial.user_attrs.get(R.SKIPPED):  # zero-cost trials have no curve
        result[EPOCH_ACCURACY] = float(curve[-1])
    tune.report(result)


def _with_evaluator(settings: SearchSettings, evaluator: Any) -> SearchSettings:
    import dataclasses

    return dataclasses.replace(settings, evaluator=evaluator)

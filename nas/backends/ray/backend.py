"""``nas search --backend ray``: one Tune experiment per budget, results in the study storage.

Workers write their trials into the storage themselves (nas/distributed/trial.py). The
driver keeps the storage in step with what Tune decided about trials that never got to
finish on their own: stopped by ASHA -> PRUNED, worker crashed -> FAIL (Tune then retries
the same params as a new trial, up to ``max_failures`` times).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune
from rich.console import Console

from nas import records as R
from nas.console import output_console
from nas.errors import UserError
from nas.backends.ray import RayOptions
from nas.backends.ray.trainable import EPOCH, RAY_RUN, RAY_TRIAL_ID, RayJob, ray_trial

if TYPE_CHECKING:
    import optuna

    from nas.engine.study import Budget, SearchSettings

__all__ = ["run_ray_search"]


def _storage_trials(study: "optuna.Study", run_name: str, ray_trial_id: str, state_name: str) -> list:
    return [
        trial for trial in study.get_trials(deepcopy=False)
        if trial.state.name == state_name and trial.user_attrs.get(RAY_RUN) == run_name
        and trial.user_attrs.get(RAY_TRIAL_ID) == ray_trial_id
    ]


def _finish(study: "optuna.Study", trial: "optuna.trial.FrozenTrial", state: str, reason: str) -> None:
    """Finish a trial its worker could not finish; a worker that just did wins the race."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        if state == "PRUNED":
            study._storage.set_trial_user_attr(trial._trial_id, "pruned_by", reason)
            study.tell(trial.number, state=TrialState.PRUNED)
        else:
            study._storage.set_trial_user_attr(trial._trial_id, R.FAIL_REASON, reason)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except (UpdateFinishedTrialError, ValueError, RuntimeError):
        pass


class StorageCallback(tune.Callback):
    """Mirrors Tune's decisions into the study storage and feeds the progress display."""

    def __init__(self, study: "optuna.Study", run_name: str, progress) -> None:
        self.study = study
        self.run_name = run_name
        self.progress = progress
        self.seen: set[int] = set()

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which this backend does not use (our
        # storage is the record); a storage connection and a console cannot be pickled.
        return {"run_name": self.run_name, "seen": set(self.seen), "study": None, "progress": None}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epoch = (trial.last_result or {}).get(EPOCH)
        for stored in _storage_trials(self.study, self.run_name, trial.trial_id, "RUNNING"):
            _finish(self.study, stored, "PRUNED", f"asha after epoch {epoch}")
        self.poll()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._failed(trial, "its Ray worker died; Tune retries the same params as a new trial")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._failed(trial, "its Ray worker died and the retries are used up")

    def _failed(self, trial, reason: str) -> None:
        for stored in _storage_trials(self.study, self.run_name, trial.trial_id, "RUNNING"):
            _finish(self.study, stored, "FAIL", f"interrupted: {reason}")
        self.poll()

    def poll(self) -> None:
        for stored in self.study.get_trials(deepcopy=False):
            if stored.number not in self.seen and stored.state.is_finished() and stored.user_attrs.get(RAY_RUN) == self.run_name:
                self.seen.add(stored.number)
                self.progress.on_trial(self.study, stored)


def _job_settings(settings: "SearchSettings") -> "SearchSettings":
    """Settings as workers need them: absolute paths (Tune runs trials in their own folders), no data inside."""
    from nas.storage import resolve_storage_url

    evaluator = copy.copy(settings.evaluator)
    if hasattr(evaluator, "_dataset"):
        evaluator._dataset = None  # shipped once, separately, through the object store
    return dataclasses.replace(
        settings, storage=resolve_storage_url(settings.storage), runs_dir=Path(settings.runs_dir).resolve(), evaluator=evaluator,
    )


def _scheduler(settings: "SearchSettings", epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    from nas.backends.ray.trainable import EPOCH_ACCURACY

    if not settings.halving or epochs < 2 or settings.evaluator.objective_name != "accuracy":
        return None  # FIFO: every trial trains all its epochs
    return ASHAScheduler(time_attr=EPOCH, metric=EPOCH_ACCURACY, mode="max", max_t=epochs, grace_period=1, reduction_factor=3)


def run_budget(settings: "SearchSettings", options: RayOptions, budget: "Budget", study, remaining: int, progress, dataset, timeout: float | None) -> None:
    """One Tune experiment for ``remaining`` more trials of ``study``."""
    from nas.backends.ray.searcher import build_searcher

    epochs = getattr(getattr(settings.evaluator, "recipe", None), "epochs", 1)
    run_name = f"{study.study_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    job = RayJob(
        settings=_job_settings(settings), budget=budget, study_name=study.study_name, run_name=run_name,
        cpus_per_trial=options.cpus_per_trial, epochs=epochs,
    )
    trainable = tune.with_resources(tune.with_parameters(ray_trial, job=job, dataset=dataset), {"cpu": options.cpus_per_trial})
    callback = StorageCallback(study, run_name, progress)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(study, settings, budget.macs), scheduler=_scheduler(settings, epochs),
            num_samples=remaining, max_concurrent_trials=options.max_concurrent, time_budget_s=timeout, reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=run_name, storage_path=str(Path(settings.runs_dir).resolve() / "ray"), verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.max_failures), callbacks=[callback],
        ),
    )
    try:
        tuner.fit()
    finally:
        for stored in study.get_trials(deepcopy=False):  # trials an interrupted run left open
            if stored.state.name == "RUNNING" and stored.user_attrs.get(RAY_RUN) == run_name:
                _finish(study, stored, "FAIL", "interrupted: the Ray run ended before it finished")
        callback.poll()


def run_ray_search(request, settings: "SearchSettings", options: RayOptions) -> None:
    """The Ray counterpart of ``run_search_command``: same studies, same storage, same summary."""
    import optuna

    from nas.reporting.progress import SearchProgress
    from nas.commands.search_request import _print_summary, studies_to_run
    from nas.storage import describe_storage, open_storage, resolve_storage_url
    from nas.backends.ray.cluster import ray_session

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # early results carry no objectives
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    console = output_console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = resolve_storage_url(settings.storage)
    local_cpus = None if options.address else (options.max_concurrent or 0) * options.cpus_per_trial or os.cpu_count()
    with ray_session(options.address, local_cpus) as resources:
        storage = open_storage(settings.storage)
        dataset = settings.evaluator.dataset() if hasattr(settings.evaluator, "dataset") else None
        if dataset is not None:
            console.print(f"[dim]data: {dataset.describe()} (to the workers through Ray's object store)[/dim]")
        cpus = int(resources.get("CPU", 0))
        concurrent = options.max_concurrent or max(1, cpus // options.cpus_per_trial)
        if cpus < options.cpus_per_trial:
            raise UserError(f"--cpus-per-trial {options.cpus_per_trial} is more than the Ray cluster's {cpus} CPUs")
        console.print(
            f"[dim]storage: {describe_storage(url)} | evaluator: {settings.evaluator.name} | sampler: {settings.sampler} | "
            f"Ray: {options.address or 'local'}, {cpus} CPUs, up to {concurrent} trial(s) x {options.cpus_per_trial} CPU[/dim]"
        )
        _warn_file_storage(console, url)
        progress_settings = dataclasses.replace(settings, workers=concurrent)
        studies: list = []
        for budget, study, remaining, left in studies_to_run(settings, storage, console, studies):
            with SearchProgress(console, study, progress_settings, remaining, quiet=request.quiet) as progress:
                run_budget(settings, options, budget, study, remaining, progress, dataset, left)
    _print_summary(console, studies, url)


def _warn_file_storage(console: Console, url: str) -> None:
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1 and (url.startswith("sqlite:") or url.startswith("journal:")):
        console.print(
            f"[yellow]{len(nodes)} Ray nodes write to a file storage: every node must see it at the same path "
            "(prefer a database URL such as postgresql://... for --storage)[/yellow]"
        )

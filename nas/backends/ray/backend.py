"""``nas search --backend ray``: one Tune experiment per study, results in the study storage.

Workers write their trials into the storage themselves (:mod:`.trainable`). This backend
keeps the storage in step with what Tune decided about trials that never got to finish on
their own: stopped by ASHA -> PRUNED; worker crashed -> FAIL as lost (Tune runs the same
params again as a new trial, up to ``max_failures`` times; after that the failure counts).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from nas import records as R
from nas.backends.ray import RayOptions
from nas.backends.ray.trainable import EPOCH, EPOCH_ACCURACY, RayJob, ray_trial
from nas.engine.display import Display, TrialFeed
from nas.engine.lost_trials import lose_trial
from nas.engine.outcome import BackendReport, StudyPlan, count_toward_target
from nas.engine.settings import SearchSettings
from nas.errors import UserError
from nas.records import load_records, record_from_trial
from nas.storage.optuna_adapter import trial_id_of

if TYPE_CHECKING:
    import optuna

    from nas.evaluation.data import Dataset

__all__ = ["RayBackend", "StorageCallback"]


def _run_trials(study: optuna.Study, run_name: str, ray_trial_id: str, state: str) -> list[optuna.trial.FrozenTrial]:
    return [
        trial for trial in study.get_trials(deepcopy=False)
        if trial.state.name == state and trial.user_attrs.get(R.RAY_RUN) == run_name
        and trial.user_attrs.get(R.RAY_TRIAL_ID) == ray_trial_id
    ]


def _prune(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Mark PRUNED a trial ASHA stopped; a worker that just finished it wins the race."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id_of(storage, study.study_name, trial.number), R.PRUNED_BY, reason)
        study.tell(trial.number, state=TrialState.PRUNED)
    except (UpdateFinishedTrialError, ValueError, RuntimeError):
        pass


class StorageCallback(tune.Callback):
    """Mirrors Tune's decisions into the study storage and feeds the display."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, run_name: str, feed: TrialFeed,
                 max_attempts: int) -> None:
        self.study, self.storage, self.run_name, self.feed, self.max_attempts = study, storage, run_name, feed, max_attempts
        self.seen: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks for Tuner.restore, which this backend does not use (our
        # storage is the record); a storage connection and a display cannot be pickled.
        return {"run_name": self.run_name, "seen": set(self.seen), "max_attempts": self.max_attempts}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get(EPOCH)
        for stored in _run_trials(self.study, self.run_name, trial.trial_id, R.RUNNING):
            _prune(self.study, self.storage, stored, f"asha after epoch {epoch}")
        self.poll()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._lost(trial, "its Ray worker died; Tune runs the same params again as a new trial", elsewhere=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._lost(trial, "its Ray worker died and Tune's retries are used up", elsewhere=False)

    def _lost(self, trial: Any, reason: str, *, elsewhere: bool) -> None:
        for stored in _run_trials(self.study, self.run_name, trial.trial_id, R.RUNNING):
            # Tune reruns a crashed trial itself; once its retries are spent, the failure counts.
            lose_trial(self.study, self.storage, stored, f"interrupted: {reason}",
                       max_attempts=self.max_attempts if elsewhere else 1, rerun_elsewhere=elsewhere)
            self.feed.worker_event(f"trial #{stored.number} on Ray node {stored.user_attrs.get(R.RAY_NODE, '?')}: {reason}")
        self.poll()

    def poll(self) -> None:
        for stored in self.study.get_trials(deepcopy=False):
            ours = stored.user_attrs.get(R.RAY_RUN) == self.run_name
            if stored.number not in self.seen and stored.state.is_finished() and ours:
                self.seen.add(stored.number)
                self.feed.trial_finished(record_from_trial(self.study.study_name, stored))


def _job_settings(settings: SearchSettings) -> SearchSettings:
    """Settings as workers need them: absolute paths (Tune runs trials in their own folders),
    no data inside (it travels once, through the object store)."""
    from nas.storage import resolve_storage_url

    return dataclasses.replace(
        settings, storage=resolve_storage_url(settings.storage), runs_dir=Path(settings.runs_dir).resolve(),
        evaluator=settings.evaluator.with_dataset(None),
    )


def _scheduler(settings: SearchSettings, epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    if not settings.halving or epochs < 2 or settings.evaluator.objective_name != "accuracy":
        return None  # FIFO: every trial trains all its epochs
    return ASHAScheduler(time_attr=EPOCH, metric=EPOCH_ACCURACY, mode="max", max_t=epochs, grace_period=1, reduction_factor=3)


class RayBackend:
    """Ray Tune on a local Ray (loopback only) or a cluster (``--ray-address``)."""

    name = "ray"

    def __init__(self, options: RayOptions) -> None:
        self.options = options
        self._dataset: Dataset | None = None

    @contextmanager
    def opened(self, settings: SearchSettings, display: Display) -> Iterator[None]:
        from nas.backends.ray.cluster import ray_session
        from nas.storage import resolve_storage_url

        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # early results carry no objectives
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        options = self.options
        local_cpus = None if options.address else (options.max_concurrent or 0) * options.cpus_per_trial or os.cpu_count()
        with ray_session(options.address, local_cpus, options.num_gpus) as resources:
            self._dataset = settings.evaluator.dataset()
            display.note(f"data: {self._dataset.describe()} (to the workers through Ray's object store)")
            cpus = int(resources.get("CPU", 0))
            if cpus < options.cpus_per_trial:
                raise UserError(f"--cpus-per-trial {options.cpus_per_trial} is more than the Ray cluster's {cpus} CPUs")
            gpus = float(resources.get("GPU", 0))
            if options.gpus_per_trial > gpus:
                raise UserError(f"--gpus-per-trial {options.gpus_per_trial:g} is more than the Ray cluster's {gpus:g} GPUs")
            fit = cpus // options.cpus_per_trial
            if options.gpus_per_trial:
                fit = min(fit, int(gpus / options.gpus_per_trial + 1e-9))
            concurrent = options.max_concurrent or max(1, fit)
            per_trial = f"{options.cpus_per_trial} CPU" + (f" + {options.gpus_per_trial:g} GPU" if options.gpus_per_trial else "")
            display.note(
                f"Ray: {options.address or 'local'}, {cpus} CPUs, {gpus:g} GPUs, up to {concurrent} trial(s) x {per_trial}"
            )
            self._warn_file_storage(display, resolve_storage_url(settings.storage))
            yield

    @staticmethod
    def _warn_file_storage(display: Display, url: str) -> None:
        import ray

        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if len(nodes) > 1 and (url.startswith("sqlite:") or url.startswith("journal:")):
            display.note(
                f"warning: {len(nodes)} Ray nodes write to a file storage: every node must see it at the same path "
                "(prefer a database URL such as postgresql://... for --storage)"
            )

    def run(
        self, plan: StudyPlan, study: optuna.Study, storage: optuna.storages.BaseStorage, feed: TrialFeed
    ) -> BackendReport:
        """One Tune experiment for ``plan.remaining`` more trials of the study."""
        from nas.backends.ray.searcher import build_searcher

        settings, options = plan.settings, self.options
        epochs = settings.evaluator.epochs
        run_name = f"{plan.study_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        job = RayJob(
            settings=_job_settings(settings), budget=plan.budget, study_name=plan.study_name, run_name=run_name,
            cpus_per_trial=options.cpus_per_trial, epochs=epochs, gpus_per_trial=options.gpus_per_trial,
        )
        resources = {"cpu": options.cpus_per_trial, **({"gpu": options.gpus_per_trial} if options.gpus_per_trial else {})}
        trainable = tune.with_resources(tune.with_parameters(ray_trial, job=job, dataset=self._dataset), resources)
        callback = StorageCallback(study, storage, run_name, feed, settings.max_attempts)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=build_searcher(study, settings, plan.budget.macs), scheduler=_scheduler(settings, epochs),
                num_samples=plan.remaining, max_concurrent_trials=options.max_concurrent, time_budget_s=plan.timeout,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=run_name, storage_path=str(Path(settings.runs_dir).resolve() / "ray"), verbose=0,
                failure_config=tune.FailureConfig(max_failures=options.max_failures), callbacks=[callback],
            ),
        )
        report = BackendReport()
        try:
            tuner.fit()
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            for stored in study.get_trials(deepcopy=False):  # trials an interrupted run left open
                if stored.state.name == R.RUNNING and stored.user_attrs.get(R.RAY_RUN) == run_name:
                    lose_trial(study, storage, stored, "interrupted: the Ray run ended before it finished",
                               max_attempts=settings.max_attempts)
            callback.poll()
        counted = count_toward_target(load_records(study))
        timed_out = plan.timeout is not None
        if not report.interrupted and counted < plan.target and not timed_out:
            report.gave_up = f"Tune ended with {counted} of {plan.target} trials finished (worker retries used up)"
        return report

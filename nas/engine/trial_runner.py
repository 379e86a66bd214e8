"""One trial: propose a config, count it, check budgets, evaluate it, store everything.

The same :class:`TrialRunner` serves the in-process search, worker processes and Ray Tune, so
a trial looks the same in the storage whoever ran it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas import records as R
from nas.engine.early_stopping import HalvingRule
from nas.engine.lost_trials import retry_lost_trial
from nas.engine.settings import MAX_ATTEMPTS, Budget, LatencySettings, SearchSettings
from nas.evaluation.accelerator import release_memory
from nas.evaluation.base import AccuracyEvaluator, Evaluation
from nas.interrupts import raise_if_interrupted
from search_spaces import DesignSpace, suggest
from shufflenet_core import PAPER_STAGE2_CHANNELS, ShuffleNetConfig, complexity, get_preset

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialRunner", "make_runner"]

INTERRUPTED_BY_USER = "interrupted by the user"


@dataclass
class TrialRunner:
    """Turns an Optuna trial into a stored result (see nas/records.py for what is stored)."""

    space: DesignSpace
    budget_macs: int
    evaluator: AccuracyEvaluator
    objectives: tuple[str, ...]
    weights_dir: Path | None = None
    latency: LatencySettings | None = None
    halving: HalvingRule | None = None
    on_step: Callable[[int, int], None] | None = None
    on_epoch_stored: Callable[[int, float], None] | None = None
    """Told (epoch, accuracy) once an epoch's accuracy is stored, e.g. to report it to Ray Tune."""
    worker: str = "in-process"
    """Stored with each trial: which worker ran it (e.g. "worker 2", "ray")."""
    backend: str = "local"
    max_attempts: int = MAX_ATTEMPTS
    _latency_evaluator: Any = field(default=None, init=False, repr=False)

    # -- proposal ---------------------------------------------------------------------------
    def propose(self, trial: optuna.trial.Trial) -> ShuffleNetConfig:
        """The trial's config: a preset when the trial was enqueued for one, else sampled."""
        sampled = suggest(trial, self.space, self.budget_macs)
        preset = trial.user_attrs.get(R.PRESET)
        if preset:
            return get_preset(preset).replace(num_classes=self.space.num_classes, input_size=self.space.input_size)
        return sampled

    # -- the objective ----------------------------------------------------------------------
    def __call__(self, trial: optuna.trial.Trial) -> tuple[float, ...] | float:
        """Run the trial; a failure is stored as a one-line reason (and the search goes on)."""
        import optuna

        try:
            raise_if_interrupted()  # held while Optuna created the trial
            release_memory()  # what a previous trial that ran out of GPU memory still held
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            # Lost, not failed: the config is run again when the search resumes.
            trial.set_user_attr(R.FAIL_REASON, INTERRUPTED_BY_USER)
            trial.set_user_attr(R.LOST, True)
            retry_lost_trial(trial.study, trial, INTERRUPTED_BY_USER, self.max_attempts, count_attempt=False)
            raise
        except Exception as error:  # noqa: BLE001 - stored, then Optuna marks the trial FAIL
            text = str(error).strip().splitlines()
            trial.set_user_attr(R.FAIL_REASON, f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "))
            raise

    def _run(self, trial: optuna.trial.Trial) -> tuple[float, ...] | float:
        trial.set_user_attr(R.WORKER_HOST, socket.gethostname())
        trial.set_user_attr(R.WORKER_PID, os.getpid())
        trial.set_user_attr(R.WORKER_NAME, self.worker)
        trial.set_user_attr(R.BACKEND, self.backend)
        config = self.propose(trial)
        cost = complexity(config)
        trial.set_user_attr(R.CONFIG, config.to_dict())
        trial.set_user_attr(R.MACS, cost.macs)
        trial.set_user_attr(R.PARAMS, cost.params)
        trial.set_user_attr(R.WIDTH, config.stage_out_channels[0] / _paper_stage2(config))
        trial.set_user_attr(R.EVALUATOR, self.evaluator.name)
        over_budget = cost.macs - self.budget_macs
        trial.set_constraint("macs_over_budget", float(over_budget))
        latency_ms = self._measure_latency(trial, config)
        latency_budget = None if self.latency is None else self.latency.budget_ms
        feasible = over_budget <= 0 and (latency_budget is None or latency_ms is None or latency_ms <= latency_budget)
        if not feasible:
            # Over a budget: counted and stored, but not worth training.
            trial.set_user_attr(R.SKIPPED, "over budget: not trained")
            return self._values(trial, 0.0, cost.mflops, latency_ms)
        earlier = self._earlier_result(trial, config)
        if earlier is not None:
            # Samplers re-propose configs; training is seeded, so the result would be the same.
            for key in R.RESULT_ATTRS:
                if key in earlier.user_attrs:
                    trial.set_user_attr(key, earlier.user_attrs[key])
            trial.set_user_attr(R.DUPLICATE_OF, earlier.number)
            return self._values(trial, float(earlier.user_attrs[R.SCORE]), cost.mflops, latency_ms)
        evaluation = self.evaluator.evaluate(config, on_epoch=self._epoch_callback(trial, cost.macs), on_step=self.on_step)
        self._store_evaluation(trial, evaluation)
        return self._values(trial, evaluation.score, cost.mflops, latency_ms)

    def _earlier_result(self, trial: optuna.trial.Trial, config: ShuffleNetConfig) -> optuna.trial.FrozenTrial | None:
        """A finished trial of this study that already evaluated ``config`` the same way."""
        import optuna

        wanted = config.to_dict()
        for other in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            attrs = other.user_attrs
            if attrs.get(R.CONFIG) == wanted and attrs.get(R.EVALUATOR) == self.evaluator.name and R.SCORE in attrs:
                return other
        return None

    def _values(self, trial: optuna.trial.Trial, score: float, mflops: float, latency_ms: float | None):
        values = {"accuracy": score, self.evaluator.objective_name: score, "mflops": mflops, "latency_ms": latency_ms}
        chosen = tuple(float(values[name]) for name in self.objectives)  # type: ignore[arg-type]
        return chosen[0] if len(chosen) == 1 else chosen

    def _store_evaluation(self, trial: optuna.trial.Trial, evaluation: Evaluation) -> None:
        if self.evaluator.objective_name == "accuracy":
            trial.set_user_attr(R.ACCURACY, evaluation.score)
            trial.set_user_attr(R.ACCURACY_SEEDS, evaluation.per_seed)
            if evaluation.score_std is not None:
                trial.set_user_attr(R.ACCURACY_STD, evaluation.score_std)
            trial.set_user_attr(R.LEARNING_CURVE, evaluation.learning_curve)
            trial.set_user_attr(R.EPOCHS, len(evaluation.learning_curve))
        trial.set_user_attr(R.SCORE, evaluation.score)
        trial.set_user_attr(R.TRAIN_SECONDS, round(evaluation.seconds, 3))
        if evaluation.placement is not None:
            trial.set_user_attr(R.ACCELERATOR, evaluation.placement)
        if evaluation.diverged:
            trial.set_user_attr(R.DIVERGED, True)
        if evaluation.int8 is not None:
            trial.set_user_attr(R.ACCURACY_INT8, evaluation.int8["accuracy"])
            trial.set_user_attr(R.INT8_AGREEMENT, evaluation.int8["agreement"])
        if evaluation.state_dict is not None and self.weights_dir is not None:
            import torch

            folder = self.weights_dir / trial.study.study_name
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"trial_{trial.number}.pt"
            torch.save(evaluation.state_dict, path)
            trial.set_user_attr(R.WEIGHTS_PATH, str(path.resolve()))

    def _epoch_callback(self, trial: optuna.trial.Trial, macs: int):
        import optuna

        curve: list[float] = []
        last_epoch = self.evaluator.epochs - 1

        def on_epoch(epoch: int, accuracy: float) -> None:
            curve.append(accuracy)
            trial.set_user_attr(R.LEARNING_CURVE, list(curve))
            if self.on_epoch_stored is not None:
                self.on_epoch_stored(epoch, accuracy)
            if epoch >= last_epoch:
                return  # the result is in: stopping now would only throw it away
            if len(self.objectives) == 1:
                trial.report(accuracy, epoch)
                if trial.should_prune():
                    trial.set_user_attr(R.PRUNED_BY, f"successive halving pruner after epoch {epoch + 1}")
                    raise optuna.TrialPruned(f"pruned by the pruner after epoch {epoch + 1}")
            elif self.halving is not None and self.halving.should_stop(trial.study, trial.number, macs, epoch, accuracy):
                trial.set_user_attr(R.PRUNED_BY, f"successive halving among MFLOPs peers after epoch {epoch + 1}")
                raise optuna.TrialPruned(f"successive halving: below its MFLOPs peers after epoch {epoch + 1}")

        return on_epoch

    def _measure_latency(self, trial: optuna.trial.Trial, config: ShuffleNetConfig) -> float | None:
        if self.latency is None:
            return None
        from nas.latency import DeviceUnavailableError

        if self._latency_evaluator is None:
            self._latency_evaluator = self.latency.evaluator()
        try:
            result = self._latency_evaluator.latency(config)
        except DeviceUnavailableError as error:
            # No config can be measured: stop the search with the reason instead of failing every trial.
            trial.study.set_user_attr(R.STOPPED_REASON, str(error))
            trial.study.stop()
            raise
        trial.set_user_attr(R.LATENCY_MS, result.median_ms)
        trial.set_user_attr(R.LATENCY_SOURCE, result.source)
        trial.set_user_attr(R.LATENCY_DEVICE, result.device)
        trial.set_user_attr(R.LATENCY_P10_MS, result.p10_ms)
        trial.set_user_attr(R.LATENCY_P90_MS, result.p90_ms)
        trial.set_user_attr(R.LATENCIES, {R.latency_key(result.runtime, result.precision): {
            "median_ms": result.median_ms, "source": result.source}})
        if self.latency.budget_ms is not None:
            trial.set_constraint("latency_over_budget_ms", float(result.median_ms - self.latency.budget_ms))
        return result.median_ms


def _paper_stage2(config: ShuffleNetConfig) -> int:
    return PAPER_STAGE2_CHANNELS.get(config.groups, config.stage_out_channels[0])


def make_runner(
    settings: SearchSettings,
    budget: Budget,
    *,
    worker: str,
    backend: str = "local",
    on_step: Callable[[int, int], None] | None = None,
    on_epoch_stored: Callable[[int, float], None] | None = None,
    early_stopping: bool = True,
) -> TrialRunner:
    """The runner every backend uses for ``budget``'s study (``early_stopping=False`` when the
    backend stops trials itself, as Ray's ASHA does)."""
    halving = HalvingRule() if early_stopping and settings.halving and len(settings.objectives) > 1 else None
    return TrialRunner(
        space=settings.space,
        budget_macs=budget.macs,
        evaluator=settings.evaluator,
        objectives=settings.objectives,
        weights_dir=settings.runs_dir / "weights" if settings.keep_weights else None,
        latency=settings.latency,
        halving=halving,
        on_step=on_step,
        on_epoch_stored=on_epoch_stored,
        worker=worker,
        backend=backend,
        max_attempts=settings.max_attempts,
    )

"""The search engine: one Optuna study per budget, in-process or in worker processes.

Studies live in the storage (nas/storage.py) and are resumed by name: running the same
command again continues until the study holds ``n_trials`` finished trials. Trials left
RUNNING by a process that no longer exists (kill -9, a crash) are marked FAIL first.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from shufflenet_core import PRESETS, complexity
from search_spaces import DesignSpace, knobs_of, sample_configs, start_design

from nas import __version__
from nas import records as R
from nas.errors import UserError
from nas.evaluation.base import AccuracyEvaluator
from nas.engine.early_stopping import HalvingRule
from nas.engine.trial_runner import STOPPED_REASON, WORKER_HOST, WORKER_PID, LatencySettings, TrialRunner
from nas.storage import open_storage

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Budget",
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "SearchSettings",
    "fail_orphaned_trials",
    "make_sampler",
    "prepare_study",
    "run_trials",
    "start_trials_for",
    "startup_count",
    "study_name_for",
]

SAMPLERS = ("tpe", "nsga2", "random")
DEFAULT_SAMPLER = "tpe"
FINISHED_STATES = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class Budget:
    label: str
    macs: int


@dataclass
class SearchSettings:
    """Everything a search run needs; picklable so worker processes get the same settings."""

    budgets: tuple[Budget, ...]
    evaluator: AccuracyEvaluator
    space: DesignSpace = field(default_factory=DesignSpace)
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 64
    timeout: float | None = None
    seed: int | None = 0
    sampler: str = DEFAULT_SAMPLER
    workers: int = 1
    threads: int | None = None
    objectives: tuple[str, ...] = ("accuracy", "mflops")
    presets: bool = True
    start_trials: int | None = None
    """Space-filling first trials (search_spaces.design); None: the sampler's start-up count."""
    prescreen: int = 0
    keep_weights: bool = False
    runs_dir: Path = Path("runs")
    latency: LatencySettings | None = None
    halving: bool = True
    data_spec: str = "fashion-mnist"


def study_name_for(settings: SearchSettings, budget: Budget) -> str:
    if settings.study_name:
        return settings.study_name if len(settings.budgets) == 1 else f"{settings.study_name}-{budget.label}"
    return f"shufflenet-{budget.label}"


def directions_for(objectives: Sequence[str]) -> list[str]:
    return ["maximize" if index == 0 else "minimize" for index, _ in enumerate(objectives)]


def startup_count(n_trials: int) -> int:
    """Trials a model-based sampler takes before it models: a third of a short search, 4 to 10."""
    return max(4, min(10, n_trials // 3))


def start_trials_for(settings: SearchSettings) -> int:
    """How many space-filling trials open a study.

    By default the model-based samplers (tpe, nsga2) replace their random start-up with the
    design; random search stays purely random (it is the baseline samplers are judged by), and
    ``--prescreen`` starts from its own synflow-screened candidates instead.
    """
    if settings.start_trials is not None:
        wanted = settings.start_trials
    elif settings.sampler == "random" or settings.prescreen:
        wanted = 0
    else:
        wanted = startup_count(settings.n_trials)
    return min(wanted, settings.n_trials)


def make_sampler(name: str, seed: int | None, n_objectives: int, n_trials: int) -> "optuna.samplers.BaseSampler":
    """Samplers tuned for short searches (tens of trials, not thousands)."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        startup = startup_count(n_trials)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)
    if name == "nsga2":
        population = max(4, min(20, n_trials // 3))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    raise UserError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def _runner(settings: SearchSettings, budget: Budget, on_step=None) -> TrialRunner:
    halving = HalvingRule() if settings.halving and len(settings.objectives) > 1 else None
    return TrialRunner(
        space=settings.space,
        budget_macs=budget.macs,
        evaluator=settings.evaluator,
        objectives=settings.objectives,
        weights_dir=settings.runs_dir / "weights" if settings.keep_weights else None,
        latency=settings.latency,
        halving=halving,
        on_step=on_step,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_trials(study: "optuna.Study") -> list[int]:
    """Mark FAIL the RUNNING trials whose process on this host is gone; return their numbers."""
    import optuna

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = trial.user_attrs.get(WORKER_PID)
        if trial.user_attrs.get(WORKER_HOST) != host or pid is None or _pid_alive(int(pid)):
            continue
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, R.FAIL_REASON, f"interrupted: its process (pid {pid}) ended")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        failed.append(trial.number)
    return failed


def _study_attrs(settings: SearchSettings, budget: Budget) -> dict:
    attrs = {
        R.SHUFFLENAS_VERSION: __version__,
        R.BUDGET_MACS: budget.macs,
        R.BUDGET_LABEL: budget.label,
        R.OBJECTIVES: list(settings.objectives),
        R.SPACE: settings.space.to_dict(),
        R.EVALUATOR_SPEC: settings.evaluator.spec(),
        R.DATA_SPEC: settings.data_spec,
        R.SEED: settings.seed,
        "sampler": settings.sampler,
        "accuracy_noise_sd": getattr(settings.evaluator, "known_seed_sd", lambda: None)(),
    }
    if settings.latency is not None:
        attrs[R.LATENCY_BUDGET_MS] = settings.latency.budget_ms
        attrs["latency_device_spec"] = settings.latency.device
    return attrs


def _check_compatible(study: "optuna.Study", expected: dict) -> None:
    """A resumed study must be the same experiment: same budget, objectives and evaluator."""
    stored = study.user_attrs
    for key in (R.BUDGET_MACS, R.OBJECTIVES, R.EVALUATOR_SPEC, R.SPACE, R.DATA_SPEC):
        if key in stored and stored[key] != expected[key]:
            raise UserError(
                f"study {study.study_name!r} already exists with a different {key} "
                f"({_short(stored[key])} vs {_short(expected[key])}); use another --study name"
            )


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def preset_names_for(space: DesignSpace, budget_macs: int) -> list[str]:
    """Paper presets inside the budget (and above half of it), whose knobs the space allows."""
    names = []
    for name, preset in PRESETS.items():
        config = preset.config.replace(num_classes=space.num_classes, input_size=space.input_size)
        macs = complexity(config).macs
        allowed = (
            config.groups in space.groups
            and config.bottleneck_ratio in space.bottleneck_ratios
            and config.stem_channels in space.stem_channels
            and len(config.stage_depths) == len(space.stage_depths)
            and all(lo <= d <= hi for d, (lo, hi) in zip(config.stage_depths, space.stage_depths))
        )
        if allowed and budget_macs / 2 <= macs <= budget_macs:
            names.append(name)
    return names


def prepare_study(settings: SearchSettings, budget: Budget, storage) -> "optuna.Study":
    """Create or resume the study for ``budget``: attributes, orphans, presets, prescreen."""
    import optuna

    name = study_name_for(settings, budget)
    directions = directions_for(settings.objectives)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if name in existing and list(d.name.lower() for d in existing[name].directions) != directions:
        raise UserError(f"study {name!r} already exists with other objectives; use another --study name")
    sampler = make_sampler(settings.sampler, settings.seed, len(directions), settings.n_trials)
    if len(directions) == 1:
        study = optuna.create_study(
            study_name=name, storage=storage, direction=directions[0], sampler=sampler, load_if_exists=True,
            pruner=optuna.pruners.SuccessiveHalvingPruner() if settings.halving else optuna.pruners.NopPruner(),
        )
    else:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler, load_if_exists=True)
    fresh = not study.get_trials(deepcopy=False)
    expected = _study_attrs(settings, budget)
    _check_compatible(study, expected)
    for key, value in expected.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    study.set_user_attr(STOPPED_REASON, None)  # set by a run that had to stop (e.g. device gone)
    fail_orphaned_trials(study)
    if settings.presets and not study.user_attrs.get("presets_enqueued"):
        for preset in preset_names_for(settings.space, budget.macs):
            study.enqueue_trial(knobs_of(PRESETS[preset].config), user_attrs={R.PRESET: preset}, skip_if_exists=False)
        study.set_user_attr("presets_enqueued", True)
    if "start_design" not in study.user_attrs:  # a study made before the design gets none on resume
        room = settings.n_trials - len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        count = min(start_trials_for(settings), max(0, room)) if fresh else 0  # presets go first
        design = start_design(settings.space, count, seed=settings.seed)
        for index, knobs in enumerate(design):
            study.enqueue_trial(knobs, user_attrs={R.START_DESIGN: index}, skip_if_exists=True)
        study.set_user_attr("start_design", len(design))
    if settings.prescreen and not study.user_attrs.get("prescreened"):
        _prescreen(study, settings, budget)
    return study


def _prescreen(study: "optuna.Study", settings: SearchSettings, budget: Budget) -> None:
    """Score ``prescreen`` random budget-filling candidates with synflow; enqueue the best."""
    from nas.evaluation.zero_cost import ZeroCostEvaluator

    scorer = ZeroCostEvaluator("synflow", data_spec=settings.data_spec)
    candidates = sample_configs(settings.space, budget.macs, settings.prescreen, seed=settings.seed or 0)
    scored = []
    for config, knobs in candidates:
        if complexity(config).macs <= budget.macs:
            scored.append((scorer.evaluate(config).score, knobs))
    scored.sort(key=lambda item: item[0], reverse=True)
    for score, knobs in scored[: max(1, settings.n_trials // 2)]:
        study.enqueue_trial(knobs, user_attrs={"prescreen_synflow": score})
    study.set_user_attr("prescreened", settings.prescreen)


def count_finished(study: "optuna.Study") -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED_STATES)


def run_trials(
    settings: SearchSettings,
    budget: Budget,
    study: "optuna.Study",
    n_trials: int,
    *,
    timeout: float | None,
    on_trial: Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> None:
    """Run ``n_trials`` trials of ``study`` in this process."""
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    runner = _runner(settings, budget, on_step=on_step)
    callbacks = [on_trial] if on_trial else []
    study.optimize(runner, n_trials=n_trials, timeout=timeout, callbacks=callbacks, catch=(Exception,), gc_after_trial=False)


def worker_main(settings: SearchSettings, budget: Budget, n_trials: int, worker_index: int, timeout: float | None) -> None:
    """Entry point of a worker process: its own storage connection and sampler seed."""
    _die_with_parent()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(settings.storage)
    directions = directions_for(settings.objectives)
    seed = None if settings.seed is None else settings.seed + 1000 * (worker_index + 1)
    sampler = make_sampler(settings.sampler, seed, len(directions), settings.n_trials)
    study = optuna.load_study(study_name=study_name_for(settings, budget), storage=storage, sampler=sampler)
    try:
        run_trials(settings, budget, study, n_trials, timeout=timeout)
    except KeyboardInterrupt:
        pass


def _die_with_parent() -> None:
    """Linux: take SIGKILL when the parent dies, so kill -9 of `nas search` stops its workers."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def split_trials(total: int, workers: int) -> list[int]:
    """Trials per worker, summing exactly to ``total`` (no overshoot, no duplicates)."""
    base, extra = divmod(total, workers)
    return [base + (1 if index < extra else 0) for index in range(workers) if base + (1 if index < extra else 0) > 0]


def eta_seconds(durations: Sequence[float], remaining: int, workers: int) -> float | None:
    if not durations or remaining <= 0:
        return None
    recent = list(durations)[-8:]
    return sum(recent) / len(recent) * math.ceil(remaining / max(1, workers))


"""Turns `nas search` arguments into settings, runs the studies with progress, prints results.

All argument checking happens before anything is written, so bad input never touches a
stored study.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rich.console import Console

from nas.console import output_console
from nas.budget import format_budget, parse_budget
from nas.errors import UserError
from nas.engine.trial_runner import STOPPED_REASON
from nas.engine.study import SAMPLERS, Budget, SearchSettings

__all__ = ["SearchRequest", "build_settings", "run_search_command"]


@dataclass
class SearchRequest:
    budget: list
    n_trials: int
    timeout: Optional[float]
    seed: int
    sampler: str
    storage: Optional[str]
    study: Optional[str]
    workers: int
    threads: int
    space_file: Optional[Path]
    data: str
    evaluator: str
    epochs: int
    resolution: int
    train_size: Optional[int]
    val_size: Optional[int]
    batch_size: int
    seeds: int
    objectives: str
    presets: bool
    prescreen: int
    keep_weights: bool
    early_stopping: bool
    device: Optional[str]
    latency_budget: Optional[str]
    lut: Optional[Path]
    runs_dir: Path
    quiet: bool
    backend: str = "local"
    ray_address: Optional[str] = None
    start_trials: Optional[int] = None
    cpus_per_trial: Optional[int] = None
    max_concurrent: Optional[int] = None


def _budgets(texts: list[str], space) -> tuple[Budget, ...]:
    from shufflenet_core import complexity

    budgets = []
    smallest = complexity(space.smallest_config()).macs
    for text in texts:
        macs = parse_budget(text)
        if macs < smallest:
            raise UserError(
                f"budget {text} is below the smallest model of the design space "
                f"({smallest / 1e6:.2f} MFLOPs at {space.input_size}x{space.input_size}); raise it or narrow the space"
            )
        label = text.strip() if text.strip()[-1:].upper() in ("M", "G") else format_budget(macs)
        budgets.append(Budget(label=label.replace(" ", ""), macs=macs))
    labels = [b.label for b in budgets]
    if len(set(labels)) != len(labels):
        raise UserError(f"the same budget is given twice: {', '.join(labels)}")
    return tuple(budgets)


def _objectives(text: str, has_device: bool) -> tuple[str, ...]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    mapping = {"accuracy": "accuracy", "mflops": "mflops", "flops": "mflops", "macs": "mflops", "latency": "latency_ms", "latency_ms": "latency_ms"}
    unknown = [n for n in names if n not in mapping]
    if not names or unknown or names[0] != "accuracy" or len(set(names)) != len(names):
        raise UserError(f"--objectives {text!r}: list accuracy first, then any of mflops, latency (e.g. accuracy,mflops)")
    objectives = tuple(mapping[n] for n in names)
    if "latency_ms" in objectives and not has_device:
        raise UserError("a latency objective needs --device (e.g. --device local)")
    return objectives


def _evaluator(request: SearchRequest, data_spec: str):
    from nas.evaluation import ProxyTrainingEvaluator, ZeroCostEvaluator
    from nas.evaluation.training import Recipe

    try:
        recipe = Recipe(
            epochs=request.epochs, resolution=request.resolution, train_size=request.train_size,
            val_size=request.val_size, batch_size=request.batch_size,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    kind, _, method = request.evaluator.partition(":")
    if kind == "proxy" and not method:
        return ProxyTrainingEvaluator(
            data_spec=data_spec, recipe=recipe, seeds=tuple(range(request.seed, request.seed + request.seeds)),
            keep_weights=request.keep_weights,
        )
    if kind == "zero-cost":
        try:
            return ZeroCostEvaluator(method or "synflow", data_spec=data_spec, recipe=recipe)
        except ValueError as error:
            raise UserError(str(error)) from None
    raise UserError(f"unknown evaluator {request.evaluator!r}; use proxy, zero-cost or zero-cost:naswot")


def _latency(request: SearchRequest):
    from nas.engine.trial_runner import LatencySettings

    if request.device is None:
        if request.latency_budget or request.lut:
            raise UserError("--latency-budget and --lut need --device (e.g. --device local)")
        return None
    try:
        from nas.latency import parse_latency
    except ImportError:
        raise UserError("latency support is not installed: pip install 'shufflenas[latency]'") from None
    budget_ms = parse_latency(request.latency_budget) if request.latency_budget else None
    if request.lut is not None and not request.lut.is_file():
        raise UserError(f"no lookup table at {request.lut}; build one with `nas latency build-lut`")
    return LatencySettings(device=request.device, lut_path=str(request.lut) if request.lut else None, budget_ms=budget_ms)


def build_settings(request: SearchRequest) -> SearchSettings:
    """Validate every argument (cheaply) and assemble the settings."""
    from search_spaces import DesignSpace, SpaceFileError, load_space

    from nas.evaluation.data import validate_data_spec
    from nas.backends.parallelism import default_parallelism
    from nas.storage import resolve_storage_url

    if request.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {request.sampler!r}; use one of {', '.join(SAMPLERS)}")
    try:
        space = load_space(request.space_file) if request.space_file else DesignSpace()
    except SpaceFileError as error:
        raise UserError(str(error)) from None
    budgets = _budgets(request.budget, space)
    data_spec = validate_data_spec(request.data)
    latency = _latency(request)
    objectives = _objectives(request.objectives, latency is not None)
    evaluator = _evaluator(request, data_spec)
    objectives = (evaluator.objective_name,) + objectives[1:]  # e.g. synflow for zero-cost
    storage = request.storage or str(request.runs_dir / "shufflenas.db")
    resolve_storage_url(storage)
    default_workers, default_threads = default_parallelism(multiprocessing.cpu_count())
    workers = request.workers or default_workers
    workers = max(1, min(workers, request.n_trials))
    threads = request.threads or (default_threads if workers == default_workers else max(1, multiprocessing.cpu_count() // workers))
    return SearchSettings(
        budgets=budgets,
        evaluator=evaluator,
        space=space,
        storage=storage,
        study_name=request.study,
        n_trials=request.n_trials,
        timeout=request.timeout,
        seed=request.seed,
        sampler=request.sampler,
        workers=workers,
        threads=threads,
        objectives=objectives,
        presets=request.presets,
        start_trials=request.start_trials,
        prescreen=request.prescreen,
        keep_weights=request.keep_weights,
        runs_dir=request.runs_dir,
        latency=latency,
        halving=request.early_stopping,
        data_spec=data_spec,
    )


def run_search_command(request: SearchRequest) -> None:
    import optuna

    from nas.reporting.progress import SearchProgress
    from nas.storage import describe_storage, open_storage, resolve_storage_url

    from nas.backends.ray import ray_options_from

    ray_options = ray_options_from(request.backend, request.ray_address, request.cpus_per_trial, request.max_concurrent)
    settings = build_settings(request)
    if ray_options is not None:
        from nas.backends.ray.backend import run_ray_search

        run_ray_search(request, settings, ray_options)
        return
    console = output_console()
    # Failed trials are reported by the progress display with their stored one-line reason.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.latency is not None:
        _probe_device(console, settings.latency)
    storage = open_storage(settings.storage)
    url = resolve_storage_url(settings.storage)
    if hasattr(settings.evaluator, "dataset"):
        console.print(f"[dim]data: {settings.evaluator.dataset().describe()}[/dim]")
    console.print(
        f"[dim]storage: {describe_storage(url)} | evaluator: {settings.evaluator.name} | sampler: {settings.sampler} | "
        f"{settings.workers} worker(s) x {settings.threads} thread(s)[/dim]"
    )
    interrupted = False
    stopped = None
    studies: list = []
    for budget, study, remaining, left in studies_to_run(settings, storage, console, studies):
        with SearchProgress(console, study, settings, remaining, quiet=request.quiet) as progress:
            try:
                progress.run(budget, left)
            except KeyboardInterrupt:
                interrupted = True
        stopped = study.user_attrs.get(STOPPED_REASON)
        if interrupted or stopped:
            break
    _print_summary(console, studies, url)
    if stopped:
        raise UserError(f"search stopped: {stopped}")
    if interrupted:
        console.print("[yellow]interrupted: finished trials are kept; run the same command to resume[/yellow]")
        raise KeyboardInterrupt


def studies_to_run(settings: SearchSettings, storage, console: Console, studies: list):
    """Prepare each budget's study (appended to ``studies``); yield those with trials left to run
    as (budget, study, remaining trials, seconds left of --timeout or None)."""
    from nas.engine.study import count_finished, prepare_study

    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    for budget in settings.budgets:
        study = prepare_study(settings, budget, storage)
        studies.append((budget, study))
        remaining = settings.n_trials - count_finished(study)
        if remaining <= 0:
            console.print(f"study {study.study_name!r} already has {settings.n_trials} finished trials; raise --n-trials to continue")
            continue
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        yield budget, study, remaining, left


def _probe_device(console: Console, latency) -> None:
    """Fail fast, with the device's own reason, before any trial is started."""
    from nas.latency import open_device

    if latency.lut_path and latency.device in ("", "lut"):
        return
    info = open_device(latency.device, **latency.options).probe()
    described = ", ".join(f"{key} {info[key]}" for key in ("arch", "cpu_model", "cores", "onnxruntime") if info.get(key))
    console.print(f"[dim]latency device {latency.device}: {described}[/dim]")


def _print_summary(console: Console, studies, url: str) -> None:
    from nas.records import load_records, study_info
    from nas.reporting.summary import best_record, front_table, knob_summary, score_of, seed_noise, ties_with_best
    from nas.storage import describe_storage

    for budget, study in studies:
        records = load_records(study)
        info = study_info(study)
        console.print(front_table(records, info))
        states = {}
        for record in records:
            states[record.state] = states.get(record.state, 0) + 1
        console.print("trials: " + ", ".join(f"{count} {state.lower()}" for state, count in sorted(states.items())))
        best = best_record(records)
        if best is not None:
            presets = [r for r in records if r.preset and r.state == "COMPLETE" and score_of(r) is not None]
            line = f"best under {budget.label}: trial {best.number}, {info.objectives[0]} {score_of(best):.4f} at {best.mflops:.2f} MFLOPs ({knob_summary(best)})"
            console.print(line)
            noise = seed_noise(records, info) if info.objectives[0] == "accuracy" else None
            if noise:
                tied = ties_with_best(records, info, noise)
                console.print(
                    f"seed noise ~{noise:.4f}: gaps smaller than that are ties; {len(tied)} front trial(s) tie with the best "
                    f"({', '.join('#' + str(r.number) for r in tied)}); --seeds N trains each candidate N times"
                )
            if presets:
                top = max(presets, key=score_of)
                console.print(f"best paper preset: {top.preset}, {score_of(top):.4f} at {top.mflops:.2f} MFLOPs")
            console.print(
                f"[dim]next: nas dashboard --storage {describe_storage(url)} | "
                f"nas export --storage {describe_storage(url)} --study {study.study_name} --trial {best.number} --out model/[/dim]"
            )

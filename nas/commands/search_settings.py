"""``nas search`` arguments -> :class:`~nas.engine.settings.SearchSettings`, checked.

All argument checking happens here, before anything is written, so bad input never touches a
stored study: each problem is one :class:`~nas.errors.UserError` line (exit code 2).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.budget import format_budget, parse_budget
from nas.engine.samplers import SAMPLERS
from nas.engine.settings import Budget, LatencySettings, SearchSettings
from nas.errors import UserError
from search_spaces import DesignSpace

__all__ = ["SearchRequest", "backend_options", "build_settings"]


@dataclass
class SearchRequest:
    """The command line of ``nas search``, as typed (nothing checked yet)."""

    budget: list[str]
    n_trials: int
    timeout: float | None
    seed: int
    sampler: str
    storage: str | None
    study: str | None
    workers: int
    threads: int
    space_file: Path | None
    data: str
    evaluator: str
    epochs: int
    resolution: int
    train_size: int | None
    val_size: int | None
    batch_size: int
    seeds: int
    objectives: str
    presets: bool
    prescreen: int
    keep_weights: bool
    early_stopping: bool
    device: str | None
    latency_budget: str | None
    lut: Path | None
    runs_dir: Path
    quiet: bool
    backend: str = "local"
    ray_address: str | None = None
    start_trials: int | None = None
    cpus_per_trial: int | None = None
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None
    num_gpus: int | None = None
    worker_restarts: int = 3
    final: int | None = None
    final_time: float = 120.0
    accelerator: str = "auto"
    train_precision: str = "auto"
    runtime: str = "onnxruntime"
    precision: str = "fp32"


def _budgets(texts: list[str], space: DesignSpace) -> tuple[Budget, ...]:
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


def _int8_runtime(request: SearchRequest) -> str | None:
    """The runtime whose quantization scores each trained trial (``--precision int8``), if any."""
    return request.runtime if request.precision == "int8" else None


def _evaluator(request: SearchRequest, data_spec: str) -> Any:
    from nas.evaluation.base import EvaluatorOptions, create_evaluator
    from nas.evaluation.training import Recipe

    try:
        recipe = Recipe(
            epochs=request.epochs, resolution=request.resolution, train_size=request.train_size,
            val_size=request.val_size, batch_size=request.batch_size,
        )
        options = EvaluatorOptions(
            data_spec=data_spec, recipe=recipe, seeds=tuple(range(request.seed, request.seed + request.seeds)),
            keep_weights=request.keep_weights, accelerator=request.accelerator, train_precision=request.train_precision,
            int8_runtime=_int8_runtime(request),
        )
        return create_evaluator(request.evaluator, options)
    except ValueError as error:
        raise UserError(str(error)) from None


def _check_deployment(request: SearchRequest, *, trained: bool) -> None:
    """--runtime and --precision mean something for this search (int8 accuracy needs training)."""
    if request.device is not None:
        return
    if request.precision == "int8" and not trained:
        raise UserError("--precision int8 without --device applies to trained accuracy only: use the proxy evaluator, "
                        "or give --device for int8 latency")
    if request.runtime != "onnxruntime" and request.precision != "int8":
        raise UserError(f"--runtime {request.runtime} applies to latency (--device) or int8 accuracy (--precision int8)")


def _latency(request: SearchRequest) -> LatencySettings | None:
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
    if request.lut is not None:
        from nas.latency import LatencyLUT

        LatencyLUT.load(request.lut).check_matches(request.runtime, request.precision, 1, path=request.lut)
    return LatencySettings(device=request.device, lut_path=str(request.lut) if request.lut else None, budget_ms=budget_ms,
                           runtime=request.runtime, precision=request.precision)


def build_settings(request: SearchRequest) -> SearchSettings:
    """Validate every argument (cheaply) and assemble the settings."""
    from nas.backends.parallelism import default_parallelism
    from nas.evaluation.accelerator import check_accelerator
    from nas.evaluation.data import validate_data_spec
    from nas.storage import resolve_storage_url
    from search_spaces import DesignSpace, SpaceFileError, load_space

    if request.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {request.sampler!r}; use one of {', '.join(SAMPLERS)}")
    try:
        space = load_space(request.space_file) if request.space_file else DesignSpace()
    except SpaceFileError as error:
        raise UserError(str(error)) from None
    budgets = _budgets(request.budget, space)
    data_spec = validate_data_spec(request.data)
    check_accelerator(request.accelerator, request.train_precision)  # a missing GPU: one line, before any write
    from nas.latency.measure import check_runtime

    check_runtime(request.runtime, request.precision)
    latency = _latency(request)
    objectives = _objectives(request.objectives, latency is not None)
    evaluator = _evaluator(request, data_spec)
    _check_deployment(request, trained=evaluator.objective_name == "accuracy")
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
        worker_restarts=request.worker_restarts,
        int8_runtime=_int8_runtime(request) if evaluator.objective_name == "accuracy" else None,
    )


def backend_options(request: SearchRequest) -> tuple[str, Any]:
    """The backend's name and options, checked (cheaply, before anything is written)."""
    from nas.backends import BACKENDS
    from nas.backends.ray import ray_options_from

    name = (request.backend or "local").strip().lower()
    if name not in BACKENDS:
        raise UserError(f"unknown backend {request.backend!r}; use {' or '.join(BACKENDS)}")
    ray_given = [
        flag for flag, value in (
            ("--ray-address", request.ray_address), ("--cpus-per-trial", request.cpus_per_trial),
            ("--max-concurrent", request.max_concurrent), ("--gpus-per-trial", request.gpus_per_trial),
            ("--num-gpus", request.num_gpus),
        ) if value is not None and value is not False
    ]
    if name != "ray":
        if ray_given:
            raise UserError(f"{', '.join(ray_given)} only apply with --backend ray")
        return name, None
    return name, ray_options_from(request.ray_address, request.cpus_per_trial, request.max_concurrent,
                                  request.gpus_per_trial, request.num_gpus)

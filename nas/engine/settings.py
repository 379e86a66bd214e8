"""What a search run is asked to do: budgets, evaluator, space, storage, sampler, workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.engine.samplers import DEFAULT_SAMPLER
from search_spaces import DesignSpace

if TYPE_CHECKING:
    from nas.evaluation.base import AccuracyEvaluator

__all__ = ["Budget", "LatencySettings", "SearchSettings", "study_name_for"]


@dataclass(frozen=True)
class Budget:
    label: str
    macs: int


@dataclass(frozen=True)
class LatencySettings:
    """Latency as a constraint and/or objective, from a device or its lookup table."""

    device: str
    lut_path: str | None = None
    budget_ms: float | None = None
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    runtime: str = "onnxruntime"
    """What the latency is in: onnxruntime (an ONNX file) or executorch (a .pte, XNNPACK)."""
    precision: str = "fp32"
    """fp32 or int8 (static post-training quantization), for latency and, with a trained
    evaluator, the int8 accuracy each trial reports beside its float32 one."""

    def evaluator(self) -> Any:
        """The :class:`nas.latency.LatencyEvaluator` these settings describe (opens the device)."""
        from nas.latency import LatencyEvaluator, open_device

        device = open_device(self.device, **self.options)
        return LatencyEvaluator(device, lut=self.lut_path, threads=self.threads, runtime=self.runtime,
                                precision=self.precision)


MAX_ATTEMPTS = 3
"""A trial lost to its worker (died, killed, went silent) runs again, up to this many times in
all; after that its failure counts like any other, so a config that kills its worker cannot
keep a search going forever."""
WORKER_RESTARTS = 3
"""Default number of times the local backend replaces a worker process that died."""


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
    worker_restarts: int = WORKER_RESTARTS
    max_attempts: int = MAX_ATTEMPTS
    int8_runtime: str | None = None
    """``--precision int8`` with a trained evaluator: each trial's int8 accuracy is measured as
    this runtime quantizes (the evaluator does it; the study records how)."""


def study_name_for(settings: SearchSettings, budget: Budget) -> str:
    if settings.study_name:
        return settings.study_name if len(settings.budgets) == 1 else f"{settings.study_name}-{budget.label}"
    return f"shufflenet-{budget.label}"

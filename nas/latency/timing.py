"""What a device is asked (:class:`RunSettings`) and what it answers (:class:`Timing`, whose
:class:`Stats` are the median, p10, p90 and spread of the timed runs)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from nas.errors import UserError
from nas.latency.errors import DeviceError

__all__ = ["RunSettings", "Stats", "Timing", "summarize"]


@dataclass(frozen=True)
class RunSettings:
    """How to time a model: practice is >= 10 warm-ups, >= 50 runs, one thread, batch 1."""

    threads: int = 1
    warmup: int = 10
    runs: int = 50
    rounds: int = 1
    outputs: bool = False
    timeout_s: float = 600.0
    clock: str = "auto"
    """"wall", "cpu" (the runner thread's CPU time), or "auto": cpu with one thread, else wall.
    With one thread ONNX Runtime computes on the calling thread, so its CPU time is the
    latency an idle device shows, and time a shared machine gives to others is left out."""

    def __post_init__(self) -> None:
        if self.threads < 1 or self.warmup < 0 or self.runs < 1 or self.rounds < 1:
            raise UserError("threads and runs must be >= 1, warm-ups >= 0")
        if self.clock not in ("auto", "wall", "cpu"):
            raise UserError(f"clock must be auto, wall or cpu, got {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise UserError("--clock cpu times one thread; use it with --threads 1 (or --clock wall)")

    @property
    def effective_clock(self) -> str:
        if self.clock == "auto":
            return "cpu" if self.threads == 1 else "wall"
        return self.clock

    def runner_args(self) -> list[str]:
        args = ["--threads", str(self.threads), "--warmup", str(self.warmup), "--runs", str(self.runs),
                "--rounds", str(self.rounds), "--clock", self.effective_clock]
        return args + (["--outputs"] if self.outputs else [])


@dataclass(frozen=True)
class Stats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    spread: float
    """(p90 - p10) / median: how noisy the device was."""
    runs: int


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(times_ms: Sequence[float]) -> Stats:
    values = sorted(float(value) for value in times_ms)
    if not values:
        raise DeviceError("the device returned no timings")
    median = statistics.median(values)
    p10, p90 = _percentile(values, 0.10), _percentile(values, 0.90)
    return Stats(median, p10, p90, (p90 - p10) / median if median > 0 else 0.0, len(values))


@dataclass(frozen=True)
class Timing:
    """One model's timings on a device (and its output, when asked for)."""

    model: str
    times_ms: tuple[float, ...]
    output: tuple[float, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    stats_override: Stats | None = field(default=None, compare=False)
    """Set by devices whose tool reports only percentiles (adb), not every run."""

    @property
    def stats(self) -> Stats:
        return self.stats_override or summarize(self.times_ms)

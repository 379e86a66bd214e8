"""What a device is asked (:class:`RunSettings`) and what it answers (:class:`Timing`, whose
:class:`Stats` are the median, p10, p90 and spread of the timed runs)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nas.errors import UserError
from nas.latency.errors import DeviceError

__all__ = ["ESTIMATORS", "Estimator", "RunSettings", "Stats", "Timing", "check_estimator", "estimate_ms", "summarize"]


@dataclass(frozen=True)
class RunSettings:
    """How to time a model: practice is >= 10 warm-ups, >= 50 runs, one thread, batch 1."""

    threads: int = 1
    warmup: int = 10
    runs: int = 50
    rounds: int = 1
    outputs: bool = False
    layout: bool = False
    """Also report each ONNX model's :attr:`Timing.unblocked_params` (the lookup table's build asks)."""
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
        return args + (["--outputs"] if self.outputs else []) + (["--layout"] if self.layout else [])


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
    unblocked_params: int | None = None
    """Weights of its convolutions ONNX Runtime runs outside its blocked (NCHWc) layout on the
    device, when asked (:attr:`RunSettings.layout`) and known."""
    stats_override: Stats | None = field(default=None, compare=False)
    """Set by devices whose tool reports only percentiles (adb), not every run."""

    @property
    def stats(self) -> Stats:
        return self.stats_override or summarize(self.times_ms)


@dataclass(frozen=True)
class Estimator:
    """One way to reduce a model's timed runs to one latency figure."""

    from_runs: Callable[[Sequence[float], int], float]
    """(the runs in the order timed, the number of interleaved rounds) -> ms"""
    from_stats: Callable[[Stats], float]
    """The figure from a tool that reports percentiles only (adb's perf test)."""
    description: str
    """What the figure is, after "each model's": ``the 10th percentile of its runs``."""


def _best_round_median(times: Sequence[float], rounds: int) -> float:
    from nas.latency.runner import round_sizes

    medians, start = [], 0
    for size in round_sizes(len(times), rounds):
        medians.append(statistics.median(times[start:start + size]))
        start += size
    return min(medians)


ESTIMATORS: dict[str, Estimator] = {
    "p10": Estimator(lambda times, rounds: _percentile(sorted(times), 0.10), lambda stats: stats.p10_ms,
                     "the 10th percentile of its runs"),
    "best_round_median": Estimator(_best_round_median, lambda stats: stats.median_ms,
                                   "the median of its fastest interleaved round"),
    "median": Estimator(lambda times, rounds: statistics.median(times), lambda stats: stats.median_ms,
                        "the median of its runs"),
}
"""How a lookup table reduces each model's runs to one figure (see :func:`estimate_ms`); the
first is ``nas latency build-lut``'s default."""


def check_estimator(estimator: str) -> Estimator:
    """The estimator named ``estimator``, or the one-line error a user sees for a wrong name."""
    if estimator not in ESTIMATORS:
        raise UserError(f"--estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    return ESTIMATORS[estimator]


def estimate_ms(timing: Timing, estimator: str, rounds: int) -> float:
    """One latency figure from ``timing``'s runs, by one of :data:`ESTIMATORS`.

    Interference on a shared machine only ever slows a run, and it comes and goes over seconds;
    ``rounds`` interleaved rounds (a session cycles through all its models once per round)
    spread it over all models. ``median`` keeps every disturbed run in play;
    ``best_round_median`` keeps the fastest round's median (a round that ran during a burst
    is left out; on an idle device every round agrees with the median); ``p10`` keeps the
    10th percentile (the device's undisturbed speed: on an idle device about 1% under the
    median, 0.8% in this machine's quietest session). None of them helps under load that
    lasts the whole session.
    """
    chosen = check_estimator(estimator)
    if not timing.times_ms:
        return chosen.from_stats(timing.stats)
    return chosen.from_runs(timing.times_ms, rounds)

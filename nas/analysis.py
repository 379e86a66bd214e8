"""Pure analysis of trial records: Pareto fronts, hypervolume, error EDFs, design-space knobs.

The CLI, the dashboard and the benchmarks all read a search's outcome through these functions,
so what a figure shows and what a test checks is the same computation. Nothing here touches
storage, Optuna or plotting; inputs are :class:`~nas.records.TrialRecord` lists or plain
numbers.

Directions are ``"maximize"`` or ``"minimize"`` per objective; internally every objective is
turned into a minimization by negating the maximized ones.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from nas.records import (
    ACCURACY_INT8,
    LATENCY_AXIS_PREFIX,
    OBJECTIVE_DIRECTIONS,
    Direction,
    TrialRecord,
    directions_for,
)
from shufflenet_core import PAPER_STAGE2_CHANNELS

__all__ = [
    "KNOBS",
    "OBJECTIVE_DIRECTIONS",
    "PAPER_BUDGETS_MFLOPS",
    "EDF",
    "dominates",
    "edf",
    "error_edf_by",
    "filter_records",
    "front_records",
    "hypervolume",
    "hypervolume_history",
    "knob_value",
    "objective_value",
    "pareto_front_indices",
    "permutation_p_value",
    "reference_point",
    "width_multiplier",
]

# The paper's three complexity levels (0.5x, 1x, 2x), in MFLOPs (MACs).
PAPER_BUDGETS_MFLOPS: tuple[float, ...] = (40.0, 140.0, 524.0)


KNOBS: tuple[str, ...] = ("groups", "width", "depth", "bottleneck_ratio", "stem_channels")

_DIRECTIONS = ("maximize", "minimize")


# --- significance of a gap between two noisy scores ------------------------------------------


def permutation_p_value(higher: Sequence[float], lower: Sequence[float], *, max_exact: int = 20_000,
                        samples: int = 20_000, seed: int = 0) -> float:
    """One-sided p-value of ``mean(higher) - mean(lower)`` under "the labels do not matter".

    The share of ways to split the pooled scores into groups of the same sizes whose gap is
    at least the observed one (the observed split counts). Exact when there are at most
    ``max_exact`` splits (6 + 6 seeds: 924), else ``samples`` seeded random splits. Needs no
    normality, which a handful of seeds cannot show.
    """
    if not higher or not lower:
        raise ValueError("both groups need at least one score")
    pooled = [float(v) for v in (*higher, *lower)]
    size, total = len(higher), sum(pooled)

    def gap(chosen: Sequence[int]) -> float:
        picked = sum(pooled[i] for i in chosen)
        return picked / size - (total - picked) / (len(pooled) - size)

    observed = gap(range(size)) - 1e-12  # ties with the observed split count as "as large"
    count = math.comb(len(pooled), size)
    if count <= max_exact:
        splits = itertools.combinations(range(len(pooled)), size)
        return sum(1 for chosen in splits if gap(chosen) >= observed) / count
    rng = random.Random(seed)
    hits = sum(1 for _ in range(samples) if gap(rng.sample(range(len(pooled)), size)) >= observed)
    return (hits + 1) / (samples + 1)


# --- generic multi-objective geometry --------------------------------------------------------


def _check_directions(directions: Sequence[str], dims: int) -> None:
    if len(directions) != dims:
        raise ValueError(f"{len(directions)} directions given for {dims} objectives")
    for direction in directions:
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")


def _as_minimized(point: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-float(v) if d == "maximize" else float(v) for v, d in zip(point, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    _check_directions(directions, len(a))
    ma, mb = _as_minimized(a, directions), _as_minimized(b, directions)
    return all(x <= y for x, y in zip(ma, mb, strict=True)) and any(x < y for x, y in zip(ma, mb, strict=True))


def pareto_front_indices(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order.

    Identical points do not dominate each other, so ties are all kept on the front.
    """
    if not points:
        return []
    _check_directions(directions, len(points[0]))
    minimized = [_as_minimized(p, directions) for p in points]
    front = []
    for i, candidate in enumerate(minimized):
        dominated = False
        for j, other in enumerate(minimized):
            if j != i and all(x <= y for x, y in zip(other, candidate, strict=True)) and any(
                x < y for x, y in zip(other, candidate, strict=True)
            ):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def _hypervolume_minimized(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """Volume dominated by ``points`` (all strictly better than ``reference``), all minimized.

    Slices along the last objective (HSO); exact, fine for the few hundred points of a study.
    """
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:
        volume, best_y = 0.0, reference[1]
        for x, y in sorted(points):
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return volume
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        depth = upper - point[-1]
        if depth > 0:
            volume += depth * _hypervolume_minimized([p[:-1] for p in ordered[: i + 1]], reference[:-1])
    return volume


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]) -> float:
    """Hypervolume of ``points`` against ``reference`` (any number of objectives, mixed directions).

    Points not strictly better than the reference in every objective contribute nothing.
    """
    _check_directions(directions, len(reference))
    ref = _as_minimized(reference, directions)
    inside = [
        q for q in (_as_minimized(p, directions) for p in points) if all(v < r for v, r in zip(q, ref, strict=True))
    ]
    front = [inside[i] for i in pareto_front_indices(inside, ["minimize"] * len(ref))]
    return _hypervolume_minimized(sorted(set(front)), ref)


# --- trial records -----------------------------------------------------------------------


def objective_value(record: TrialRecord, name: str) -> float | None:
    """The value of a named objective for a trial, or None when the trial lacks it.

    "score" (and a zero-cost method's name, e.g. "synflow") is the trial's score; "accuracy"
    only a trained accuracy.
    """
    if name in ("score", "synflow", "naswot"):
        return record.score
    if name == "accuracy":
        return record.accuracy if record.evaluated else None
    if name == "error":
        return None if record.accuracy is None else 1.0 - record.accuracy
    if name == "mflops":
        return record.mflops
    if name == "mparams":
        return None if record.params is None else record.params / 1e6
    if name == "params":
        return None if record.params is None else float(record.params)
    if name == "latency_ms":
        return None if record.latency_ms is None else float(record.latency_ms)
    if name.startswith(LATENCY_AXIS_PREFIX):
        return record.latencies.get(name[len(LATENCY_AXIS_PREFIX):])
    if name == "accuracy_int8":
        value = record.attrs.get(ACCURACY_INT8)
        return None if value is None or not record.evaluated else float(value)
    raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVE_DIRECTIONS)}")


def _directions_for(objectives: Sequence[str]) -> list[Direction]:
    return directions_for(list(objectives))


def _usable(records: Iterable[TrialRecord], objectives: Sequence[str], feasible_only: bool) -> list[TrialRecord]:
    return [
        r
        for r in records
        if r.evaluated
        and (r.feasible or not feasible_only)
        and all(objective_value(r, name) is not None for name in objectives)
    ]


def front_records(
    records: Iterable[TrialRecord],
    objectives: Sequence[str] = ("accuracy", "mflops"),
    *,
    feasible_only: bool = True,
) -> list[TrialRecord]:
    """The Pareto-optimal completed trials, sorted by the last objective then the first.

    With ``feasible_only`` (the default) infeasible trials (a constraint > 0) neither join nor
    shape the front: a model over budget is not an answer, however accurate.
    """
    usable = _usable(records, objectives, feasible_only)
    points = [[objective_value(r, name) for name in objectives] for r in usable]
    indices = pareto_front_indices(points, _directions_for(objectives))  # type: ignore[arg-type]
    front = [usable[i] for i in indices]
    return sorted(front, key=lambda r: (objective_value(r, objectives[-1]), objective_value(r, objectives[0]), r.number))


def reference_point(
    records: Iterable[TrialRecord],
    objectives: Sequence[str] = ("accuracy", "mflops"),
    *,
    limits: Mapping[str, float] | None = None,
) -> list[float]:
    """A reference point for hypervolume: 0 accuracy (for other maximized scores, the lowest
    seen minus 10% of the spread), and for each minimized objective its limit (e.g. the FLOP
    budget) when given, else 1.1 x the largest value seen (1.0 if none).
    """
    limits = dict(limits or {})
    records = [r for r in records if r.state == "COMPLETE"]
    values = {name: [objective_value(r, name) for r in records] for name in objectives}
    reference = []
    for name, direction in zip(objectives, _directions_for(objectives), strict=True):
        seen = [v for v in values[name] if v is not None]
        if name in limits:
            reference.append(float(limits[name]))
        elif direction == "maximize" and (name == "accuracy" or not seen):
            reference.append(0.0)
        elif direction == "maximize":
            low, high = min(seen), max(seen)
            reference.append(low - 0.1 * ((high - low) or abs(low) or 1.0))
        else:
            reference.append(1.1 * max(seen) if seen else 1.0)
    return reference


def hypervolume_history(
    records: Iterable[TrialRecord],
    reference: Sequence[float],
    objectives: Sequence[str] = ("accuracy", "mflops"),
    *,
    feasible_only: bool = True,
) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of every usable trial up to it)`` for each trial number.

    Every trial number appears (failed or infeasible ones repeat the previous value), so the
    curve is the search's convergence against the trial count.
    """
    directions = _directions_for(objectives)
    ordered = sorted(records, key=lambda r: r.number)
    usable_numbers = {r.number for r in _usable(ordered, objectives, feasible_only)}
    front: list[list[float]] = []
    history = []
    current = 0.0
    for record in ordered:
        if record.number in usable_numbers:
            point = [float(objective_value(record, name)) for name in objectives]  # type: ignore[arg-type]
            if not any(dominates(kept, point, directions) for kept in front):
                candidates = front + [point]
                front = [candidates[i] for i in pareto_front_indices(candidates, directions)]
                current = hypervolume(front, reference, directions)
        history.append((record.number, current))
    return history


@dataclass(frozen=True)
class EDF:
    """An empirical distribution function: fraction of models with error <= each error."""

    errors: tuple[float, ...]
    fractions: tuple[float, ...]

    def at(self, error: float) -> float:
        """F(error): the fraction of models whose error is at most ``error``."""
        return sum(1 for e in self.errors if e <= error) / len(self.errors) if self.errors else 0.0


def edf(errors: Iterable[float]) -> EDF:
    """The EDF of ``errors`` as in pycls (Radosavovic et al., 2020): sorted errors, i/n steps."""
    ordered = sorted(float(e) for e in errors)
    n = len(ordered)
    return EDF(tuple(ordered), tuple((i + 1) / n for i in range(n)))


def error_edf_by(
    records: Iterable[TrialRecord],
    key: Callable[[TrialRecord], object] | str = "groups",
    *,
    feasible_only: bool = False,
    include_presets: bool = False,
) -> dict[object, EDF]:
    """Top-1 error EDF (error in %, 100 x (1 - accuracy)) per group of trials.

    ``key`` is a knob name (see :func:`knob_value`) or a function of a record; trials whose key
    is None are left out. Presets are hand designs, not samples of the space: excluded by default.
    """
    key_of = (lambda r: knob_value(r, key)) if isinstance(key, str) else key
    groups: dict[object, list[float]] = {}
    for record in records:
        if record.accuracy is None or not record.evaluated or (feasible_only and not record.feasible):
            continue
        if record.preset and not include_presets:
            continue
        group = key_of(record)
        if group is None:
            continue
        groups.setdefault(group, []).append(100.0 * (1.0 - float(record.accuracy)))
    return {group: edf(errors) for group, errors in sorted(groups.items(), key=lambda item: str(item[0]))}


def width_multiplier(record: TrialRecord) -> float | None:
    """Width relative to the paper's 1x table: mean over stages of out_i / (C_g x 2^i)."""
    config = record.config
    if config is None or config.groups not in PAPER_STAGE2_CHANNELS:
        return None
    base = PAPER_STAGE2_CHANNELS[config.groups]
    ratios = [c / (base * 2**i) for i, c in enumerate(config.stage_out_channels)]
    return sum(ratios) / len(ratios)


def knob_value(record: TrialRecord, knob: str) -> float | int | None:
    """A design knob of a trial's config: groups, width, depth (total units), depth_stageN,
    bottleneck_ratio, stem_channels; None when the trial has no config."""
    config = record.config
    if config is None:
        return None
    if knob == "groups":
        return config.groups
    if knob == "width":
        return width_multiplier(record)
    if knob == "depth":
        return sum(config.stage_depths)
    if knob.startswith("depth_stage"):
        index = int(knob[len("depth_stage"):]) - 2  # paper numbering: the first stage is stage 2
        return config.stage_depths[index] if 0 <= index < len(config.stage_depths) else None
    if knob == "bottleneck_ratio":
        return config.bottleneck_ratio
    if knob == "stem_channels":
        return config.stem_channels
    raise ValueError(f"unknown knob {knob!r}; known: {', '.join(KNOBS)}, depth_stageN")


def filter_records(
    records: Iterable[TrialRecord],
    *,
    complete_only: bool = True,
    feasible: bool | None = None,
    include_presets: bool = True,
    groups: Iterable[int] | None = None,
    mflops_range: tuple[float, float] | None = None,
) -> list[TrialRecord]:
    """The records a view should show. ``feasible=None`` keeps both kinds; ranges are inclusive."""
    wanted_groups = None if groups is None else set(groups)
    kept = []
    for record in records:
        if complete_only and not record.evaluated:
            continue
        if feasible is not None and record.feasible != feasible:
            continue
        if record.preset and not include_presets:
            continue
        if wanted_groups is not None and (record.config is None or record.config.groups not in wanted_groups):
            continue
        if mflops_range is not None:
            mflops = record.mflops
            if mflops is None or not (mflops_range[0] <= mflops <= mflops_range[1]):
                continue
        kept.append(record)
    return kept

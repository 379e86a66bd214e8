"""A study's answer: its feasible Pareto front and its best trial, defined once.

The search summary, ``nas runs``, the dashboard, ``nas export --best`` and the benchmarks all
call these functions, so they cannot disagree about which trials form the front or which one
is best. A trial's score is :attr:`nas.records.TrialRecord.score` (accuracy when trained, the
zero-cost score otherwise); the geometry lives in :mod:`nas.analysis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nas.analysis import front_records
from nas.records import ACCURACY_NOISE_SD, ACCURACY_SEEDS, StudyInfo, TrialRecord

__all__ = [
    "BestChoice",
    "best_trial",
    "choose_best",
    "front_axes",
    "study_front",
    "seed_noise",
    "ties_with_best",
]


def front_axes(info: StudyInfo, x_axis: str | None = None) -> tuple[str, ...]:
    """The objectives a study's front is computed over: score, then MFLOPs (or ``x_axis``),
    then latency when the study searched with a latency objective."""
    if x_axis is not None:
        return ("score", x_axis)
    return ("score", "mflops") + (("latency_ms",) if "latency_ms" in info.objectives else ())


def study_front(
    records: Sequence[TrialRecord], info: StudyInfo, *, x_axis: str | None = None, with_duplicates: bool = False
) -> list[TrialRecord]:
    """The feasible Pareto front, sorted by MFLOPs (or ``x_axis``) then trial number.

    By default a re-proposed config (a trial that copied an earlier trial's result) is left
    out, so each architecture appears once; ``with_duplicates=True`` keeps every such copy.
    Presets are real evaluations under the same recipe and take part.
    """
    axes = front_axes(info, x_axis)
    pool = [r for r in records if with_duplicates or not r.duplicate]
    front = front_records(pool, axes)
    return sorted(front, key=lambda r: (_axis_value(r, axes[1]), r.number))


def _axis_value(record: TrialRecord, axis: str) -> float:
    from nas.analysis import objective_value

    value = objective_value(record, axis)
    return float("inf") if value is None else float(value)


@dataclass(frozen=True)
class BestChoice:
    """The best trial within budgets, or why there is none."""

    record: TrialRecord | None
    reason: str | None = None
    """When ``record`` is None: a sentence saying why (for a one-line error)."""


def choose_best(
    records: Sequence[TrialRecord],
    info: StudyInfo,
    *,
    budget_macs: int | None = None,
    latency_budget_ms: float | None = None,
    budget_label: str | None = None,
) -> BestChoice:
    """The highest-scoring trial of the feasible front within the budgets.

    Scores are accuracy for trained studies and the zero-cost score otherwise (the study's
    first objective). MACs are the records' (callers that distrust stored numbers recount
    them first); a trial without a latency is out when a latency budget is given. Ties go
    to fewer MACs, then lower latency, then the earlier trial.
    """
    evaluated = [r for r in records if r.evaluated]
    feasible = [r for r in evaluated if r.feasible]
    if not feasible:
        return BestChoice(None, f"no feasible trial with a result in study {info.name!r} ({len(evaluated)} evaluated)")
    candidates = [r for r in feasible if budget_macs is None or (r.macs is not None and r.macs <= budget_macs)]
    if latency_budget_ms is not None:
        if not any(r.latency_ms is not None for r in feasible):
            return BestChoice(None, "no trial of this study has a latency; drop the latency budget or search with latency")
        candidates = [r for r in candidates if r.latency_ms is not None and float(r.latency_ms) <= latency_budget_ms]
    if not candidates:
        return BestChoice(None, _nothing_within(feasible, budget_macs, budget_label, latency_budget_ms))
    axes = front_axes(info) + (("latency_ms",) if latency_budget_ms is not None and "latency_ms" not in info.objectives else ())
    front = front_records(candidates, axes)
    best = max(front, key=lambda r: (r.score, -(r.macs or 0), -(r.latency_ms or 0.0), -r.number))
    return BestChoice(best)


def best_trial(records: Sequence[TrialRecord], info: StudyInfo, **budgets: object) -> TrialRecord | None:
    """:func:`choose_best`'s trial, or None."""
    return choose_best(records, info, **budgets).record  # type: ignore[arg-type]


def _nothing_within(
    feasible: list[TrialRecord], budget_macs: int | None, label: str | None, latency_ms: float | None
) -> str:
    limits = []
    if budget_macs is not None:
        limits.append(f"{label or f'{budget_macs / 1e6:g}M'} MACs")
    if latency_ms is not None:
        limits.append(f"{latency_ms:g} ms")
    sized = [r.macs for r in feasible if r.macs is not None]
    hint = f"the smallest feasible trial uses {min(sized) / 1e6:.1f} MFLOPs" if sized else "no trial has a size"
    timed = [float(r.latency_ms) for r in feasible if r.latency_ms is not None]
    if latency_ms is not None and timed:
        hint += f", the fastest takes {min(timed):.2f} ms"
    return f"no feasible trial within {' and '.join(limits)} ({hint}); raise the budget"


def seed_noise(records: Sequence[TrialRecord], info: StudyInfo) -> float | None:
    """Seed noise of the accuracy: pooled over trials trained with several seeds, else the
    value measured for the study's recipe (None when neither is known or the study is not
    trained)."""
    from nas.evaluation.proxy_trust import pooled_seed_sd

    if not info.trained:
        return None
    pooled = pooled_seed_sd([r.attrs.get(ACCURACY_SEEDS) or [] for r in records if r.evaluated])
    return pooled if pooled is not None else info.attrs.get(ACCURACY_NOISE_SD)


def ties_with_best(records: Sequence[TrialRecord], info: StudyInfo, noise: float) -> list[TrialRecord]:
    """Front trials whose score is within ``noise`` of the best: statistically tied with it."""
    front = study_front(records, info)
    if not front:
        return []
    best = max(float(r.score) for r in front if r.score is not None)
    return [r for r in front if r.score is not None and best - r.score < noise]

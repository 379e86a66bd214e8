"""A study's answer: its feasible Pareto front and its best trial, defined once.

The search summary, ``nas runs``, the dashboard, ``nas export --best`` and the benchmarks all
call these functions, so they cannot disagree about which trials form the front or which one
is best. A trial's score is :attr:`nas.records.TrialRecord.score` (accuracy when trained, the
zero-cost score otherwise); the geometry lives in :mod:`nas.analysis`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.analysis import front_records
from nas.records import ACCURACY_NOISE_SD, ACCURACY_SEEDS, FINAL_ANSWER, StudyInfo, TrialRecord

__all__ = [
    "BestChoice",
    "best_trial",
    "choose_best",
    "final_answer",
    "finalists",
    "front_axes",
    "study_front",
    "seed_noise",
    "ties_with_best",
]


def front_axes(info: StudyInfo, x_axis: str | None = None, quality: str = "score") -> tuple[str, ...]:
    """The objectives a study's front is computed over: score (or ``quality``, e.g.
    accuracy_int8), then MFLOPs (or ``x_axis``), then latency when the study searched with a
    latency objective."""
    if x_axis is not None or quality != "score":
        return (quality, x_axis or "mflops")
    return ("score", "mflops") + (("latency_ms",) if "latency_ms" in info.objectives else ())


def study_front(
    records: Sequence[TrialRecord], info: StudyInfo, *, x_axis: str | None = None, with_duplicates: bool = False,
    quality: str = "score",
) -> list[TrialRecord]:
    """The feasible Pareto front, sorted by MFLOPs (or ``x_axis``) then trial number.

    By default a re-proposed config (a trial that copied an earlier trial's result) is left
    out, so each architecture appears once; ``with_duplicates=True`` keeps every such copy.
    Presets are real evaluations under the same recipe and take part.
    """
    axes = front_axes(info, x_axis, quality)
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
    final: dict[str, Any] | None = None
    """When ``record`` is the answer of the study's final stage: that stage's verdict."""


def final_answer(info: StudyInfo) -> dict[str, Any] | None:
    """The verdict ``nas final`` stored in the study (:data:`nas.records.FINAL_ANSWER`), if any."""
    answer = info.attrs.get(FINAL_ANSWER)
    return answer if isinstance(answer, dict) else None


def answer_weights(record: TrialRecord, info: StudyInfo) -> dict[str, Any] | None:
    """The weights the final stage kept for ``record`` (its answer's most accurate run at the
    stage's fidelity), when the record is the answer and the file is still there."""
    answer = final_answer(info)
    kept = answer.get("answer_weights") if answer is not None and answer.get("answer_trial") == record.number else None
    if not isinstance(kept, dict) or not kept.get("path") or not Path(str(kept["path"])).is_file():
        return None
    return kept


def finalists(records: Sequence[TrialRecord], info: StudyInfo, count: int) -> list[TrialRecord]:
    """The ``count`` best distinct configs of the feasible front that meet every budget of the
    study (FLOPs and latency), best score first: what the final stage races."""
    def within(record: TrialRecord) -> bool:
        if record.score is None or record.config is None:
            return False
        if info.budget_macs is not None and (record.macs is None or record.macs > info.budget_macs):
            return False
        return info.latency_budget_ms is None or (
            record.latency_ms is not None and float(record.latency_ms) <= info.latency_budget_ms
        )

    chosen: dict[str, TrialRecord] = {}
    for record in sorted(filter(within, study_front(records, info)), key=lambda r: (-float(r.score or 0), r.macs or 0, r.number)):
        assert record.config is not None
        chosen.setdefault(json.dumps(record.config.to_dict(), sort_keys=True), record)
    return list(chosen.values())[:count]


def choose_best(
    records: Sequence[TrialRecord],
    info: StudyInfo,
    *,
    budget_macs: int | None = None,
    latency_budget_ms: float | None = None,
    budget_label: str | None = None,
) -> BestChoice:
    """The highest-scoring trial of the feasible front within the budgets, unless the study's
    final stage (``nas final``) chose an answer that meets them: then that answer.

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
    answer = final_answer(info)
    if answer is not None and answer.get("answer_trial") is not None:
        # The final stage raced the front at a higher fidelity: its answer outranks the proxy's
        # best, as long as it meets the budgets asked for here.
        chosen = next((r for r in candidates if r.number == answer["answer_trial"]), None)
        if chosen is not None:
            return BestChoice(chosen, final=answer)
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

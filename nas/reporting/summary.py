"""Text summaries of studies: the Pareto table printed after a search and by `nas runs show`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from nas import records as R
from nas.analysis import front_records, quality_of
from nas.records import StudyInfo, TrialRecord

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["best_record", "front_table", "knob_summary", "objective_label"]


def objective_label(info: StudyInfo) -> str:
    return info.objectives[0] if info.objectives else "accuracy"


def score_of(record: TrialRecord) -> float | None:
    """Accuracy for trained trials; the zero-cost score for zero-cost studies."""
    return quality_of(record)


def knob_summary(record: TrialRecord) -> str:
    config = record.config
    if config is None:
        return "?"
    depths = "-".join(str(d) for d in config.stage_depths)
    channels = "/".join(str(c) for c in config.stage_out_channels)
    return f"g{config.groups} c{channels} d{depths} b{config.bottleneck_ratio:g} stem{config.stem_channels}"


def _front(records: Sequence[TrialRecord], info: StudyInfo) -> list[TrialRecord]:
    """The feasible front over (quality, MFLOPs[, latency]); quality is accuracy or a zero-cost score."""
    objectives = ["score", "mflops"] + (["latency_ms"] if "latency_ms" in info.objectives else [])
    unique = [r for r in records if r.attrs.get("duplicate_of") is None]  # re-proposed configs: shown once
    return sorted(front_records(unique, objectives), key=lambda r: (r.mflops, r.number))


def best_record(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The highest-scoring feasible completed trial."""
    candidates = [r for r in records if r.state == "COMPLETE" and r.feasible and score_of(r) is not None and not r.attrs.get("skipped")]
    return max(candidates, key=lambda r: (score_of(r), -r.number), default=None)


def front_table(records: Sequence[TrialRecord], info: StudyInfo) -> "Table":
    from rich.table import Table

    label = objective_label(info)
    budget = f", budget {info.budget_label}" if info.budget_label else ""
    table = Table(title=f"Pareto front of {info.name!r} ({label} vs MFLOPs{budget})")
    for column in ("trial", "MFLOPs", "params (M)", label, "latency ms", "architecture", "preset", "train s"):
        table.add_column(column, justify="left" if column in ("architecture", "preset") else "right")
    for record in _front(records, info):
        score = score_of(record)
        spread = record.accuracy_std
        shown = "" if score is None else (f"{score:.4f}" if label != "accuracy" else f"{score:.3f}")
        if spread is not None:
            shown += f" ± {spread:.3f}"
        latency = record.latency_ms
        table.add_row(
            str(record.number),
            f"{record.mflops:.2f}" if record.mflops is not None else "",
            f"{record.params / 1e6:.3f}" if record.params is not None else "",
            shown,
            "" if latency is None else f"{latency:.2f}",
            knob_summary(record),
            record.preset or "",
            f"{record.attrs.get(R.TRAIN_SECONDS, 0):.0f}",
        )
    return table


def seed_noise(records: Sequence[TrialRecord], info: StudyInfo) -> float | None:
    """Seed noise of the accuracy: pooled over trials trained with several seeds, else the
    value measured for the study's recipe (None when neither is known)."""
    from nas.evaluation.proxy_trust import pooled_seed_sd

    pooled = pooled_seed_sd([r.attrs.get(R.ACCURACY_SEEDS) or [] for r in records if r.complete])
    return pooled if pooled is not None else info.attrs.get("accuracy_noise_sd")


def ties_with_best(records: Sequence[TrialRecord], info: StudyInfo, noise: float) -> list[TrialRecord]:
    """Front trials whose accuracy is within ``noise`` of the best: statistically tied with it."""
    front = _front(records, info)
    if not front:
        return []
    best = max(score_of(r) for r in front)  # type: ignore[type-var]
    return [r for r in front if best - score_of(r) < noise]  # type: ignore[operator]

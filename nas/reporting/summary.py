"""Text summaries of studies: the Pareto table printed after a search and by ``nas runs``.

Everything shown is computed by :mod:`nas.results` (front, best, noise) and
:mod:`nas.engine.outcome` (counts, exit code); this module only renders.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape

from nas import records as R
from nas.records import StudyInfo, TrialRecord
from nas.results import best_trial, final_answer, seed_noise, study_front, ties_with_best

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from nas.engine.outcome import SearchOutcome, StudyOutcome

__all__ = ["front_table", "knob_summary", "print_search_summary", "state_counts", "trial_note", "trials_table"]


def knob_summary(record: TrialRecord) -> str:
    config = record.config
    if config is None:
        return "?"
    depths = "-".join(str(d) for d in config.stage_depths)
    channels = "/".join(str(c) for c in config.stage_out_channels)
    return f"g{config.groups} c{channels} d{depths} b{config.bottleneck_ratio:g} stem{config.stem_channels}"


def _score_text(record: TrialRecord, info: StudyInfo) -> str:
    if record.score is None:
        return ""
    shown = f"{record.score:.3f}" if info.trained else f"{record.score:.4f}"
    if record.accuracy_std is not None:
        shown += f" ± {record.accuracy_std:.3f}"
    return shown


def front_table(records: Sequence[TrialRecord], info: StudyInfo) -> Table:
    """The feasible Pareto front (each architecture once), as a table: latency in the study's
    runtime and precision (``*``: predicted from a lookup table, not measured), and the int8
    accuracy when the search measured it."""
    from rich.table import Table

    front = study_front(records, info)
    budget = f", budget {info.budget_label}" if info.budget_label else ""
    table = Table(title=f"Pareto front of {info.name!r} ({info.quality} vs MFLOPs{budget})")
    int8 = any(record.attrs.get(R.ACCURACY_INT8) is not None for record in front)
    predicted = any(record.attrs.get(R.LATENCY_SOURCE) == "predicted" for record in front)
    latency = "latency ms" if info.latency_runtime == "onnxruntime" and info.latency_precision == "fp32" else (
        f"{info.latency_runtime} {info.latency_precision} ms")
    columns = ["trial", "MFLOPs", "params (M)", info.quality, *(["int8 accuracy"] if int8 else []), latency,
               "architecture", "preset", "train s"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("architecture", "preset") else "right")
    for record in front:
        int8_accuracy = record.attrs.get(R.ACCURACY_INT8)
        mark = "*" if record.attrs.get(R.LATENCY_SOURCE) == "predicted" else ""
        table.add_row(
            str(record.number),
            f"{record.mflops:.2f}" if record.mflops is not None else "",
            f"{record.params / 1e6:.3f}" if record.params is not None else "",
            _score_text(record, info),
            *([("" if int8_accuracy is None else f"{float(int8_accuracy):.3f}")] if int8 else []),
            "" if record.latency_ms is None else f"{record.latency_ms:.2f}{mark}",
            knob_summary(record),
            record.preset or "",
            f"{record.attrs.get(R.TRAIN_SECONDS, 0):.0f}",
        )
    if predicted:
        table.caption = "* predicted from the lookup table (no device measured it)"
    return table


def state_counts(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Trials by state, lost ones (which run again and do not count) apart from failed ones."""
    counts = Counter("LOST" if record.lost else record.state for record in records)
    return dict(sorted(counts.items()))


def trial_note(record: TrialRecord) -> str:
    """Why a trial is what it is, in a few words."""
    parts = []
    if record.preset:
        parts.append(record.preset)
    if record.attrs.get(R.RETRY_OF) is not None:
        parts.append(f"runs trial {record.attrs[R.RETRY_OF]} again")
    for key in (R.SKIPPED, R.PRUNED_BY, R.FAIL_REASON):
        if record.attrs.get(key):
            parts.append(str(record.attrs[key]))
    if record.retried and not record.attrs.get(R.FAIL_REASON):
        parts.append("lost (no heartbeat from its worker); run again")
    if record.duplicate:
        parts.append(f"same config as trial {record.attrs[R.DUPLICATE_OF]}")
    return "; ".join(parts)


def trials_table(records: Sequence[TrialRecord], info: StudyInfo) -> Table:
    from rich.table import Table

    table = Table(title=f"all trials of {info.name!r}")
    for column in ("trial", "state", info.quality, "MFLOPs", "architecture", "note"):
        table.add_column(column)
    for record in records:
        table.add_row(
            str(record.number), "lost" if record.lost else record.state.lower(),
            "" if record.score is None else f"{record.score:.4f}",
            "" if record.mflops is None else f"{record.mflops:.2f}", knob_summary(record), trial_note(record),
        )
    return table


def trained_on(records: Sequence[TrialRecord]) -> list[str]:
    """Where the study's trials trained, e.g. "cuda:0 (NVIDIA H200), bf16: 60 trials"."""
    counts: Counter[str] = Counter()
    for record in records:
        place = record.attrs.get(R.ACCELERATOR)
        if isinstance(place, dict):
            counts[f"{place.get('device')} ({place.get('device_name')}), {place.get('train_precision')}"] += 1
    return [f"{place}: {count} trial(s)" for place, count in counts.most_common()]


def print_search_summary(console: Console, outcome: SearchOutcome, storage_shown: str) -> None:
    """What ``nas search`` prints when it ends: each study's front, counts and best trial."""
    for study in outcome.studies:
        _print_study(console, study, storage_shown)
    for line in outcome.problems():
        console.print(f"[red]{escape(line)}[/red]", highlight=False, soft_wrap=True)


def _print_study(console: Console, outcome: StudyOutcome, storage_shown: str) -> None:
    records, info = outcome.records, outcome.info
    console.print(front_table(records, info))
    counts = ", ".join(f"{count} {state.lower()}" for state, count in state_counts(records).items())
    console.print(f"trials: {counts} ({outcome.counted} of {outcome.target} count toward --n-trials)", highlight=False)
    for line in outcome.report.events:
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False, soft_wrap=True)  # paths stay whole
    places = trained_on(records)
    if places:
        mixed = " (results from different accelerators agree only within seed noise)" if len(places) > 1 else ""
        console.print(f"trained on: {'; '.join(places)}{mixed}", highlight=False, soft_wrap=True)
    best = best_trial(records, info)
    if best is None or best.score is None:
        return
    console.print(
        f"best under {outcome.budget.label}: trial {best.number}, {info.quality} {best.score:.4f} "
        f"at {best.mflops or 0:.2f} MFLOPs ({knob_summary(best)})",
        highlight=False,
    )
    answer = final_answer(info)
    noise = seed_noise(records, info)
    if answer is not None:
        console.print(f"final stage: {escape(str(answer.get('verdict', '')))}", highlight=False, soft_wrap=True)
    elif noise:
        tied = ties_with_best(records, info, noise)
        console.print(
            f"seed noise ~{noise:.4f}: gaps smaller than that are ties; {len(tied)} front trial(s) tie with the best "
            f"({', '.join('#' + str(r.number) for r in tied)}); `nas final` races them at a higher fidelity",
            highlight=False,
        )
    presets = [r for r in records if r.preset and r.score is not None]
    if presets:
        top = max(presets, key=lambda r: float(r.score or 0.0))
        console.print(f"best paper preset: {top.preset}, {top.score:.4f} at {top.mflops or 0:.2f} MFLOPs", highlight=False)
    console.print(
        f"[dim]next: nas dashboard --storage {storage_shown} | "
        f"nas export --storage {storage_shown} --study {info.name} --best --out model/[/dim]"
    )

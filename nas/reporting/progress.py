"""The live display of a search: trial n/N, the best result so far, an ETA, worker events.

It implements :class:`nas.engine.display.Display` and does nothing else: the engine and its
backends tell it what happened; it reads no storage and starts no process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from nas.engine.outcome import StudyPlan, count_toward_target
from nas.records import FAIL_REASON, SKIPPED, StudyInfo, TrialRecord
from nas.reporting.summary import knob_summary
from nas.results import best_trial

__all__ = ["RichDisplay", "eta_seconds"]


def eta_seconds(durations: Sequence[float], remaining: int, workers: int) -> float | None:
    """Mean of the last 8 trial durations x the rounds of ``workers`` trials still to run."""
    if not durations or remaining <= 0:
        return None
    recent = list(durations)[-8:]
    return sum(recent) / len(recent) * math.ceil(remaining / max(1, workers))


class _StudyFeed:
    def __init__(self, display: RichDisplay, plan: StudyPlan, info: StudyInfo, records: Sequence[TrialRecord]) -> None:
        self.display = display
        self.plan = plan
        self.info = info
        self.records = {record.number: record for record in records}
        self.durations: list[float] = []
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=display.console, disable=display.quiet, transient=False,
        )
        self.trials_task: TaskID | None = None
        self.step_task: TaskID | None = None

    def __enter__(self) -> _StudyFeed:
        self.progress.__enter__()
        self.trials_task = self.progress.add_task(
            self.plan.study_name, total=self.plan.target, completed=self.plan.counted_before, status=self._status()
        )
        self.step_task = self.progress.add_task("  current trial", total=1, completed=0, status="", visible=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.__exit__(None, None, None)

    def _best_text(self) -> str:
        best = best_trial(list(self.records.values()), self.info)
        if best is None or best.score is None:
            return "none yet"
        return f"best {best.score:.3f} @ {best.mflops or 0:.1f}M (#{best.number})"

    def _status(self) -> str:
        counted = count_toward_target(self.records.values())
        eta = eta_seconds(self.durations, self.plan.target - counted, self.plan.settings.workers)
        eta_text = "" if eta is None else(
            f" | ETA {time.strftime('%M:%S', time.gmtime(eta)) if eta < 3600 else f'{eta / 3600:.1f}h'}"
        )
        return f"{self._best_text()}{eta_text}"

    def trial_finished(self, record: TrialRecord) -> None:
        self.records[record.number] = record
        if record.duration_s is not None:
            self.durations.append(record.duration_s)
        counted = count_toward_target(self.records.values())
        status = self._status()
        assert self.trials_task is not None and self.step_task is not None
        self.progress.update(self.trials_task, completed=counted, status=status)
        self.progress.update(self.step_task, visible=False)
        if self.display.quiet:
            score = "" if record.score is None else f"{record.score:.4f}"
            reason = record.attrs.get(SKIPPED) or record.attrs.get(FAIL_REASON) or ""
            state = "lost" if record.lost else record.state.lower()
            self.display.console.print(
                f"trial {record.number} {state} {score} {record.mflops or 0:.2f}M {knob_summary(record)} {reason}".rstrip()
                + f" [{counted}/{self.plan.target}] {status}",
                highlight=False,
            )

    def training_step(self, done: int, total: int) -> None:
        if not self.display.quiet and self.step_task is not None:
            self.progress.update(self.step_task, total=total, completed=done, visible=True)

    def worker_event(self, text: str) -> None:
        # soft_wrap: a log path in the line must stay whole to be copied.
        self.display.console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False, soft_wrap=True)


class RichDisplay:
    """Progress bars on a terminal; one line per trial when ``quiet`` or piped."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet or not console.is_terminal

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/dim]", highlight=False)

    @contextmanager
    def study(self, plan: StudyPlan, info: StudyInfo, records: Sequence[TrialRecord]) -> Iterator[_StudyFeed]:
        with _StudyFeed(self, plan, info, records) as feed:
            yield feed

"""Runs one study's trials (in-process or in worker processes) behind a live progress display.

The display shows trial n/N, the best feasible result so far, an ETA, and (in-process) the
current trial's training steps. With several workers the storage is polled: it is the one
source of truth for what has finished.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nas.records import load_records, record_from_trial
from nas.engine.study import Budget, SearchSettings, count_finished, eta_seconds, run_trials, split_trials, worker_main
from nas.reporting.summary import best_record, knob_summary, score_of

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchProgress"]


class SearchProgress:
    def __init__(self, console: Console, study: "optuna.Study", settings: SearchSettings, remaining: int, *, quiet: bool) -> None:
        self.console = console
        self.study = study
        self.settings = settings
        self.remaining = remaining
        self.quiet = quiet or not console.is_terminal
        self.finished_at_start = count_finished(study)
        self.durations: list[float] = []
        self.best_text = "none yet"
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            disable=self.quiet,
            transient=False,
        )

    def __enter__(self) -> "SearchProgress":
        self.progress.__enter__()
        total = self.finished_at_start + self.remaining
        self.trials_task = self.progress.add_task(
            f"{self.study.study_name}", total=total, completed=self.finished_at_start, status=""
        )
        self.step_task = self.progress.add_task("  current trial", total=1, completed=0, status="", visible=False)
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.__exit__(*exc_info)

    # -- updates ------------------------------------------------------------------------------
    def _refresh_best(self) -> None:
        best = best_record(load_records(self.study))
        if best is not None:
            self.best_text = f"best {score_of(best):.3f} @ {best.mflops:.1f}M (#{best.number})"

    def _status(self, finished: int) -> str:
        eta = eta_seconds(self.durations, self.finished_at_start + self.remaining - finished, self.settings.workers)
        eta_text = "" if eta is None else f" | ETA {time.strftime('%M:%S', time.gmtime(eta)) if eta < 3600 else f'{eta / 3600:.1f}h'}"
        return f"{self.best_text}{eta_text}"

    def on_trial(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
        if trial.duration is not None:
            self.durations.append(trial.duration.total_seconds())
        finished = count_finished(study)
        self._refresh_best()
        self.progress.update(self.trials_task, completed=finished, status=self._status(finished))
        self.progress.update(self.step_task, visible=False)
        if self.quiet:
            record = record_from_trial(study.study_name, trial)
            score = score_of(record)
            text = "" if score is None else f"{score:.4f}"
            reason = record.attrs.get("skipped") or record.attrs.get("fail_reason") or ""
            self.console.print(
                f"trial {trial.number} {trial.state.name.lower()} {text} "
                f"{record.mflops or 0:.2f}M {knob_summary(record)} {reason}".rstrip()
                + f" [{finished}/{self.finished_at_start + self.remaining}] {self.best_text}",
                highlight=False,
            )

    def on_step(self, done: int, total: int) -> None:
        self.progress.update(self.step_task, total=total, completed=done, visible=True)

    # -- running ------------------------------------------------------------------------------
    def run(self, budget: Budget, timeout: float | None) -> None:
        if self.settings.workers <= 1:
            run_trials(
                self.settings, budget, self.study, self.remaining, timeout=timeout,
                on_trial=self.on_trial, on_step=None if self.quiet else self.on_step,
            )
            return
        self._run_workers(budget, timeout)

    def _run_workers(self, budget: Budget, timeout: float | None) -> None:
        context = multiprocessing.get_context("spawn")
        shares = split_trials(self.remaining, self.settings.workers)
        processes = [
            context.Process(target=worker_main, args=(self.settings, budget, share, index, timeout), daemon=False)
            for index, share in enumerate(shares)
        ]
        for process in processes:
            process.start()
        seen: set[int] = set()
        try:
            while any(p.is_alive() for p in processes):
                self._poll(seen)
                time.sleep(1.0)
        except KeyboardInterrupt:
            for process in processes:  # they got SIGINT too: give them time to mark their trials
                process.join(timeout=30)
            self._poll(seen)
            raise
        for process in processes:
            process.join()
        self._poll(seen)

    def _poll(self, seen: set[int]) -> None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number not in seen and trial.state.is_finished():
                seen.add(trial.number)
                self.on_trial(self.study, trial)

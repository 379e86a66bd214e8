"""What counts toward ``--n-trials``, what a run of a study achieved, and the exit code.

These are the engine's definitions; the CLI only prints them and exits with
:func:`exit_code`. Exit codes (``nas search --help`` and the README say the same):

- 0: every study reached its target (or ``--timeout`` ended the run on purpose);
- 1: every trial of a study's run failed, or workers could not be kept alive, so a study
  fell short of its target;
- 2: bad input (raised as :class:`~nas.errors.UserError` before anything runs);
- 130: interrupted (Ctrl-C); finished trials are kept and the same command resumes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nas.engine.settings import Budget, SearchSettings
from nas.records import COMPLETE, FAIL, PRUNED, StudyInfo, TrialRecord

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "BackendReport",
    "SearchOutcome",
    "StudyOutcome",
    "StudyPlan",
    "count_toward_target",
    "counts_toward_target",
    "exit_code",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def counts_toward_target(record: TrialRecord) -> bool:
    """A trial counts toward ``--n-trials`` when it finished: complete, pruned by early
    stopping, or failed on its own (an error, NaN, out of memory), so a broken search cannot
    loop forever. A trial lost to its worker, node or the user does not count: it runs again.
    """
    return record.state in (COMPLETE, PRUNED) or (record.state == FAIL and not record.lost)


def count_toward_target(records: Iterable[TrialRecord]) -> int:
    return sum(1 for record in records if counts_toward_target(record))


@dataclass(frozen=True)
class StudyPlan:
    """One study's work for a backend: run trials until ``target`` count."""

    settings: SearchSettings
    budget: Budget
    study_name: str
    target: int
    counted_before: int
    timeout: float | None
    """Seconds left of ``--timeout`` (None: no limit)."""

    @property
    def remaining(self) -> int:
        return max(0, self.target - self.counted_before)


@dataclass
class BackendReport:
    """What a backend says about its run of one study, beyond what the storage holds."""

    interrupted: bool = False
    gave_up: str | None = None
    """Why the backend stopped short (e.g. workers kept dying and the restarts ran out)."""
    events: list[str] = field(default_factory=list)
    """Worker deaths and replacements, in order, one line each."""


@dataclass(frozen=True)
class StudyOutcome:
    study_name: str
    budget: Budget
    target: int
    info: StudyInfo
    records: Sequence[TrialRecord]
    """Every trial of the study after the run."""
    ran: dict[str, int]
    """Trials of this run by final state ("COMPLETE", "PRUNED", "FAIL", "LOST")."""
    report: BackendReport
    stopped_reason: str | None = None
    already_done: bool = False

    @property
    def counted(self) -> int:
        """Trials that count toward the target, after the run."""
        return count_toward_target(self.records)

    @property
    def reached(self) -> bool:
        return self.counted >= self.target

    @property
    def every_trial_failed(self) -> bool:
        finished = sum(self.ran.values())
        return finished > 0 and self.ran.get(COMPLETE, 0) + self.ran.get(PRUNED, 0) == 0


@dataclass(frozen=True)
class SearchOutcome:
    studies: Sequence[StudyOutcome]
    storage_url: str
    interrupted: bool = False
    timed_out: bool = False

    @property
    def stopped_reason(self) -> str | None:
        return next((o.stopped_reason for o in self.studies if o.stopped_reason), None)

    def problems(self) -> list[str]:
        """One line per study that ends the command with exit code 1."""
        lines = []
        for outcome in self.studies:
            if outcome.report.gave_up:
                lines.append(f"{outcome.study_name}: {outcome.report.gave_up}")
            elif outcome.every_trial_failed:
                lines.append(
                    f"{outcome.study_name}: every trial of this run failed (see their fail reasons: nas runs show "
                    f"{outcome.study_name})"
                )
            elif not outcome.reached and not self.timed_out and not self.interrupted and not outcome.stopped_reason:
                lines.append(f"{outcome.study_name}: {outcome.counted} of {outcome.target} trials finished")
        return lines


def ran_by_state(records: Iterable[TrialRecord], finished_before: set[int]) -> dict[str, int]:
    """This run's finished trials by state; lost trials under "LOST"."""
    counts: Counter[str] = Counter()
    for record in records:
        if record.number in finished_before or record.state not in (COMPLETE, PRUNED, FAIL):
            continue
        counts["LOST" if record.lost else record.state] += 1
    return dict(counts)


def exit_code(outcome: SearchOutcome) -> int:
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if outcome.problems() else EXIT_OK

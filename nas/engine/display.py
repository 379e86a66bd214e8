"""What the engine tells whoever watches a search; the CLI's progress bars implement it.

The engine and its backends call these methods and nothing else: a display only displays
(it starts no process and reads no storage), and the engine runs the same without one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Protocol

from nas.records import StudyInfo, TrialRecord

if TYPE_CHECKING:
    from nas.engine.outcome import StudyPlan

__all__ = ["Display", "NullDisplay", "TrialFeed"]


class TrialFeed(Protocol):
    """Events of one study's run."""

    def trial_finished(self, record: TrialRecord) -> None:
        """A trial of this study finished (in any state), as stored."""

    def training_step(self, done: int, total: int) -> None:
        """Progress inside the current trial (in-process runs only)."""

    def worker_event(self, text: str) -> None:
        """A worker died, was replaced, or could not be: one line."""


class Display(Protocol):
    def note(self, text: str) -> None:
        """A line about the run as a whole (storage, data, a study already done)."""

    def study(
        self, plan: StudyPlan, info: StudyInfo, records: Sequence[TrialRecord]
    ) -> AbstractContextManager[TrialFeed]:
        """Open the display of one study's run, given what the study holds at its start."""


class _NullFeed:
    def trial_finished(self, record: TrialRecord) -> None:
        pass

    def training_step(self, done: int, total: int) -> None:
        pass

    def worker_event(self, text: str) -> None:
        pass


class NullDisplay:
    """Shows nothing (for library use and tests)."""

    def note(self, text: str) -> None:
        pass

    @contextmanager
    def study(self, plan: StudyPlan, info: StudyInfo, records: Sequence[TrialRecord]) -> Iterator[TrialFeed]:
        yield _NullFeed()

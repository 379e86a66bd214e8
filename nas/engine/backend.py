"""The interface the engine needs from a backend (implemented in nas.backends)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import optuna

    from nas.engine.display import Display, TrialFeed
    from nas.engine.outcome import BackendReport, StudyPlan
    from nas.engine.settings import SearchSettings

__all__ = ["Backend"]


class Backend(Protocol):
    name: str

    def opened(self, settings: SearchSettings, display: Display) -> AbstractContextManager[None]:
        """Set up what every study's run needs (e.g. a Ray session), for the whole search."""

    def run(
        self, plan: StudyPlan, study: optuna.Study, storage: optuna.storages.BaseStorage, feed: TrialFeed
    ) -> BackendReport:
        """Run ``plan.remaining`` more counted trials of ``study`` (fewer if interrupted, out
        of time, or out of workers: the report says which)."""

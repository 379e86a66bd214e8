"""What the dashboard reads from the study storage, with every failure turned into a message.

The page must never show a traceback: a missing file, a corrupted database or an empty study
become a :class:`LoadError` whose text the app prints as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dashboard import ACTIONS_ENV, ACTIONS_OFF, ACTIONS_ON, STORAGE_ENV
from nas.errors import UserError
from nas.records import (
    ACCURACY_INT8,
    COMPLETE,
    DEVICE,
    LATENCY_DEVICE,
    StudyInfo,
    TrialRecord,
    latency_key,
    load_records,
    study_info,
)

__all__ = [
    "ACTIONS_ENV",
    "ACTIONS_OFF",
    "ACTIONS_ON",
    "STORAGE_ENV",
    "LoadError",
    "StudyData",
    "actions_from_env",
    "device_name",
    "list_studies",
    "load_study_data",
    "storage_from_env",
    "trial_counts",
]



class LoadError(Exception):
    """The storage or a study cannot be shown; the message says why and what to do."""


@dataclass(frozen=True)
class StudyData:
    info: StudyInfo
    records: list[TrialRecord]
    study: Any = field(repr=False)  # optuna.Study, for parameter importances

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def budget_mflops(self) -> float | None:
        return None if self.info.budget_macs is None else self.info.budget_macs / 1e6

    @property
    def quality(self) -> str:
        """The analysis objective on the y axis: "accuracy" for trained studies, else "score"."""
        return "accuracy" if self.info.trained else "score"

    @property
    def quality_label(self) -> str:
        if self.quality == "accuracy":
            return "accuracy (%)"
        return f"{self.info.objectives[0]} (zero-cost score)"

    @property
    def completed(self) -> list[TrialRecord]:
        """Completed trials that have a score (accuracy or a zero-cost score)."""
        return [r for r in self.records if r.evaluated]

    @property
    def untrained(self) -> list[TrialRecord]:
        """Completed trials without a quality: over a budget, so the search did not train them."""
        return [r for r in self.records if r.state == COMPLETE and not r.evaluated and r.macs is not None]

    @property
    def has_latency(self) -> bool:
        return any(r.latency_ms is not None for r in self.completed)

    @property
    def latency_keys(self) -> list[str]:
        """The ``runtime/precision`` forms some trial has a latency in (the search's own first)."""
        own = latency_key(self.info.latency_runtime, self.info.latency_precision)
        keys = {key for record in self.completed for key in record.latencies}
        return sorted(keys, key=lambda key: (key != own, key))

    @property
    def has_int8_accuracy(self) -> bool:
        return any(r.attrs.get(ACCURACY_INT8) is not None for r in self.completed)


def storage_from_env() -> str | None:
    value = os.environ.get(STORAGE_ENV, "").strip()
    return value or None


def actions_from_env() -> bool:
    """True only when the dashboard was started to allow write actions (see ACTIONS_ENV)."""
    return os.environ.get(ACTIONS_ENV, "").strip() == ACTIONS_ON


def _open(storage: str | None):  # noqa: ANN202 - optuna storage, imported lazily
    from nas.storage import open_storage

    try:
        return open_storage(storage, create=False)
    except UserError as error:
        raise LoadError(str(error)) from None


def list_studies(storage: str | None) -> list[str]:
    """Study names in the storage (newest last); LoadError when it cannot be read."""
    from nas.storage import list_study_names

    handle = _open(storage)
    try:
        return list_study_names(handle, comparisons=False)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many kinds on a damaged file
        raise LoadError(f"cannot list the studies in the storage: {_first_line(error)}") from None


def trial_counts(storage: str | None) -> dict[str, int]:
    """Trials per study, in storage order; LoadError when the storage cannot be read."""
    import optuna

    handle = _open(storage)
    try:
        summaries = optuna.study.get_all_study_summaries(handle, include_best_trial=False)
    except Exception as error:  # noqa: BLE001
        raise LoadError(f"cannot list the studies in the storage: {_first_line(error)}") from None
    from nas.storage import is_comparison_study

    # Result studies of `nas compare` / `nas final` are not searches: their results show with the study raced.
    return {summary.study_name: summary.n_trials for summary in summaries if not is_comparison_study(summary.user_attrs)}


def load_study_data(storage: str | None, name: str) -> StudyData:
    """One study's info and trial records; LoadError when it cannot be read."""
    import optuna

    handle = _open(storage)
    try:
        study = optuna.load_study(study_name=name, storage=handle)
        return StudyData(info=study_info(study), records=load_records(study), study=study)
    except KeyError:
        raise LoadError(f"no study named {name!r} in the storage") from None
    except Exception as error:  # noqa: BLE001
        raise LoadError(f"cannot read study {name!r}: {_first_line(error)}") from None


def device_name(data: StudyData) -> str | None:
    """The latency device, as named in the study or its trials (first one found)."""
    candidates: list[Any] = [data.info.attrs.get(DEVICE)]
    candidates += [r.attrs.get(LATENCY_DEVICE) for r in data.completed if r.latency_ms is not None]
    for device in candidates:
        if isinstance(device, dict):
            for key in ("name", "model", "host", "kind"):
                if device.get(key):
                    return str(device[key])
        elif device:
            return str(device)
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__

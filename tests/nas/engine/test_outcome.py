"""What counts toward --n-trials, and the exit code of a search (pure functions)."""

from __future__ import annotations

import pytest

from nas import records as R
from nas.engine.outcome import (
    BackendReport,
    SearchOutcome,
    StudyOutcome,
    count_toward_target,
    counts_toward_target,
    exit_code,
    ran_by_state,
)
from nas.engine.settings import Budget
from nas.records import StudyInfo, TrialRecord

INFO = StudyInfo("s", 40_000_000, "40M", ("accuracy", "mflops"), None, {})


def record(number: int, state: str, retried: bool = False, **attrs: object) -> TrialRecord:
    return TrialRecord("s", number, state, None, None, None, 0.5 if state == "COMPLETE" else None, None, None, True, (),
                       None, dict(attrs), retried=retried)


@pytest.mark.parametrize(
    ("trial", "counts"),
    [
        (record(0, "COMPLETE"), True),
        (record(0, "PRUNED"), True),
        (record(0, "FAIL", **{R.FAIL_REASON: "RuntimeError: out of memory"}), True),  # its own failure
        (record(0, "FAIL", **{R.FAIL_REASON: "interrupted: worker 1 died", R.LOST: True}), False),
        (record(0, "FAIL", **{R.FAIL_REASON: "interrupted: worker 1 died; attempt 3 of 3", R.LOST: False}), True),
        (record(0, "FAIL", **{R.FAIL_REASON: "interrupted: its process (pid 7) ended"}), False),  # release 0.1.0
        (record(0, "FAIL", retried=True), False),  # failed by a heartbeat check, then run again
        (record(0, "RUNNING"), False),
        (record(0, "WAITING"), False),
    ],
)
def test_what_counts_toward_the_target(trial: TrialRecord, counts: bool) -> None:
    assert counts_toward_target(trial) is counts


def _outcome(ran: dict[str, int], counted: int, target: int = 4, report: BackendReport | None = None,
             **flags: bool) -> SearchOutcome:
    records = [record(i, "COMPLETE") for i in range(counted)]
    study = StudyOutcome("s", Budget("40M", 40_000_000), target, INFO, records, ran, report or BackendReport())
    return SearchOutcome([study], "sqlite:///s.db", **flags)


def test_exit_codes() -> None:
    assert exit_code(_outcome({"COMPLETE": 4}, 4)) == 0
    assert exit_code(_outcome({"COMPLETE": 3, "FAIL": 1}, 4)) == 0  # some failures: the search did its job
    assert exit_code(_outcome({"FAIL": 4}, 4)) == 1  # every trial failed
    assert exit_code(_outcome({"COMPLETE": 2, "LOST": 1}, 2, report=BackendReport(gave_up="workers died"))) == 1
    assert exit_code(_outcome({"COMPLETE": 2}, 2)) == 1  # short of the target, for no good reason
    assert exit_code(_outcome({"COMPLETE": 2}, 2, timed_out=True)) == 0  # --timeout ended it on purpose
    assert exit_code(_outcome({"COMPLETE": 1}, 1, interrupted=True)) == 130
    assert exit_code(_outcome({}, 4)) == 0  # already done: nothing to run


def test_problems_say_which_study_and_why() -> None:
    [line] = _outcome({"FAIL": 3}, 3).problems()
    assert line.startswith("s: every trial of this run failed")


def test_this_runs_trials_by_state_leave_out_earlier_ones() -> None:
    records = [record(0, "COMPLETE"), record(1, "FAIL", **{R.LOST: True}), record(2, "FAIL"), record(3, "RUNNING")]
    assert ran_by_state(records, finished_before={0}) == {"LOST": 1, "FAIL": 1}
    assert count_toward_target(records) == 2

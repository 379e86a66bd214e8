"""Several processes on one study: every enqueued trial runs exactly once, on every storage kind.

Real storages only: a SQLite file, a journal file and a PostgreSQL server started by the suite.
Worker processes are released together by a barrier so that their claims really race. No
torch, no training: these processes only claim and finish trials.

Before the fix (release 0.1.0, `open_storage` returning Optuna's plain RDBStorage), the SQLite
case claimed 13-19 of the 40 enqueued trials twice in each of 5 of 5 runs with 8 processes;
the journal and PostgreSQL cases passed (they were atomic already, for the reasons given in
nas/storage/optuna_adapter.py).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections import Counter

import optuna
import pytest

from nas import records as R
from nas.engine.lost_trials import recover_lost_trials, stale_trial_callback
from nas.engine.outcome import counts_toward_target
from nas.records import load_records
from nas.storage import open_storage
from nas.storage.optuna_adapter import set_study_attr_once
from tests.conftest import STORAGE_KINDS

PROCESSES = 8
ENQUEUED = 40
CONTEXT = multiprocessing.get_context("spawn")


def _claim_until_empty(url: str, study_name: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url, create=False))
    barrier.wait(timeout=120)
    claimed = []
    while True:
        trial = study.ask()  # what every local worker does: Optuna pops a WAITING trial first
        if "enqueued" not in trial.user_attrs:  # the queue is empty: ask made a fresh trial
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        claimed.append(trial.user_attrs["enqueued"])
        try:
            study.tell(trial, 1.0)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another process claimed it too
            pass
    results.put(claimed)


def _run_together(target, *args) -> list:  # noqa: ANN001
    barrier, results = CONTEXT.Barrier(PROCESSES), CONTEXT.Queue()
    processes = [CONTEXT.Process(target=target, args=(*args, barrier, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcome = []
    deadline = time.monotonic() + 300
    while len(outcome) < len(processes) and time.monotonic() < deadline:
        try:
            outcome.append(results.get(timeout=1))
        except queue.Empty:
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not crashed, f"worker processes crashed with exit codes {crashed}"
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcome


@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_every_enqueued_trial_is_claimed_exactly_once(kind, storage_of_kind) -> None:
    url = storage_of_kind(kind)
    study = optuna.create_study(study_name="claims", storage=open_storage(url))
    for index in range(ENQUEUED):
        study.enqueue_trial({"x": index}, user_attrs={"enqueued": index})
    claimed = [number for batch in _run_together(_claim_until_empty, url, "claims") for number in batch]
    duplicated = {number: count for number, count in Counter(claimed).items() if count > 1}
    assert not duplicated, f"{len(duplicated)} of {ENQUEUED} enqueued trials were claimed twice on {kind}: {duplicated}"
    assert sorted(claimed) == list(range(ENQUEUED))
    states = Counter(t.state.name for t in optuna.load_study(study_name="claims", storage=open_storage(url)).get_trials())
    assert states == {"COMPLETE": ENQUEUED, "FAIL": PROCESSES}


def _set_once(url: str, study_name: str, barrier, results) -> None:  # noqa: ANN001
    storage = open_storage(url, create=False)
    barrier.wait(timeout=120)
    results.put([set_study_attr_once(storage, study_name, "marker", os.getpid())])


@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_a_study_attribute_is_set_once_whoever_races_for_it(kind, storage_of_kind) -> None:
    url = storage_of_kind(kind)
    optuna.create_study(study_name="once", storage=open_storage(url))
    won = [flag for batch in _run_together(_set_once, url, "once") for flag in batch]
    assert won.count(True) == 1, won
    stored = optuna.load_study(study_name="once", storage=open_storage(url)).user_attrs["marker"]
    assert isinstance(stored, int)


def _hang_in_a_trial(url: str, ready) -> None:  # noqa: ANN001
    """A worker on "another host": it claims a trial, records heartbeats, then never finishes."""
    study = optuna.load_study(study_name="stale", storage=open_storage(url, create=False, on_stale_trial=stale_trial_callback(3),
                                                                       heartbeat_interval=1, grace_period=3))

    def objective(trial: optuna.trial.Trial) -> float:
        trial.suggest_int("x", 0, 9)
        trial.set_user_attr(R.WORKER_HOST, "another-node")  # a pid check here cannot see that node
        trial.set_user_attr(R.WORKER_PID, 1)
        ready.set()
        time.sleep(600)
        return 0.0

    study.optimize(objective, n_trials=1)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_silent_worker_on_another_node_is_failed_by_heartbeat_and_its_trial_runs_again(kind, storage_of_kind) -> None:
    url = storage_of_kind(kind)
    storage = open_storage(url, on_stale_trial=stale_trial_callback(3), heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="stale", storage=storage)
    ready = CONTEXT.Event()
    worker = CONTEXT.Process(target=_hang_in_a_trial, args=(url, ready))
    worker.start()
    assert ready.wait(120)
    os.kill(worker.pid, signal.SIGKILL)  # the node dies: no process on this host to check
    worker.join()
    assert recover_lost_trials(study, storage, max_attempts=3) == []  # not this host's: left to the heartbeat
    deadline = time.monotonic() + 30
    while study.get_trials(deepcopy=False)[0].state.name == "RUNNING" and time.monotonic() < deadline:
        time.sleep(1)
        recover_lost_trials(study, storage, max_attempts=3)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    lost, retry = load_records(study)
    assert lost.lost and not counts_toward_target(lost)
    assert retry.attrs[R.RETRY_OF] == 0 and retry.attrs[R.ATTEMPT] == 2
    assert trials[1].system_attrs["fixed_params"] == trials[0].params  # enqueue_trial's params, until it runs
    assert "no heartbeat from its worker (host another-node" in retry.attrs[R.RETRY_REASON]

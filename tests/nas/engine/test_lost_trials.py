"""Trials whose worker died between claiming them and recording itself (a real SQLite study).

Regression: the PostgreSQL stress test killed the whole command while a worker was in that
window; the trial stayed RUNNING for good, since no pid was stored for the pid check and no
heartbeat for Optuna's.
"""

from __future__ import annotations

import os
import time

import optuna

from nas import records as R
from nas.engine.lost_trials import fail_ownerless_trials, recover_lost_trials
from nas.engine.outcome import counts_toward_target
from nas.records import load_records
from nas.storage import open_storage


def _study(tmp_path) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = open_storage(str(tmp_path / "s.db"))
    return optuna.create_study(study_name="s", storage=storage), storage


def test_an_ownerless_running_trial_is_failed_as_lost_once_it_is_old_enough(tmp_path) -> None:
    study, storage = _study(tmp_path)
    orphan = study.ask()  # claimed, then its worker died before recording itself
    owned = study.ask()
    owned.set_user_attr(R.WORKER_PID, os.getpid())  # a live worker of this process
    assert fail_ownerless_trials(study, storage, max_attempts=3) == []  # too fresh: it may be mid-claim
    time.sleep(0.05)
    assert fail_ownerless_trials(study, storage, max_attempts=3, older_than_s=0.01) == [orphan.number]
    records = {r.number: r for r in load_records(study)}
    lost = records[orphan.number]
    assert lost.state == "FAIL" and lost.lost and not counts_toward_target(lost)
    assert "died while claiming it" in lost.attrs[R.FAIL_REASON]
    assert records[owned.number].state == "RUNNING"
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # no config was proposed: nothing to rerun


def test_resume_recovery_includes_ownerless_trials(tmp_path) -> None:
    study, storage = _study(tmp_path)
    orphan = study.ask()
    time.sleep(0.05)
    assert recover_lost_trials(study, storage, max_attempts=3, ownerless_after_s=0.01) == [orphan.number]

"""Everything that reaches past Optuna's public API, in one place, each with why.

Several workers (processes on one machine, or Ray nodes) share one study. Optuna's storages
decide who runs an enqueued trial in ``set_trial_state_values(trial_id, RUNNING)``: it reads
the trial's state and writes RUNNING only if it was WAITING. Whether that read-then-write is
atomic depends on the storage:

- **PostgreSQL, MySQL** (any SQLAlchemy server): Optuna reads the row with
  ``SELECT ... FOR UPDATE``; the database holds a row lock until the write commits, so a second
  claimer waits and then reads RUNNING. The database decides: no host-local lock is involved.
- **SQLite** ignores ``FOR UPDATE``, and Python's sqlite3 opens a transaction only at the first
  write, so two processes could both read WAITING and both claim (measured: 13-19 of 40
  enqueued trials run twice with 8 processes). :func:`lock_sqlite_on_begin` makes every
  transaction start with ``BEGIN IMMEDIATE``: it takes SQLite's database write lock before the
  read, so the read-check-write is one atomic step, as with a row lock.
- **Journal file**: every change is a record appended under the journal's file lock, and every
  reader replays the records in the same order; a RUNNING record for a trial that is no longer
  WAITING is rejected at replay, so only the first claim in the file takes effect.

Optuna has no public "set this study attribute unless it exists", which concurrent
``nas search`` commands need so that the paper presets and the start design are enqueued
once: :func:`set_study_attr_once` inserts the row and lets the database's unique constraint
decide (RDB), or holds a lock file beside the journal (the journal's own kind of lock).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.storages.journal import JournalFileBackend, JournalStorage

if TYPE_CHECKING:
    import optuna

__all__ = [
    "heartbeat",
    "is_journal",
    "lock_sqlite_on_begin",
    "new_trial_with_params",
    "planned_params",
    "JournalFile",
    "running_trial",
    "set_study_attr_once",
    "study_id_of",
    "trial_id_of",
]


def lock_sqlite_on_begin(engine: Any) -> None:
    """Make every transaction on this SQLite engine take the write lock when it begins.

    SQLAlchemy's documented recipe for pysqlite: turn off the driver's own deferred BEGIN and
    emit ``BEGIN IMMEDIATE`` from the ``begin`` event. Connections pooled before this call are
    dropped so that none escapes it. ``engine`` is ``RDBStorage.engine`` (a public attribute).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


def is_journal(storage: Any) -> bool:
    return isinstance(storage, JournalStorage)


def study_id_of(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """The storage's id of a study (``Study._study_id`` is private; the storage method is not)."""
    return storage.get_study_id_from_name(study_name)


def trial_id_of(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` (``FrozenTrial._trial_id`` is private)."""
    return storage.get_trial_id_from_study_id_trial_number(study_id_of(storage, study_name), number)


def set_study_attr_once(storage: optuna.storages.BaseStorage, study_name: str, key: str, value: Any) -> bool:
    """Store a study user attribute only if it has none yet; True when this call stored it.

    RDB: an INSERT of the attribute row, which the table's unique (study_id, key) constraint
    refuses for every process but the first; the row layout is Optuna's schema
    (``optuna.storages._rdb.models``, not public), the same in SQLite, PostgreSQL and MySQL.
    Journal: a lock file beside the journal, held while the attribute is read and written.
    """
    from optuna.storages import RDBStorage

    study_id = study_id_of(storage, study_name)
    if isinstance(storage, RDBStorage):
        return _insert_study_attr(storage, study_id, key, value)
    if isinstance(storage, JournalFile):
        with _journal_side_lock(storage):
            if key in storage.get_study_user_attrs(study_id):
                return False
            storage.set_study_user_attr(study_id, key, value)
            return True
    if key in storage.get_study_user_attrs(study_id):  # in-memory: one process, no race
        return False
    storage.set_study_user_attr(study_id, key, value)
    return True


def _insert_study_attr(storage: optuna.storages.RDBStorage, study_id: int, key: str, value: Any) -> bool:
    from optuna.storages._rdb import models  # Optuna's schema: see set_study_attr_once
    from sqlalchemy import exc, insert

    table = models.StudyUserAttributeModel.__table__
    try:
        with storage.engine.begin() as connection:
            connection.execute(insert(table).values(study_id=study_id, key=key, value_json=json.dumps(value)))
    except exc.IntegrityError:
        return False
    return True


class JournalFile(JournalStorage):
    """A journal-file storage that knows its path (for :func:`_journal_side_lock`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(JournalFileBackend(str(path)))
        self.path = path


@contextmanager
def _journal_side_lock(storage: JournalFile) -> Iterator[None]:
    """A lock file next to the journal (Optuna's public JournalFileOpenLock): the same kind of
    lock the journal itself uses, so it holds wherever the journal file is shared."""
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(f"{storage.path}.nas-lock")
    while not lock.acquire():
        pass
    try:
        yield
    finally:
        lock.release()


def new_trial_with_params(
    study: optuna.Study, storage: optuna.storages.BaseStorage, params: dict[str, Any]
) -> optuna.trial.Trial:
    """A new RUNNING trial whose ``suggest_*`` calls return ``params``.

    The Ray backend must run the params Tune's searcher chose as a trial of our study.
    ``study.enqueue_trial`` does not say which trial it made, so the trial is created here
    and given the params the way enqueue_trial does (the ``fixed_params`` system attribute,
    which Optuna's samplers read).
    """
    from optuna.trial import TrialState

    trial_id = storage.create_new_trial(study_id_of(storage, study.study_name))
    storage.set_trial_system_attr(trial_id, "fixed_params", params)
    # The study reads through Optuna's cache of the storage; reading the running trials, as
    # Optuna's own ask does, makes the cache know this one (else its first suggest: KeyError).
    study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return running_trial(study, trial_id)


def planned_params(trial: optuna.trial.FrozenTrial | optuna.trial.Trial) -> dict[str, Any]:
    """The params a trial ran, or was enqueued to run (an enqueued trial lost before it asked
    for them has them only in ``enqueue_trial``'s ``fixed_params`` system attribute)."""
    import optuna

    if trial.params:
        return dict(trial.params)
    if isinstance(trial, optuna.trial.Trial):  # a live trial has no system_attrs: read its stored copy
        trial = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return dict(trial.system_attrs.get("fixed_params") or {})


def running_trial(study: optuna.Study, trial_id: int) -> optuna.trial.Trial:
    """The live ``Trial`` object for a trial this process claimed (Optuna's public class,
    whose constructor its docs advise against: ``study.ask`` cannot claim a chosen trial)."""
    import optuna

    return optuna.trial.Trial(study, trial_id)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat while the block runs, as ``study.optimize`` does for its
    trials (its heartbeat thread is private); a no-op where the storage has none."""
    from optuna.storages import RDBStorage

    rdb = storage if isinstance(storage, RDBStorage) else None
    interval = rdb.get_heartbeat_interval() if rdb is not None else None
    if rdb is None or interval is None:  # only RDB storages keep heartbeats in Optuna 5
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            rdb.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()

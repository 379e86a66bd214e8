"""Trials lost to their worker, node or user: failed with the reason, then run again.

What counts toward ``--n-trials`` (:func:`nas.engine.outcome.counts_toward_target`) leaves
such trials out, so a study still reaches its target after a worker dies. A lost trial's
params (and why it was enqueued: preset, start design) are enqueued again, up to
``max_attempts`` runs in all; after that its failure counts like any other, so a config that
kills its worker every time cannot keep a search going forever.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nas import records as R
from nas.storage.optuna_adapter import planned_params, trial_id_of

if TYPE_CHECKING:
    import optuna

__all__ = ["fail_ownerless_trials", "lose_trial", "recover_lost_trials", "retry_lost_trial", "stale_trial_callback"]

OWNERLESS_AFTER_S = 15.0
"""A RUNNING trial that has not stored its worker's pid this long after it started was
claimed by a worker that died before it recorded itself: a live worker records it within
milliseconds (the first thing the trial runner does)."""


def retry_lost_trial(
    study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.trial.Trial, reason: str, max_attempts: int,
    *, count_attempt: bool = True,
) -> bool:
    """Enqueue ``trial``'s params again if it has attempts left; True when enqueued.

    ``count_attempt=False`` for a stop that says nothing about the config (Ctrl-C).
    """
    attempt = int(trial.user_attrs.get(R.ATTEMPT, 1))
    params = planned_params(trial)
    if (count_attempt and attempt >= max_attempts) or not params:
        return False
    attrs: dict[str, Any] = {key: trial.user_attrs[key] for key in R.ENQUEUE_ATTRS if key in trial.user_attrs}
    attrs.update({
        R.RETRY_OF: trial.number, R.ATTEMPT: attempt + 1 if count_attempt else attempt,
        R.RETRY_REASON: f"trial {trial.number} was lost: {reason}",
    })
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True


def lose_trial(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial: optuna.trial.FrozenTrial,
    reason: str,
    *,
    max_attempts: int,
    rerun_elsewhere: bool = False,
) -> bool:
    """Fail a RUNNING trial whose worker is gone, and run it again if it may.

    Only for trials nobody is working on any more (their process is dead or stopped): the
    reason is stored before the state, which a live worker could still change. With
    ``rerun_elsewhere`` the caller runs the config again itself (Ray Tune retries a trial
    whose worker died), so it is marked lost but not enqueued. Returns False when the trial
    had already finished (then nothing is changed).
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    attempt = int(trial.user_attrs.get(R.ATTEMPT, 1))
    # A trial lost before it proposed a config has nothing to rerun: another trial takes its place.
    again = rerun_elsewhere or attempt < max_attempts
    trial_id = trial_id_of(storage, study.study_name, trial.number)
    note = "; it runs again" if again else f"; attempt {attempt} of {max_attempts}, so it counts as failed"
    try:
        storage.set_trial_user_attr(trial_id, R.FAIL_REASON, reason + note)
        storage.set_trial_user_attr(trial_id, R.LOST, again)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    if again and not rerun_elsewhere:
        retry_lost_trial(study, trial, reason, max_attempts)
    return True


def stale_trial_callback(max_attempts: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Optuna's heartbeat-stale callback: the storage has already failed the trial (a worker
    on some node stopped recording heartbeats); run it again."""
    return _StaleTrialRetry(max_attempts)


class _StaleTrialRetry:
    """A class (not a closure) so that storages holding it can be pickled."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        host, pid = trial.user_attrs.get(R.WORKER_HOST, "?"), trial.user_attrs.get(R.WORKER_PID, "?")
        retry_lost_trial(study, trial, f"no heartbeat from its worker (host {host}, pid {pid})", self.max_attempts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_ownerless_trials(
    study: optuna.Study, storage: optuna.storages.BaseStorage, *, max_attempts: int,
    older_than_s: float = OWNERLESS_AFTER_S,
) -> list[int]:
    """Fail the RUNNING trials that never recorded their worker and started more than
    ``older_than_s`` ago (a kill between the claim and the first attribute); their numbers.

    Neither a pid check (no pid stored) nor Optuna's heartbeat (none recorded yet, or no
    heartbeat on this storage) can find them. Such a trial proposed no config, so nothing is
    run again: it is marked lost and another trial takes its place. Called when a run starts
    (:func:`recover_lost_trials`) and when it ends (:func:`nas.engine.run.run_search`), not per
    trial: an ownerless trial counts for nothing, so finding it later costs nothing.
    """
    import datetime

    import optuna

    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=older_than_s)
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if R.WORKER_PID in trial.user_attrs:
            continue
        if trial.datetime_start is None or trial.datetime_start > cutoff:
            continue
        reason = f"interrupted: its worker died while claiming it (no worker recorded after {older_than_s:g} s)"
        if lose_trial(study, storage, trial, reason, max_attempts=max_attempts):
            lost.append(trial.number)
    return lost


def recover_lost_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, *, max_attempts: int,
                        ownerless_after_s: float = OWNERLESS_AFTER_S) -> list[int]:
    """Fail (and run again) the RUNNING trials nobody is working on; return their numbers.

    On this host a process id says it at once (kill -9, a crash); trials of other hosts are
    found by Optuna's heartbeat (RDB storages), whose callback runs them again.
    """
    import optuna

    host = socket.gethostname()
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = trial.user_attrs.get(R.WORKER_PID)
        if trial.user_attrs.get(R.WORKER_HOST) != host or pid is None or _pid_alive(int(pid)):
            continue
        if lose_trial(study, storage, trial, f"interrupted: its process (pid {pid}) ended", max_attempts=max_attempts):
            lost.append(trial.number)
    lost += fail_ownerless_trials(study, storage, max_attempts=max_attempts, older_than_s=ownerless_after_s)
    with warnings.catch_warnings():  # experimental since Optuna 2.9; we rely on it knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return lost

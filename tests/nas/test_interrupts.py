"""Ctrl-C ends the real CLI with exit 130 however unluckily it lands.

A SIGINT lands wherever the main thread happens to be; a loop that killed the real search a few
dozen times found it inside a string ``exec`` (exit -2) and inside a weakref callback (dropped,
exit 0). Each probe below raises the KeyboardInterrupt exactly there, as the signal would, so
the failure is deterministic; the probe command is added to the real ``nas`` app and the
interpreter is started with ``python -m``, as the tests and many users start it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROBE = """
import sys, time, weakref
from nas import cli

@cli.app.command("probe")
def probe(where: str) -> None:
    if where == "string-exec":
        exec("raise KeyboardInterrupt", {})
    elif where == "weakref-callback":
        class Thing: pass
        def callback(_):
            raise KeyboardInterrupt
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs here; Python prints "Exception ignored" and goes on
        for _ in range(200):
            time.sleep(0.01)
        print("finished")
    elif where == "caught":
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        print("finished")

if __name__ == "__main__":
    cli.entry_point()
"""


def _probe(tmp_path: Path, where: str) -> subprocess.CompletedProcess:
    (tmp_path / "probe_cli.py").write_text(textwrap.dedent(PROBE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "probe_cli", "probe", where], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("where", ["string-exec", "weakref-callback"])
def test_an_interrupt_landing_in_an_awkward_place_still_exits_130(tmp_path, where) -> None:
    done = _probe(tmp_path, where)
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    assert "finished" not in done.stdout  # the interrupt stopped the command
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_keyboard_interrupt_that_code_catches_itself_is_not_a_ctrl_c(tmp_path) -> None:
    done = _probe(tmp_path, "caught")
    assert done.returncode == 0 and "finished" in done.stdout, (done.stdout, done.stderr)


def test_a_held_ctrl_c_is_raised_at_the_next_check_point_and_a_second_one_at_once() -> None:
    import signal

    from nas.interrupts import deferred_interrupts, raise_if_interrupted

    steps = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        signal.raise_signal(signal.SIGINT)  # e.g. while Optuna stores the trial: held
        steps.append("held")
        raise_if_interrupted()
        steps.append("after the check point")
    assert steps == ["held"]
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # the user insists: raised here
        steps.append("after the second")
    assert steps == ["held"]
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        signal.raise_signal(signal.SIGINT)  # no check point left in the block: raised as it ends
        steps.append("block ran to its end")
    assert steps == ["held", "block ran to its end"]
    raise_if_interrupted()  # nothing held any more
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_while_optuna_creates_a_trial_leaves_no_running_trial_and_no_heartbeat_thread(tmp_path) -> None:
    """The hang a kill-mid-run loop found: a Ctrl-C inside Optuna's ask/heartbeat set-up left
    the trial RUNNING with its (non-daemon) heartbeat thread alive, so the process never exited.
    That window is too narrow to hit on purpose; here the SIGINT comes inside ``ask``, after the
    trial row exists (which leaves the trial RUNNING too), and must end the trial at the
    objective's check point."""
    import signal
    import threading

    import optuna

    from nas.interrupts import deferred_interrupts, raise_if_interrupted
    from nas.storage import open_storage

    class CtrlCWhileAsking(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial) -> None:  # noqa: ANN001 - called by ask, the trial row exists
            signal.raise_signal(signal.SIGINT)

    def objective(trial: optuna.Trial) -> float:
        raise_if_interrupted()
        return trial.suggest_float("x", 0, 1)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", on_stale_trial=lambda *_: None)
    study = optuna.create_study(storage=storage, sampler=CtrlCWhileAsking())
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=3)  # not held, as before the fix: the trial stays RUNNING
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    study = optuna.create_study(storage=storage, sampler=CtrlCWhileAsking())
    threads = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        study.optimize(objective, n_trials=3)
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]  # told by Optuna, not left RUNNING
    assert not [t for t in set(threading.enumerate()) - threads if t.is_alive() and not t.daemon]

"""The local backend's supervised workers, driven as a user drives `nas search`.

A real SQLite study, real worker processes, real training; the tests assert on what the
storage holds and what the command says, never on how long anything took.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from nas import records as R
from nas.backends.local import OWN_INTERRUPT_WAIT_SECONDS, _Pool, _Worker, describe_exit, last_error_line, split_trials
from nas.engine.outcome import EXIT_INTERRUPTED, count_toward_target
from nas.records import load_records
from tests.conftest import REPO_ROOT

# Trials of a few seconds each, so that a worker is mid-trial when it is killed.
SEARCH = ["search", "--final", "0", "--budget", "40M", "--train-size", "3000", "--val-size", "100", "--no-presets", "--threads", "1",
          "--quiet", "--workers", "2", "--start-trials", "0"]


def _load(db: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def _running_trial_of(db: Path, name: str, worker: str) -> optuna.trial.FrozenTrial | None:
    try:
        trials = _load(db, name).get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 - the study does not exist yet
        return None
    return next((t for t in trials if t.user_attrs.get(R.WORKER_NAME) == worker and R.CONFIG in t.user_attrs
                 and t.user_attrs.get(R.LEARNING_CURVE) is None), None)


def _kill_worker_mid_trial(db: Path, name: str, search: subprocess.Popen) -> tuple[int, int]:
    """SIGKILL "worker 1" while it trains a trial; return (its pid, that trial's number)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        trial = _running_trial_of(db, name, "worker 1")
        if trial is not None:
            pid = int(trial.user_attrs[R.WORKER_PID])
            os.kill(pid, signal.SIGKILL)
            return pid, trial.number
        assert search.poll() is None, search.communicate()
        time.sleep(0.2)
    raise AssertionError("worker 1 never started a trial")


def _env(tmp_path: Path) -> dict[str, str]:
    """The worker log folders (kept when a worker dies) go under the test's own folder."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


def _log_folders(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("shufflenas-*-workers-*"))


def _search(db: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *SEARCH, "--storage", str(db), "--study", name, *extra],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(db.parent))


def test_a_killed_worker_is_reported_replaced_and_the_study_still_reaches_its_target(tmp_path) -> None:
    db = tmp_path / "s.db"
    search = _search(db, "kill", "--n-trials", "6")
    pid, number = _kill_worker_mid_trial(db, "kill", search)
    out, err = search.communicate(timeout=600)
    assert search.returncode == 0, (out, err)
    assert f"worker 1 (pid {pid}) died with exit code -9 (killed by SIGKILL)" in out
    assert f"its trial #{number} is marked FAIL" in out and "worker 3 takes over" in out
    assert "Traceback" not in out + err
    records = load_records(_load(db, "kill"))
    assert count_toward_target(records) == 6
    lost = next(r for r in records if r.number == number)
    assert lost.state == "FAIL" and lost.lost
    assert lost.attrs[R.FAIL_REASON].startswith(f"interrupted: worker 1 (pid {pid}) died with exit code -9")
    retry = next(r for r in records if r.attrs.get(R.RETRY_OF) == number)  # the same config, run again
    assert retry.state == "COMPLETE" and retry.config == lost.config and retry.attrs[R.ATTEMPT] == 2
    assert Counter(r.state for r in records) == {"COMPLETE": 6, "FAIL": 1}
    (folder,) = _log_folders(tmp_path)  # kept for the dead worker's log, and named in its report
    assert f"{folder / 'worker-1.log'})" in out.replace("\n", "") and (folder / "worker-1.log").is_file()  # lines wrap


def test_with_restarts_off_a_killed_worker_ends_the_search_with_exit_code_1(tmp_path) -> None:
    db = tmp_path / "s.db"
    search = _search(db, "nokeep", "--n-trials", "6", "--worker-restarts", "0")
    pid, _ = _kill_worker_mid_trial(db, "nokeep", search)
    out, err = search.communicate(timeout=600)
    assert search.returncode == 1, (out, err)
    assert f"worker 1 (pid {pid}) died with exit code -9" in out and "restarts are off (--worker-restarts 0)" in out
    assert "workers could not be kept alive" in out
    assert count_toward_target(load_records(_load(db, "nokeep"))) < 6


def test_a_search_whose_every_trial_fails_exits_1(nas, tmp_path) -> None:
    """Regression: "trials: N fail" and exit code 0. Here every config misses the latency
    lookup table the user passed (a table built for another design space)."""
    from nas.latency.lut import LatencyLUT

    table = tmp_path / "other-space.json"
    LatencyLUT(device={"name": "elsewhere"}, entries={}, settings={"threads": 1}).save(table)
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--evaluator", "zero-cost", "--storage", str(tmp_path / "s.db"),
                 "--workers", "1", "--device", "lut", "--lut", str(table), "--quiet")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "every trial of this run failed" in result.stdout and "Traceback" not in result.stderr
    assert "3 fail" in result.stdout


def test_shares_sum_to_the_total_without_empty_workers() -> None:
    assert split_trials(7, 3) == [3, 2, 2] and split_trials(2, 4) == [1, 1] and split_trials(0, 2) == []


def test_exit_codes_and_last_error_lines_are_described_for_people(tmp_path) -> None:
    assert describe_exit(-9) == "exit code -9 (killed by SIGKILL)" and describe_exit(1) == "exit code 1"
    log = tmp_path / "worker.log"
    log.write_text("Traceback (most recent call last):\n  File x\nMemoryError: cannot allocate\n\n")
    assert last_error_line(log) == "MemoryError: cannot allocate"
    assert last_error_line(tmp_path / "missing.log") is None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_marks_running_trials_lost_and_the_same_command_resumes(tmp_path, workers) -> None:
    db = tmp_path / "s.db"
    args = [sys.executable, "-m", "nas.cli", *SEARCH, "--storage", str(db), "--study", "int", "--n-trials", "4",
            "--workers", workers]
    search = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True)
    deadline = time.monotonic() + 300
    while _running_trial_of(db, "int", "worker 1" if workers == "2" else "in-process") is None:
        assert time.monotonic() < deadline and search.poll() is None, search.communicate()
        time.sleep(0.2)
    os.killpg(search.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    out, err = search.communicate(timeout=120)
    assert search.returncode == 130 and "Traceback" not in err, (out, err)
    records = load_records(_load(db, "int"))
    assert not [r for r in records if r.state == "RUNNING"]
    interrupted = [r for r in records if r.state == "FAIL"]
    assert interrupted and all(r.lost and r.attrs[R.FAIL_REASON] == "interrupted by the user" for r in interrupted)
    assert not _log_folders(tmp_path), ("Ctrl-C is no worker death: the temporary log folder is removed", out, err)
    resumed = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = load_records(_load(db, "int"))
    assert count_toward_target(after) == 4 and Counter(r.state for r in after)["COMPLETE"] == 4
    retried = {r.attrs.get(R.RETRY_OF) for r in after} - {None}
    assert retried == {r.number for r in interrupted}  # each interrupted config ran again


def _exiting(code: int):
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(code,))
    process.start()
    process.join()
    return process


def test_a_worker_ending_on_the_ctrl_c_before_its_supervisor_hears_it_is_no_worker_death(tmp_path) -> None:
    """Regression: a worker that exited on the SIGINT before the supervisor's own
    KeyboardInterrupt was raised was reported as a death, and the log folder was kept."""
    settings = SimpleNamespace(worker_restarts=0, max_attempts=3)
    events: list[str] = []
    pool = _Pool(SimpleNamespace(timeout=None, settings=settings), optuna.create_study(), None,
                 SimpleNamespace(worker_event=events.append), tmp_path)
    job = SimpleNamespace(name="worker 1", log_path=str(tmp_path / "worker-1.log"), share=1)
    worker = _Worker(job, _exiting(EXIT_INTERRUPTED))
    threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,)).start()  # the supervisor's Ctrl-C, a moment later
    with pytest.raises(KeyboardInterrupt):
        pool._exited(worker)
        time.sleep(OWN_INTERRUPT_WAIT_SECONDS + 1)  # (before the fix _exited returned at once)
    assert not pool.report.events and not events
    # Ended on SIGINT with no Ctrl-C for the supervisor (someone interrupted that worker alone): a death.
    pool._exited(_Worker(SimpleNamespace(**{**vars(job), "name": "worker 2"}), _exiting(EXIT_INTERRUPTED)))
    assert len(pool.report.events) == 1 and "worker 2" in pool.report.events[0] and "exit code 130" in events[0]

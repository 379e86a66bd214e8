"""`nas search` with more workers than cores on every storage kind, as users break it: the real
command repeated, workers and the whole command killed mid-search, then resumed.

Zero-cost trials (well under a second each) make claims as frequent as they get. What is
checked is what the storage holds afterwards: exactly --n-trials trials that count, every
enqueued trial (presets, start design) run once, nothing left RUNNING, no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from nas import records as R
from nas.engine.outcome import count_toward_target
from nas.errors import UserError
from nas.records import load_records
from tests.conftest import REPO_ROOT, STORAGE_KINDS

ZERO_COST = ["search", "--budget", "140M", "--evaluator", "zero-cost", "--seed", "1", "--quiet"]


def _records(url: str, study: str):  # noqa: ANN202
    """What the storage holds, opened the way `nas` opens it (journal files, psycopg)."""
    from nas.storage import load_study, open_storage

    return load_records(load_study(open_storage(url, create=False), study))


def _enqueued_once(records) -> None:  # noqa: ANN001
    """Every preset and start-design setting finished once (a rerun of a lost one replaces it)."""
    finished = [r for r in records if r.state in ("COMPLETE", "PRUNED")]
    for key in (R.PRESET, R.START_DESIGN):
        counts = Counter(r.attrs[key] for r in finished if key in r.attrs)
        assert counts and max(counts.values()) == 1, f"{key} run more than once: {counts}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_repeated_short_searches_with_more_workers_than_cores(nas, kind, storage_of_kind) -> None:
    url = storage_of_kind(kind)
    for round_ in range(3):
        study = f"bar{round_}"
        result = nas(*ZERO_COST, "--n-trials", "12", "--workers", "4", "--storage", url, "--study", study)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr and "is already set" not in result.stderr
        records = _records(url, study)
        assert Counter(r.state for r in records) == {"COMPLETE": 12}, Counter(r.state for r in records)
        _enqueued_once(records)


def _wait(predicate, process: subprocess.Popen, timeout: float = 300) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)


@pytest.mark.slow
def test_200_trials_with_4_workers_on_postgresql_survive_kills_and_resume(postgres_server) -> None:
    url = postgres_server.create_database("stress")
    args = [sys.executable, "-m", "nas.cli", *ZERO_COST, "--n-trials", "200", "--workers", "4", "--storage", url,
            "--study", "stress"]

    def records():  # noqa: ANN202
        try:
            return _records(url, "stress")
        except UserError:  # the study is not created yet
            return []

    search = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: count_toward_target(records()) >= 40, search)
    running: list[int] = []  # zero-cost trials are short: look until one is caught running

    def caught_running() -> bool:
        running[:] = [int(r.attrs[R.WORKER_PID]) for r in records() if r.state == "RUNNING" and R.WORKER_PID in r.attrs]
        return bool(running)

    _wait(caught_running, search)
    os.kill(running[0], signal.SIGKILL)  # one worker dies: it is replaced
    _wait(lambda: count_toward_target(records()) >= 100, search)
    os.kill(search.pid, signal.SIGKILL)  # then the whole command (its workers die with it)
    search.communicate(timeout=60)
    time.sleep(1)
    before = {r.number: r.state for r in records() if r.state in ("COMPLETE", "PRUNED")}
    resumed = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = records()
    assert count_toward_target(after) == 200
    assert {r.number: r.state for r in after if r.number in before} == before  # no finished trial lost
    assert not [r for r in after if r.state in ("RUNNING", "WAITING")]
    assert all(r.lost for r in after if r.state == "FAIL")  # only trials of the killed processes failed
    _enqueued_once(after)

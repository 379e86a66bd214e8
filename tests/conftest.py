"""Shared fixtures: paths and a helper that runs the real ``nas`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / ".test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the suite's processes even when it was started with SIGINT ignored.

    A non-interactive shell starts a background job (``cmd &``, ``nohup cmd &``) with SIGINT
    ignored, and an ignored signal stays ignored in every child: the tests that interrupt a
    search would then see it run on and exit 0. A handler (unlike "ignore") is reset at exec,
    so the processes the tests start get Python's own KeyboardInterrupt again.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_nas(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``nas`` as a user would (a separate process), capturing its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def nas():
    return run_nas


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def servers_required() -> bool:
    """`.ci/run` sets this: there a missing server must fail the suite, not skip tests."""
    return os.environ.get("SHUFFLENAS_REQUIRE_SERVERS") == "1"


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (see tests/postgres.py)."""
    from tests.postgres import postgres_unavailable_reason, start_postgres

    reason = postgres_unavailable_reason()
    if reason:
        if servers_required():
            pytest.fail(f"SHUFFLENAS_REQUIRE_SERVERS=1 but {reason}")
        pytest.skip(reason)
    server = start_postgres()
    yield server
    server.stop()


STORAGE_KINDS = ("sqlite", "journal", "postgresql")


@pytest.fixture
def storage_of_kind(request, tmp_path):
    """Returns a fresh, empty storage URL of the kind asked for (a new database per call on
    the PostgreSQL server)."""
    counter = iter(range(1000))

    def make(kind: str) -> str:
        index = next(counter)
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / f'studies-{index}.db'}"
        if kind == "journal":
            return f"journal:{tmp_path / f'studies-{index}.log'}"
        server = request.getfixturevalue("postgres_server")
        return server.create_database(f"t{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}_{index}")

    return make


def interrupt_when(args: list[str], ready: Callable[[], bool], *, timeout: float = 300) -> subprocess.Popen:
    """Start ``nas ARGS``, send it Ctrl-C (SIGINT) once ``ready()`` holds, and wait for it to end;
    the finished process, its output in ``.stdout_text`` / ``.stderr_text``."""
    # SIGINT at its default in the child: a suite started in the background (`cmd &`) runs with
    # SIGINT ignored, which the child would inherit, and Ctrl-C would then never arrive.
    process = subprocess.Popen([sys.executable, "-m", "nas.cli", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ready():
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    process.stdout_text, process.stderr_text = out, err  # type: ignore[attr-defined]
    return process

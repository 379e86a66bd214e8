"""`nas dashboard` refuses bad input with one line, binds loopback unless told otherwise, and
lets only the person at the machine act through the page unless told otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard import ACTIONS_ENV, STORAGE_ENV
from nas.commands.dashboard import LOOPBACK, streamlit_argv
from tests.conftest import REPO_ROOT


def test_bad_storage_is_one_line(nas):
    done = nas("dashboard", "--storage", "notes.txt", "--port", "1")
    assert done.returncode == 2
    assert done.stderr.startswith("nas: error: storage 'notes.txt'") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_port_in_use_is_one_line(nas, tmp_path):
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = nas("dashboard", "--storage", str(tmp_path / "runs.db"), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip() == f"nas: error: port {port} on {LOOPBACK} is in use; pass another --port"


def test_bad_port_is_a_usage_error(nas):
    done = nas("dashboard", "--port", "70000")
    assert done.returncode == 2 and done.stderr.startswith("nas: error:") and "Traceback" not in done.stderr


def test_streamlit_command_line_binds_what_it_is_given():
    argv = streamlit_argv(LOOPBACK, 8765)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert argv[4].endswith("dashboard/app.py")
    # Streamlit's developer items (its "Deploy" button, Rerun, Clear cache) mean nothing here.
    assert argv[argv.index("--client.toolbarMode") + 1] == "viewer"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _start(tmp_path: Path, *args: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Run the real `nas dashboard`; return what it printed before Streamlit took over, and the
    environment and command line Streamlit was started with (read from /proc once the command
    has replaced itself with Streamlit), then stop it."""
    server = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "dashboard", "--storage", str(tmp_path / "runs.db"), *args],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    try:
        printed = []
        while not printed or "Ctrl+C stops it" not in printed[-1]:
            line = server.stderr.readline()
            assert line, f"nas dashboard exited early: {printed}"
            printed.append(line.rstrip("\n"))
        proc = Path(f"/proc/{server.pid}")
        deadline = time.monotonic() + 60
        while b"streamlit" not in (proc / "cmdline").read_bytes():
            assert time.monotonic() < deadline and server.poll() is None, "Streamlit did not start"
            time.sleep(0.05)
        argv = (proc / "cmdline").read_bytes().decode().split("\0")
        environ = dict(item.split("=", 1) for item in (proc / "environ").read_bytes().decode().split("\0") if "=" in item)
        return printed, environ, argv
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stderr.close()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the started process from /proc")
@pytest.mark.parametrize(
    ("host", "flag", "actions"),
    [(LOOPBACK, False, "on"), ("0.0.0.0", False, "off"), ("0.0.0.0", True, "on")],
)
def test_what_a_visitor_may_do_is_said_and_passed_to_the_app(tmp_path, host, flag, actions):
    port = _free_port(host)
    printed, environ, argv = _start(tmp_path, "--host", host, "--port", str(port),
                                    *(["--allow-remote-actions"] if flag else []))
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    assert environ[ACTIONS_ENV] == actions and environ[STORAGE_ENV] == storage
    assert argv[argv.index("--client.toolbarMode") + 1] == "viewer"
    assert argv[argv.index("--server.address") + 1] == host
    assert printed[-1] == f"shufflenas dashboard on http://{host}:{port} (storage {storage}); Ctrl+C stops it"
    if host == LOOPBACK:
        assert printed == printed[-1:]
    elif not flag:
        assert printed[:-1] == [
            f"note: serving on 0.0.0.0: anyone who can reach this machine can look at the studies in {storage}, "
            "read-only (no export, no training, no other storage); --allow-remote-actions lets them do those"
        ]
    else:
        assert printed[:-1] == [
            "warning: serving on 0.0.0.0 with --allow-remote-actions: anyone who can reach this machine can run "
            "exports and training on it (writing files as you) and open any storage path"
        ]

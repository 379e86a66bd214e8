"""`nas dashboard` refuses bad input with one line, and binds loopback unless told otherwise."""

from __future__ import annotations

import socket

from nas.commands.dashboard import LOOPBACK, streamlit_argv


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

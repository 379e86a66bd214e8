"""``nas dashboard``: the Streamlit app over the study storage, on loopback unless asked."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Optional

import typer

from nas.errors import UserError

LOOPBACK = "127.0.0.1"


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use; pass another --port") from None
            raise UserError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def streamlit_argv(host: str, port: int) -> list[str]:
    """The Streamlit command line: headless, no file watcher, no usage statistics."""
    app_path = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.headless", "true", "--server.address", host, "--server.port", str(port),
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
    ]


def dashboard(
    storage: Optional[str] = typer.Option(None, "--storage", help="Study storage (default runs/shufflenas.db)."),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port to serve on."),
    host: str = typer.Option(
        LOOPBACK, "--host", help="Address to bind. The default serves this machine only; 0.0.0.0 exposes it to the network."
    ),
) -> None:
    """Open the dashboard: Pareto front, design space, trial detail and export, refreshed live.

    A storage that does not exist yet is fine: the page says so and shows the search once it starts.
    """
    from nas.storage import resolve_storage_url

    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise UserError('the dashboard needs Streamlit: pip install "shufflenas[dashboard]"') from None
    url = resolve_storage_url(storage)
    _check_port_free(host, port)
    if host not in (LOOPBACK, "localhost", "::1"):
        typer.echo(f"note: serving on {host}: anyone who can reach this machine can read the studies", err=True)
    typer.echo(f"shufflenas dashboard on http://{host}:{port} (storage {url}); Ctrl+C stops it", err=True)
    env = {**os.environ, "SHUFFLENAS_STORAGE": url}
    argv = streamlit_argv(host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # replace this process: signals reach Streamlit directly

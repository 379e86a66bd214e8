"""``nas dashboard``: the Streamlit app over the study storage, on loopback unless asked.

The page can act on this machine: its export button runs ``nas export`` (and may train for
hours) and its sidebar opens any storage path. Those are for the person at the machine: on an
address other than loopback they are off unless ``--allow-remote-actions`` is given, and the
app learns which through the environment (``dashboard.ACTIONS_ENV``), as it learns the
storage.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

import typer

from nas.errors import UserError

LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = (LOOPBACK, "localhost", "::1")
TOOLBAR_MODE = "viewer"  # Streamlit's toolbar without its developer items (Deploy, Rerun, Clear cache)


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
    """The Streamlit command line: headless, no file watcher, no usage statistics, and a
    toolbar without Streamlit's developer items (its "Deploy" button means nothing here)."""
    app_path = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.headless", "true", "--server.address", host, "--server.port", str(port),
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
        "--client.toolbarMode", TOOLBAR_MODE,
    ]


def actions_allowed(host: str, allow_remote_actions: bool) -> bool:
    """Write actions (export, training, any storage path) are on for loopback, or when asked."""
    return host in LOOPBACK_HOSTS or allow_remote_actions


def app_environment(storage_url: str, host: str, allow_remote_actions: bool) -> dict[str, str]:
    """What the app reads from its environment: the storage, and whether its actions are on."""
    from dashboard import ACTIONS_ENV, ACTIONS_OFF, ACTIONS_ON, STORAGE_ENV

    on = actions_allowed(host, allow_remote_actions)
    return {STORAGE_ENV: storage_url, ACTIONS_ENV: ACTIONS_ON if on else ACTIONS_OFF}


def startup_message(host: str, port: int, storage_url: str, allow_remote_actions: bool) -> list[str]:
    """The lines printed before Streamlit starts: where, on what, and what a visitor may do."""
    lines = []
    if host not in LOOPBACK_HOSTS:
        if allow_remote_actions:
            lines.append(
                f"warning: serving on {host} with --allow-remote-actions: anyone who can reach this machine can run "
                "exports and training on it (writing files as you) and open any storage path"
            )
        else:
            lines.append(
                f"note: serving on {host}: anyone who can reach this machine can look at the studies in "
                f"{storage_url}, read-only (no export, no training, no other storage); "
                "--allow-remote-actions lets them do those"
            )
    lines.append(f"shufflenas dashboard on http://{host}:{port} (storage {storage_url}); Ctrl+C stops it")
    return lines


def dashboard(
    storage: str | None = typer.Option(None, "--storage", help="Study storage (default runs/shufflenas.db)."),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port to serve on."),
    host: str = typer.Option(
        LOOPBACK, "--host", help="Address to bind. The default serves this machine only; 0.0.0.0 exposes it to the network."
    ),
    allow_remote_actions: bool = typer.Option(
        False, "--allow-remote-actions",
        help="With a --host other than loopback: let visitors run exports and training on this machine and open "
        "any storage path (off by default: they only look at the given storage).",
    ),
) -> None:
    """Open the dashboard: Pareto front, design space, trial detail and export, refreshed live.

    A storage that does not exist yet is fine: the page says so and shows the search once it starts.

    On loopback (the default) the page can also run nas export and open any storage. Served to the network (--host 0.0.0.0), it is read-only over the given storage unless --allow-remote-actions is passed.
    """
    from nas.storage import resolve_storage_url

    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise UserError('the dashboard needs Streamlit: pip install "shufflenas[dashboard]"') from None
    url = resolve_storage_url(storage)
    _check_port_free(host, port)
    for line in startup_message(host, port, url, allow_remote_actions):
        typer.echo(line, err=True)
    env = {**os.environ, **app_environment(url, host, allow_remote_actions)}
    argv = streamlit_argv(host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # replace this process: signals reach Streamlit directly

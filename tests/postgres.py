"""A throw-away PostgreSQL server for the storage tests: Debian's `postgresql` package, a
cluster made with initdb in a temporary folder, on its own port on 127.0.0.1, removed at the end.

`scripts/system-deps.sh` installs the package (CI runs it). Without it the tests that need a
server are skipped locally, with the reason; with SHUFFLENAS_REQUIRE_SERVERS=1 (set by
`.ci/run`) a missing server is an error instead, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "postgres_unavailable_reason", "start_postgres"]


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def postgres_unavailable_reason() -> str | None:
    if _bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql, or run scripts/system-deps.sh)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, but there is no 'postgres' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'shufflenas[postgres]')"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin_dir: Path
    as_user: list[str]

    @property
    def url(self) -> str:
        """The database URL as a user writes it (nas maps postgresql:// to psycopg 3)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/nas"

    def create_database(self, name: str) -> str:
        """A fresh database on this server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / tool), *args], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start as the `postgres` user (initdb refuses root), trust auth on loopback."""
    bin_dir = _bin_dir()
    assert bin_dir is not None, postgres_unavailable_reason()
    folder = Path(tempfile.mkdtemp(prefix="shufflenas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    server = PostgresServer(folder, port, bin_dir, as_user)
    server._run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
    server._run(
        "pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start",
    )
    server._run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas")
    return server

"""A real OpenSSH server on 127.0.0.1 for the tests: its own host key, authorized_keys and
config, started in a private mount namespace (its /run/sshd lives on a private tmpfs) so the
host is not changed (see ../shared/STACK.md)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sshd_unavailable_reason() -> str | None:
    """Why a loopback sshd cannot run here (None when it can); installs openssh-server if root."""
    if not Path(SSHD).exists():
        subprocess.run(["bash", "scripts/system-deps.sh"], cwd=Path(__file__).resolve().parents[3],
                       capture_output=True, timeout=600)
    if not Path(SSHD).exists():
        return "openssh-server is not installed and could not be installed (needs root and apt-get)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client (ssh, ssh-keygen) is not installed"
    if os.geteuid() != 0:
        return "a private mount namespace for sshd needs root (unshare -m)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "shufflenas-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@dataclass
class Sshd:
    process: subprocess.Popen
    port: int
    folder: Path
    host_key: Path
    client_key: Path
    known_hosts: Path
    log: Path

    @property
    def spec(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def options(self, **extra: object) -> dict:
        return {"known_hosts": str(self.known_hosts), "identity_file": str(self.client_key), **extra}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_sshd(folder: Path, client_key: Path, *, force_command: str | None = None) -> Sshd:
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "host_ed25519")
    (folder / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    lines = [
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "UsePAM no", "StrictModes no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", f"PidFile {folder / 'sshd.pid'}", "Subsystem sftp internal-sftp",
        "MaxStartups 50:30:100", "LogLevel VERBOSE",
    ]
    if force_command:
        lines.append(f"ForceCommand {force_command}")
    config = folder / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    log = folder / "sshd.log"
    script = "mount -t tmpfs -o size=1m tmpfs /run && mkdir -m 755 /run/sshd && exec \"$0\" -D -f \"$1\" -E \"$2\""
    process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, SSHD, str(config),
                                str(log)], stdin=subprocess.DEVNULL)
    public = (Path(f"{host_key}.pub").read_text().split())
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    server = Sshd(process, port, folder, host_key, client_key, known_hosts, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("sshd did not start listening within 15 s")

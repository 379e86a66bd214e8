"""``ssh://[user@]host[:port]`` or a bare host alias: a Linux board over SSH, through the
OpenSSH client so ~/.ssh/config (aliases, keys, ProxyJump) applies. Host keys are verified by
default (StrictHostKeyChecking=yes).

One ssh session per call: the runner and the models travel as a tar stream on stdin into a
fresh temporary folder on the device, the runner runs there, and the folder is removed. Only
``sh``, ``tar``, ``mktemp`` and ``python3`` are needed on the device (no sftp/scp subsystem,
so it also works behind a ForceCommand). Every piece of the remote command that is not a
constant is quoted with shlex.quote; the local side uses argv lists, never a shell.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nas.errors import UserError
from nas.latency.devices import register_device
from nas.latency.errors import DeviceError, DeviceUnavailableError
from nas.latency.runner_device import RUNNER_PATH, PythonRunnerDevice

__all__ = ["SshDevice", "SshTarget", "parse_ssh_spec"]

_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.%:-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None


def parse_ssh_spec(spec: str) -> SshTarget:
    """``ssh://[user@]host[:port]``, or a bare ``[user@]alias`` from the user's ssh config."""
    text = spec if spec.startswith("ssh://") else f"ssh://{spec}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise UserError(f"device {spec!r} is not ssh://[user@]host[:port] ({error})") from None
    host, user = parts.hostname or "", parts.username
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password is not None:
        raise UserError(f"device {spec!r} is not ssh://[user@]host[:port]; put other settings in ~/.ssh/config")
    if not _HOST.match(host) or (user is not None and not _USER.match(user)):
        raise UserError(f"device {spec!r}: unusable host or user name (use local, adb[:serial] or ssh://[user@]host[:port])")
    return SshTarget(host=host, user=user, port=port)


@register_device("ssh", default=True)
class SshDevice(PythonRunnerDevice):
    """Specs with the ``ssh`` scheme, and every spec no other kind claims (a bare alias)."""

    usage = "ssh://[user@]host[:port]"
    OPTIONS = frozenset({
        "known_hosts", "identity_file", "ssh_config", "accept_new_host_key", "remote_python",
        "connect_timeout", "ssh_options", "ssh_binary",
    })

    def __init__(
        self,
        spec: str,
        target: SshTarget,
        *,
        known_hosts: str | Path | None = None,
        identity_file: str | Path | None = None,
        ssh_config: str | Path | None = None,
        accept_new_host_key: bool = False,
        remote_python: str = "python3",
        connect_timeout: float = 10.0,
        ssh_options: Sequence[str] = (),
        ssh_binary: str = "ssh",
    ) -> None:
        super().__init__(spec)
        self.target = target
        self.python_command = remote_python
        self.known_hosts = known_hosts
        self.identity_file = identity_file
        self.ssh_config = ssh_config
        self.accept_new_host_key = accept_new_host_key
        self.connect_timeout = connect_timeout
        self.ssh_options = tuple(ssh_options)
        self.ssh_binary = ssh_binary

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> SshDevice:
        return cls(spec, parse_ssh_spec(spec), **options)

    # -- the ssh command line ---------------------------------------------------------------
    def ssh_argv(self, remote_command: str) -> list[str]:
        checking = "accept-new" if self.accept_new_host_key else "yes"
        argv = [self.ssh_binary, "-T", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={checking}",
                "-o", f"ConnectTimeout={int(self.connect_timeout)}", "-o", "ServerAliveInterval=15",
                "-o", "LogLevel=ERROR"]
        if self.ssh_config:
            argv += ["-F", str(self.ssh_config)]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity_file:
            argv += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        for option in self.ssh_options:
            argv += ["-o", option]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        return argv + ["--", self.target.host, remote_command]

    def remote_command(self, runner_args: Sequence[str]) -> str:
        """Unpack stdin into a fresh folder, run the runner there, clean up, keep its exit code."""
        python = _quote_path(self.python_command)
        args = " ".join(shlex.quote(arg) for arg in runner_args)
        return (
            'd=$(mktemp -d "${TMPDIR:-/tmp}/shufflenas.XXXXXX") || exit 70; '
            'cd "$d" && tar -xf - || { rm -rf "$d"; exit 71; }; '
            f"{python} runner.py {args}; rc=$?; cd / && rm -rf \"$d\"; exit $rc"
        )

    def _run_runner(self, runner_args: list[str], files: Sequence[Path], timeout_s: float) -> tuple[int, str, str]:
        argv = self.ssh_argv(self.remote_command(runner_args))
        try:
            done = subprocess.run(argv, input=_tar_payload([RUNNER_PATH, *files]), capture_output=True,
                                  timeout=timeout_s + self.connect_timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.spec}: no result within {timeout_s + self.connect_timeout:g} s (timeout)") from None
        except FileNotFoundError:
            raise DeviceUnavailableError(
                f"the ssh client '{self.ssh_binary}' is not installed here (apt-get install openssh-client)"
            ) from None
        stdout = done.stdout.decode(errors="replace")
        stderr = done.stderr.decode(errors="replace")
        if done.returncode == 255:
            raise DeviceUnavailableError(self._ssh_failure(stderr))
        if done.returncode in (70, 71):
            raise DeviceError(f"{self.spec}: cannot unpack the model on the device (needs sh, mktemp, tar and a "
                              f"writable $TMPDIR or /tmp): {_last(stderr)}")
        return done.returncode, stdout, stderr

    def _ssh_failure(self, stderr: str) -> str:
        """ssh exits 255 for its own errors; turn its message into a one-line reason with a fix."""
        host = self.target.host
        port = f" -p {self.target.port}" if self.target.port else ""
        text = stderr.lower()
        if "remote host identification has changed" in text:
            return (f"{self.spec}: the host key of {host} CHANGED since it was recorded; refusing to connect "
                    f"(if the board was reinstalled, remove the old key: ssh-keygen -R {host})")
        if "host key verification failed" in text or "no " in text and "host key is known" in text:
            where = f" ({self.known_hosts})" if self.known_hosts else ""
            return (f"{self.spec}: the host key of {host} is not known{where}; check it and add it "
                    f"(ssh{port} {host} once, or ssh-keyscan{port} {host} >> ~/.ssh/known_hosts), "
                    f"or pass --accept-new-host-key to trust it on first use")
        if "permission denied" in text or "too many authentication failures" in text:
            return (f"{self.spec}: authentication refused by {host} ({_last(stderr)}); check the user name and "
                    f"key (--identity-file, ssh-copy-id, or ~/.ssh/config)")
        for marker in ("connection refused", "could not resolve hostname", "no route to host", "timed out",
                       "network is unreachable", "connection closed", "connection reset", "name or service not known"):
            if marker in text:
                return f"{self.spec}: cannot reach {host}: {_last(stderr)}"
        return f"{self.spec}: ssh failed: {_last(stderr)}"


def _quote_path(path: str) -> str:
    """shlex-quote a program path, keeping a leading ~/ expandable."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _tar_payload(files: Sequence[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for path in files:
            info = archive.gettarinfo(str(path), arcname=Path(path).name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue()


def _last(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"

"""``local``: this host as a device, runner.py in a subprocess of this Python (same path as a board)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nas.latency.devices import register_device
from nas.latency.errors import DeviceError, DeviceUnavailableError
from nas.latency.runner_device import RUNNER_PATH, PythonRunnerDevice

__all__ = ["LocalDevice"]


@register_device("local")
class LocalDevice(PythonRunnerDevice):
    """Runs the same runner script a remote board runs, so local and remote numbers compare.

    A subprocess rather than in-process timing: thread settings and imports stay isolated
    from the search process (which may hold torch threads busy).
    """

    usage = "local"
    OPTIONS = frozenset({"python"})

    def __init__(self, spec: str = "local", *, python: str | None = None) -> None:
        super().__init__(spec)
        self.python_command = python or sys.executable

    def _run_runner(self, runner_args: list[str], files: Sequence[Path], timeout_s: float) -> tuple[int, str, str]:
        by_name = {Path(path).name: str(Path(path).resolve()) for path in files}
        args = [by_name.get(arg, arg) for arg in runner_args]
        try:
            done = subprocess.run([self.python_command, str(RUNNER_PATH), *args], capture_output=True, text=True,
                                  timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.spec}: no result within {timeout_s:g} s (timeout)") from None
        except OSError as error:
            raise DeviceUnavailableError(f"{self.spec}: cannot start {self.python_command}: {error.strerror}") from None
        return done.returncode, done.stdout, done.stderr

"""What the local and SSH kinds share: they run runner.py with a Python of the device and
read its JSON answer. A kind built on it only says how to run the runner there."""

from __future__ import annotations

import json
import signal
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.latency.devices import Device
from nas.latency.errors import DeviceError, DeviceUnavailableError
from nas.latency.timing import RunSettings, Timing

__all__ = ["INSTALL_HINT", "MISSING_RUNTIME_EXIT", "PythonRunnerDevice", "RUNNER_PATH", "describe_exit"]

RUNNER_PATH = Path(__file__).with_name("runner.py")
MISSING_RUNTIME_EXIT = 3
INSTALL_HINT = "python3 -m pip install onnxruntime numpy"


class PythonRunnerDevice(Device):
    """A device that runs runner.py with its own python3: local and SSH share the parsing."""

    python_command: str = "python3"

    @abstractmethod
    def _run_runner(self, runner_args: list[str], files: Sequence[Path], timeout_s: float) -> tuple[int, str, str]:
        """Run ``runner.py ARGS`` on the device with ``files`` beside it; (exit code, stdout, stderr)."""

    def _probe(self) -> dict[str, Any]:
        info = self._call(["probe"], [], 120.0)
        info["python_command"] = self.python_command
        return info

    def missing_runtime_message(self, info: dict[str, Any]) -> str:
        return (f"{self.spec}: onnxruntime is not installed for {info.get('python_command', 'python3')} on the "
                f"device ({info.get('arch', '?')}, Python {info.get('python', '?')}); install it there with: "
                f"{INSTALL_HINT}")

    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        self.require_runtime()
        files = [Path(model) for model in models]
        names = [path.name for path in files]
        if len(set(names)) != len(names):
            raise ValueError("model file names must be distinct")
        args = ["measure", *settings.runner_args()]
        if input_file is not None:
            files.append(Path(input_file))
            args += ["--input", Path(input_file).name]
        payload = self._call(args + names, files, settings.timeout_s)
        timings = []
        for entry in payload.get("results", []):
            output = entry.get("output")
            timings.append(Timing(
                model=entry["model"],
                times_ms=tuple(entry["times_ms"]),
                output=tuple(output) if output is not None else None,
                output_shape=tuple(entry["output_shape"]) if "output_shape" in entry else None,
                unblocked_params=entry.get("unblocked_conv_params"),
            ))
        if len(timings) != len(models):
            raise DeviceError(f"{self.spec}: the runner returned {len(timings)} results for {len(models)} models")
        return timings

    def _call(self, runner_args: list[str], files: Sequence[Path], timeout_s: float) -> dict[str, Any]:
        code, stdout, stderr = self._run_runner(runner_args, files, timeout_s)
        payload = _last_json(stdout)
        if code == MISSING_RUNTIME_EXIT and payload and payload.get("error") == "missing_runtime":
            probe = {**payload.get("probe", {}), "python_command": self.python_command}
            raise DeviceUnavailableError(self.missing_runtime_message(probe))
        if code == 127:
            raise DeviceUnavailableError(f"{self.spec}: '{self.python_command}' was not found on the device; install Python 3 "
                              f"there, then: {INSTALL_HINT}")
        if code != 0:
            raise DeviceError(f"{self.spec}: the runtime on the device {describe_exit(code)}: {_last_line(stderr)}")
        if payload is None:
            raise DeviceError(f"{self.spec}: the device answered without a result: {_last_line(stdout or stderr)}")
        return payload


def describe_exit(code: int) -> str:
    """'crashed (signal 11, SIGSEGV)' or 'failed (exit 1)'."""
    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        return f"crashed (signal {number}, {name})"
    return f"failed (exit {code})"


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"

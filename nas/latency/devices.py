"""The one interface every device kind implements (probe, measure), and the spec parser.

A device spec is a string the user types: ``local``, ``ssh://[user@]host[:port]`` (or a bare
host alias from ~/.ssh/config), ``adb`` or ``adb:SERIAL``. :func:`open_device` turns it into
a :class:`Device`; each kind lives in its own module (local.py, ssh.py, adb.py).
"""

from __future__ import annotations

import json
import re
import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nas.errors import UserError

__all__ = [
    "Device",
    "DeviceError",
    "DeviceUnavailableError",
    "RunSettings",
    "Timing",
    "PythonRunnerDevice",
    "open_device",
    "summarize",
    "RUNNER_PATH",
]

RUNNER_PATH = Path(__file__).with_name("runner.py")
MISSING_RUNTIME_EXIT = 3
INSTALL_HINT = "python3 -m pip install onnxruntime numpy"


class DeviceError(UserError):
    """A device could not be reached or could not measure; the message is one line."""


class DeviceUnavailableError(DeviceError):
    """The device cannot measure anything (unreachable, refused, unknown host key, no runtime):
    a search should stop rather than fail every trial. Other DeviceErrors concern one model."""


@dataclass(frozen=True)
class RunSettings:
    """How to time a model: practice is >= 10 warm-ups, >= 50 runs, one thread, batch 1."""

    threads: int = 1
    warmup: int = 10
    runs: int = 50
    rounds: int = 1
    outputs: bool = False
    timeout_s: float = 600.0
    clock: str = "auto"
    """"wall", "cpu" (the runner thread's CPU time), or "auto": cpu with one thread, else wall.
    With one thread ONNX Runtime computes on the calling thread, so its CPU time is the
    latency an idle device shows, and time a shared machine gives to others is left out."""

    def __post_init__(self) -> None:
        if self.threads < 1 or self.warmup < 0 or self.runs < 1 or self.rounds < 1:
            raise UserError("threads and runs must be >= 1, warm-ups >= 0")
        if self.clock not in ("auto", "wall", "cpu"):
            raise UserError(f"clock must be auto, wall or cpu, got {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise UserError("--clock cpu times one thread; use it with --threads 1 (or --clock wall)")

    @property
    def effective_clock(self) -> str:
        if self.clock == "auto":
            return "cpu" if self.threads == 1 else "wall"
        return self.clock

    def runner_args(self) -> list[str]:
        args = ["--threads", str(self.threads), "--warmup", str(self.warmup), "--runs", str(self.runs),
                "--rounds", str(self.rounds), "--clock", self.effective_clock]
        return args + (["--outputs"] if self.outputs else [])


@dataclass(frozen=True)
class Stats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    spread: float
    """(p90 - p10) / median: how noisy the device was."""
    runs: int


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(times_ms: Sequence[float]) -> Stats:
    values = sorted(float(value) for value in times_ms)
    if not values:
        raise DeviceError("the device returned no timings")
    median = statistics.median(values)
    p10, p90 = _percentile(values, 0.10), _percentile(values, 0.90)
    return Stats(median, p10, p90, (p90 - p10) / median if median > 0 else 0.0, len(values))


@dataclass(frozen=True)
class Timing:
    """One model's timings on a device (and its output, when asked for)."""

    model: str
    times_ms: tuple[float, ...]
    output: tuple[float, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    stats_override: Stats | None = field(default=None, compare=False)
    """Set by devices whose tool reports only percentiles (adb), not every run."""

    @property
    def stats(self) -> Stats:
        return self.stats_override or summarize(self.times_ms)


class Device(ABC):
    """Something that can run an ONNX model and time it."""

    kind: str = "device"

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._info: dict[str, Any] | None = None

    def probe(self) -> dict[str, Any]:
        """Architecture, CPU model, cores and runtime versions (cached per object)."""
        if self._info is None:
            info = self._probe()
            self._info = {"spec": self.spec, "kind": self.kind, **info}
        return self._info

    @abstractmethod
    def _probe(self) -> dict[str, Any]: ...

    @abstractmethod
    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        """Time each ONNX file; one upload and one runtime start for all of them."""

    def require_runtime(self) -> dict[str, Any]:
        info = self.probe()
        if not info.get("onnxruntime"):
            raise DeviceUnavailableError(self.missing_runtime_message(info))
        return info

    def missing_runtime_message(self, info: dict[str, Any]) -> str:
        return (f"{self.spec}: onnxruntime is not installed for {info.get('python_command', 'python3')} on the "
                f"device ({info.get('arch', '?')}, Python {info.get('python', '?')}); install it there with: "
                f"{INSTALL_HINT}")

    def close(self) -> None:
        """Release connections (nothing to do for most kinds)."""


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
            ))
        if len(timings) != len(models):
            raise DeviceError(f"{self.spec}: the runner returned {len(timings)} results for {len(models)} models")
        return timings

    def _call(self, runner_args: list[str], files: Sequence[Path], timeout_s: float) -> dict[str, Any]:
        code, stdout, stderr = self._run_runner(runner_args, files, timeout_s)
        payload = _last_json(stdout)
        if code == MISSING_RUNTIME_EXIT and payload and payload.get("error") == "missing_runtime":
            raise DeviceUnavailableError(self.missing_runtime_message({**payload.get("probe", {}), "python_command": self.python_command}))
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
    import signal

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


_SAFE_HOST = re.compile(r"^[A-Za-z0-9_.%\[\]:-]+$")


def open_device(spec: str, **options: Any) -> Device:
    """The device a spec names. Options go to the device kind (e.g. known_hosts for SSH).

    >>> open_device("local").kind
    'local'
    """
    text = (spec or "").strip()
    if not text:
        raise UserError("--device is empty; use local, ssh://[user@]host[:port] or adb[:serial]")
    if text == "local":
        from nas.latency.local import LocalDevice

        return LocalDevice(**_only(options, LocalDevice.OPTIONS, text))
    if text == "adb" or text.startswith("adb:"):
        from nas.latency.adb import AdbDevice

        serial = text[4:] or None
        return AdbDevice(text, serial=serial, **_only(options, AdbDevice.OPTIONS, text))
    from nas.latency.ssh import SshDevice, parse_ssh_spec

    target = parse_ssh_spec(text)
    return SshDevice(text, target, **_only(options, SshDevice.OPTIONS, text))


def _only(options: dict[str, Any], allowed: frozenset[str], spec: str) -> dict[str, Any]:
    """Drop options that are None and options meant for other kinds (the CLI passes them all)."""
    return {key: value for key, value in options.items() if value is not None and key in allowed}

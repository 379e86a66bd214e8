"""``adb`` or ``adb:SERIAL``, an Android phone over adb: push the model, run a benchmark
binary the user names (ONNX files) or ExecuTorch's ``executor_runner`` (``.pte`` programs).

Phones rarely have Python, so timing uses ONNX Runtime's own ``onnxruntime_perf_test``
(build it for Android from the onnxruntime repository, ``adb push`` it to the phone, and pass
its path with ``--benchmark-binary``). Each model gets a warm-up invocation (``-r WARMUP``)
and then the timed one (``-r RUNS``); its summary gives the median (P50) and P90. It prints no
P10, so p10 is its "Min Latency" (a lower bound), which the result says.

ExecuTorch programs run in a prebuilt ``executor_runner`` (ExecuTorch's
``examples/portable/executor_runner``, built for the phone's ABI with the XNNPACK backend, pushed
to the phone and named with ``--executor-runner``): a warm-up invocation, then one with
``--num_executions RUNS``, whose per-iteration lines ("Iteration i of N: X ms", on stderr from
ExecuTorch's default platform layer) give median, p10 and p90. Releases that print only the
total ("Model executed successfully N time(s) in X ms.") give the mean, with no spread.

``adb shell`` hands its arguments to the phone's shell as one string, so every piece that is
not a constant is quoted with shlex.quote.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.latency.devices import Device, register_device
from nas.latency.errors import DeviceError, DeviceUnavailableError
from nas.latency.timing import RunSettings, Stats, Timing

__all__ = ["AdbDevice", "parse_executor_runner_output", "parse_perf_test_output"]

DEFAULT_REMOTE_DIR = "/data/local/tmp/shufflenas"
INSTALL_HINT = ("build onnxruntime_perf_test for Android (onnxruntime: ./build.sh --android --android_abi arm64-v8a "
                "...), adb push it to /data/local/tmp/ and pass --benchmark-binary /data/local/tmp/onnxruntime_perf_test")

EXECUTORCH_HINT = ("build ExecuTorch's examples/portable/executor_runner for Android with the XNNPACK backend "
                   "(arm64-v8a), adb push it to /data/local/tmp/ and pass --executor-runner "
                   "/data/local/tmp/executor_runner")
_ITERATION = re.compile(r"Iteration\s+\d+\s+of\s+\d+:\s*([0-9.eE+-]+)\s*ms")
_TOTAL = re.compile(r"Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+([0-9.eE+-]+)\s*ms")


def parse_executor_runner_output(text: str) -> Stats:
    """Median, p10 and p90 in ms from executor_runner's per-iteration lines, or the mean (no
    spread) from its total line when the release prints only that."""
    from nas.latency.timing import summarize

    times = [float(value) for value in _ITERATION.findall(text)]
    if times:
        return summarize(times)
    total = _TOTAL.search(text)
    if total is None or int(total.group(1)) == 0:
        raise DeviceError("executor_runner printed no timing (its log goes to stderr from ExecuTorch's default "
                          "platform layer; a build that logs only to logcat cannot be timed this way)")
    mean = float(total.group(2)) / int(total.group(1))
    return Stats(mean, mean, mean, 0.0, int(total.group(1)))


# "P50 Latency: 0.0123 s" (performance_runner.cc today), "P50 Latency is 0.0123sec" (older).
_LINE = re.compile(r"^\s*(Average inference time cost|Min Latency|Max Latency|P50 Latency|P90 Latency)\s*(?::|is)\s*"
                   r"([0-9.eE+-]+)\s*(ms|sec|s)?", re.MULTILINE)


def parse_perf_test_output(text: str) -> Stats:
    """Median, p10 (min) and p90 in ms from onnxruntime_perf_test's summary."""
    values: dict[str, float] = {}
    for name, number, unit in _LINE.findall(text):
        values[name] = float(number) * (1000.0 if unit in ("s", "sec") else 1.0)
    median = values.get("P50 Latency", values.get("Average inference time cost"))
    if median is None or "P90 Latency" not in values:
        raise DeviceError("the benchmark binary printed no latency percentiles (is it onnxruntime_perf_test, "
                          "run with -s?)")
    low = values.get("Min Latency", median)
    p90 = values["P90 Latency"]
    return Stats(median, low, p90, (p90 - low) / median if median > 0 else 0.0, 0)


@register_device("adb")
class AdbDevice(Device):
    runtimes = ("onnxruntime", "executorch")  # onnxruntime_perf_test, executor_runner
    usage = "adb[:serial]"
    OPTIONS = frozenset({"benchmark_binary", "executor_runner", "adb_binary", "remote_dir", "adb_timeout"})

    def __init__(self, spec: str, *, serial: str | None = None, benchmark_binary: str | None = None,
                 executor_runner: str | None = None, adb_binary: str = "adb", remote_dir: str = DEFAULT_REMOTE_DIR,
                 adb_timeout: float = 60.0) -> None:
        super().__init__(spec)
        if serial is not None and not re.match(r"^[A-Za-z0-9_.:\-]+$", serial):
            raise DeviceError(f"adb serial {serial!r} has unexpected characters (see 'adb devices')")
        self.serial = serial
        self.benchmark_binary = benchmark_binary
        self.executor_runner = executor_runner
        self.adb_binary = adb_binary
        self.remote_dir = remote_dir
        self.adb_timeout = adb_timeout

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> AdbDevice:
        return cls(spec, serial=spec[4:] or None, **options)

    def _adb(self, *args: str, timeout: float | None = None) -> str:
        argv = [self.adb_binary, *(["-s", self.serial] if self.serial else []), *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or self.adb_timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise DeviceUnavailableError("the adb command is not installed here (apt-get install adb, or the Android "
                              "platform-tools)") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.spec}: adb gave no answer within {timeout or self.adb_timeout:g} s (timeout)") from None
        if done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
            lowered = message.lower()
            if "not found" in lowered and ("device" in lowered or "no devices" in lowered):
                raise DeviceUnavailableError(f"{self.spec}: no such phone connected ({message}); see 'adb devices'")
            if "unauthorized" in lowered:
                raise DeviceUnavailableError(f"{self.spec}: the phone has not authorized this computer (accept the USB "
                                  f"debugging prompt on the phone)")
            raise DeviceError(f"{self.spec}: adb failed: {message[:300]}")
        return done.stdout

    def _shell(self, command: str, timeout: float | None = None) -> str:
        return self._adb("shell", command, timeout=timeout)

    def _probe(self) -> dict[str, Any]:
        def present(path: str | None) -> str:
            quoted = shlex.quote(path) if path else "''"
            return f"if [ -n {quoted} ] && [ -x {quoted} ]; then echo present; else echo missing; fi"

        text = self._shell(
            "getprop ro.product.cpu.abi; getprop ro.product.model; getprop ro.soc.model; uname -m; nproc; "
            f"{present(self.benchmark_binary)}; {present(self.executor_runner)}"
        )
        lines = [line.strip() for line in text.splitlines()] + [""] * 7
        abi, model, soc, arch, cores, runtime, runner = lines[:7]
        return {
            "arch": arch or abi, "abi": abi, "cpu_model": soc or model, "phone": model,
            "cores": int(cores) if cores.isdigit() else None,
            "runtime": f"onnxruntime_perf_test at {self.benchmark_binary}" if runtime == "present" else None,
            "onnxruntime": f"perf_test:{self.benchmark_binary}" if runtime == "present" else None,
            "executorch": f"executor_runner:{self.executor_runner}" if runner == "present" else None,
        }

    def require_runtime(self, runtime: str = "onnxruntime") -> dict[str, Any]:
        if runtime == "executorch":
            info = self.probe()
            if not info.get("executorch"):
                named = (f"{self.executor_runner} is not an executable on the phone" if self.executor_runner
                         else "name the executor_runner on the phone with --executor-runner")
                raise DeviceUnavailableError(f"{self.spec}: {named}; {EXECUTORCH_HINT}")
            return info
        return super().require_runtime(runtime)

    def missing_runtime_message(self, info: dict[str, Any]) -> str:
        if not self.benchmark_binary:
            return f"{self.spec}: name the benchmark binary on the phone with --benchmark-binary; {INSTALL_HINT}"
        return f"{self.spec}: {self.benchmark_binary} is not an executable on the phone; {INSTALL_HINT}"

    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        if settings.outputs or input_file is not None:
            raise DeviceError(f"{self.spec}: adb devices time models but do not return their outputs")
        for runtime in sorted({"executorch" if Path(m).suffix == ".pte" else "onnxruntime" for m in models}):
            self.require_runtime(runtime)
        folder = shlex.quote(self.remote_dir)
        self._shell(f"mkdir -p {folder}")
        binary = shlex.quote(str(self.benchmark_binary))
        timings = []
        for model in models:
            remote = f"{self.remote_dir}/{Path(model).name}"
            self._adb("push", str(model), remote, timeout=settings.timeout_s)
            if Path(model).suffix == ".pte":
                timings.append(self._time_program(Path(model).name, remote, settings))
                continue
            # -s prints the percentiles; -I generates the input (no test_data_set folder on the phone).
            common = f"-m times -s -x {int(settings.threads)} -I {shlex.quote(remote)}"
            warmup = f"{binary} -r {max(1, int(settings.warmup))} {common} >/dev/null && " if settings.warmup else ""
            text = self._shell(f"{warmup}{binary} -r {int(settings.runs)} {common}; rc=$?; rm -f {shlex.quote(remote)}; "
                               f"exit $rc", timeout=settings.timeout_s)
            stats = parse_perf_test_output(text)
            stats = Stats(stats.median_ms, stats.p10_ms, stats.p90_ms, stats.spread, settings.runs)
            timings.append(Timing(model=Path(model).name, times_ms=(), stats_override=stats))
        return timings

    def _time_program(self, name: str, remote: str, settings: RunSettings) -> Timing:
        """A .pte in executor_runner: a warm-up invocation, then the timed one (its log on stderr)."""
        runner = shlex.quote(str(self.executor_runner))
        common = f"--model_path {shlex.quote(remote)} --cpu_threads {int(settings.threads)} --print_output none"
        warmup = (f"{runner} {common} --num_executions {max(1, int(settings.warmup))} >/dev/null 2>&1 && "
                  if settings.warmup else "")
        text = self._shell(f"{warmup}{runner} {common} --num_executions {int(settings.runs)} 2>&1; rc=$?; "
                           f"rm -f {shlex.quote(remote)}; exit $rc", timeout=settings.timeout_s)
        stats = parse_executor_runner_output(text)
        return Timing(model=name, times_ms=(), stats_override=Stats(stats.median_ms, stats.p10_ms, stats.p90_ms,
                                                                     stats.spread, settings.runs))

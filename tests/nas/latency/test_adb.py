"""adb devices. There is no Android phone or emulator on the test machines, so this test puts
a FAKE ``adb`` on PATH (for this test only): it plays a phone whose /data/local/tmp lives in a
temporary folder, runs ``adb shell`` commands with sh there, and has a stand-in
``onnxruntime_perf_test`` that times the model with this host's ONNX Runtime and prints the
real tool's summary format, and a stand-in ``executor_runner`` that runs the .pte in this host's
ExecuTorch runtime and logs as ExecuTorch's runner does (per-iteration lines and the total, on
stderr). What is real: our argv, quoting, push, parsing and errors; not the phone's binaries."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from nas.latency import DeviceError, RunSettings, measure_config, open_device
from nas.latency.kinds.adb import parse_perf_test_output

FAKE_ADB = r'''#!{python}
import os, shutil, subprocess, sys
root = os.environ["FAKE_PHONE_ROOT"]
args = sys.argv[1:]
if args[:1] == ["-s"]:
    if args[1] != "emulator-5554":
        sys.exit(print(f"adb: device '{{args[1]}}' not found", file=sys.stderr) or 1)
    args = args[2:]
with open(os.path.join(root, "adb-calls.log"), "a") as log:
    log.write(repr(args) + "\n")
phone = lambda text: text.replace("/data/local/tmp", root + "/data/local/tmp")
if args[0] == "push":
    shutil.copy(args[1], phone(args[2]))
    print(f"{{args[1]}}: 1 file pushed")
elif args[0] == "shell":
    env = dict(os.environ, PATH=root + "/bin:" + os.environ["PATH"])
    sys.exit(subprocess.run(["sh", "-c", phone(args[1])], env=env).returncode)
else:
    sys.exit(f"fake adb: unsupported {{args}}")
'''

FAKE_GETPROP = """#!/bin/sh
case "$1" in
  ro.product.cpu.abi) echo arm64-v8a ;;
  ro.product.model) echo Pixel-Fake ;;
  ro.soc.model) echo SM8550 ;;
esac
"""

FAKE_PERF_TEST = r'''#!{python}
# Stand-in for onnxruntime_perf_test on the phone: same flags, same summary lines (as printed by
# onnxruntime/test/perftest/performance_runner.cc: percentiles in seconds, and only with -s).
import sys, time, numpy as np, onnxruntime as ort
args = sys.argv[1:]
runs = int(args[args.index("-r") + 1]); threads = int(args[args.index("-x") + 1]); model = args[-1]
options = ort.SessionOptions(); options.intra_op_num_threads = threads
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
meta = session.get_inputs()[0]
feed = {{meta.name: np.zeros(meta.shape, dtype=np.float32)}}
times = []
for _ in range(runs):
    start = time.perf_counter(); session.run(None, feed); times.append(time.perf_counter() - start)
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"Total inference requests: {{runs}}")
print(f"Average inference time cost: {{1000 * sum(times) / runs}} ms")
if "-s" in args:  # the real binary prints percentiles only with -s (PerformanceResult::DumpToFile)
    print(f"Min Latency: {{times[0]}} s")
    print(f"Max Latency: {{times[-1]}} s")
    print(f"P50 Latency: {{pick(0.5)}} s")
    print(f"P90 Latency: {{pick(0.9)}} s")
'''


FAKE_EXECUTOR_RUNNER = r'''#!{python}
# Stand-in for ExecuTorch's examples/portable/executor_runner: same flags, and its ET_LOG lines
# ("Iteration i of N: X ms", "Model executed successfully N time(s) in X ms.") on stderr.
import sys, time, torch
from executorch.runtime import Runtime
args = sys.argv[1:]
value = lambda name: args[args.index(name) + 1]
runs = int(value("--num_executions"))
method = Runtime.get().load_program(value("--model_path")).load_method("forward")
example = torch.ones(list(method.metadata.input_tensor_meta(0).sizes()))
total = 0.0
for index in range(runs):
    start = time.perf_counter(); method.execute([example]); spent = 1000 * (time.perf_counter() - start)
    total += spent
    print(f"I 00:00:00.100 executorch:executor_runner.cpp:420] Iteration {{index + 1}} of {{runs}}: {{spent:.6f}} ms",
          file=sys.stderr)
print(f"I 00:00:00.200 executorch:executor_runner.cpp:432] Model executed successfully {{runs}} time(s) in "
      f"{{total:.6f}} ms.", file=sys.stderr)
'''


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_phone(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "phone"
    (root / "bin").mkdir(parents=True)
    (root / "data/local/tmp").mkdir(parents=True)
    tools = tmp_path / "host-tools"
    tools.mkdir()
    _write(tools / "adb", FAKE_ADB.format(python=sys.executable))
    _write(root / "bin/getprop", FAKE_GETPROP)
    _write(root / "data/local/tmp/onnxruntime_perf_test", FAKE_PERF_TEST.format(python=sys.executable))
    _write(root / "data/local/tmp/executor_runner", FAKE_EXECUTOR_RUNNER.format(python=sys.executable))
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PHONE_ROOT", str(root))
    return root


BINARY = "/data/local/tmp/onnxruntime_perf_test"


def test_adb_probe_and_measure(fake_phone, tiny_config, tmp_path):
    device = open_device("adb:emulator-5554", benchmark_binary=BINARY, remote_dir="/data/local/tmp/nas dir; x")
    info = device.probe()
    assert info["abi"] == "arm64-v8a" and info["phone"] == "Pixel-Fake" and info["runtime"]
    result = measure_config(device, tiny_config, RunSettings(warmup=10, runs=50), cache=None)
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms and result.runs == 50
    calls = (fake_phone / "adb-calls.log").read_text()
    assert "-r 10 -m times" in calls and "-r 50 -m times" in calls
    assert not list((fake_phone / "data/local/tmp/nas dir; x").iterdir())  # the model was removed again
    assert not (fake_phone / "data/local/tmp/x").exists()


def test_adb_faults_are_one_line(fake_phone, tiny_config):
    with pytest.raises(DeviceError, match="no such phone"):
        open_device("adb:other-serial", benchmark_binary=BINARY).probe()
    with pytest.raises(DeviceError, match="--benchmark-binary"):
        measure_config(open_device("adb:emulator-5554"), tiny_config)
    with pytest.raises(DeviceError, match="not an executable on the phone.*onnxruntime_perf_test"):
        measure_config(open_device("adb", benchmark_binary="/data/local/tmp/nothing"), tiny_config)
    with pytest.raises(DeviceError, match="serial"):
        open_device("adb:$(reboot)")


def test_cli_measure_over_adb(nas, fake_phone, tmp_path):
    done = nas("latency", "measure", "--device", "adb:emulator-5554", "--benchmark-binary", BINARY, "--preset",
               "shufflenet_v1_0.25x_g3", "--json", "--no-cache",
               env={"PATH": os.environ["PATH"], "FAKE_PHONE_ROOT": str(fake_phone)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["device"]["abi"] == "arm64-v8a"


def test_parse_perf_test_summary():
    stats = parse_perf_test_output("Average inference time cost: 12.5 ms\nMin Latency: 0.010 s\n"
                                   "P50 Latency: 0.012 s\nP90 Latency: 0.0135 s\n")
    assert (stats.median_ms, stats.p10_ms, stats.p90_ms) == pytest.approx((12.0, 10.0, 13.5))
    # Older releases (the perftest README's sample) wrote "P50 Latency is 0.0587108sec".
    older = parse_perf_test_output("Min Latency is 0.0559777sec\nP50 Latency is 0.0587108sec\n"
                                   "P90 Latency is 0.0599845sec\n")
    assert (older.median_ms, older.p10_ms, older.p90_ms) == pytest.approx((58.7108, 55.9777, 59.9845))
    with pytest.raises(DeviceError):
        parse_perf_test_output("Segmentation fault")
    with pytest.raises(DeviceError, match="-s"):  # the average alone, as printed without -s
        parse_perf_test_output("Average inference time cost: 12.5 ms\n")


RUNNER = "/data/local/tmp/executor_runner"


def test_adb_without_an_executor_runner_says_how_to_get_one(fake_phone, tiny_config):
    with pytest.raises(DeviceError, match="name the executor_runner on the phone with --executor-runner.*XNNPACK"):
        measure_config(open_device("adb:emulator-5554", benchmark_binary=BINARY), tiny_config, runtime="executorch")
    with pytest.raises(DeviceError, match="/data/local/tmp/none is not an executable on the phone"):
        measure_config(open_device("adb", executor_runner="/data/local/tmp/none"), tiny_config, runtime="executorch")


def test_adb_times_executorch_programs_in_a_pushed_executor_runner(fake_phone, tiny_config):
    pytest.importorskip("executorch.exir")
    device = open_device("adb:emulator-5554", executor_runner=RUNNER, remote_dir="/data/local/tmp/et dir")
    assert device.probe()["executorch"] == f"executor_runner:{RUNNER}"
    for precision in ("fp32", "int8"):
        result = measure_config(device, tiny_config, RunSettings(warmup=2, runs=7, threads=1), cache=None,
                                runtime="executorch", precision=precision)
        assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms and result.runs == 7
    calls = (fake_phone / "adb-calls.log").read_text()
    assert "--num_executions 2 >/dev/null" in calls and "--num_executions 7 2>&1" in calls
    assert "--cpu_threads 1 --print_output none" in calls and "model.int8.pte" in calls
    assert not list((fake_phone / "data/local/tmp/et dir").iterdir())  # programs removed after timing


def test_parse_executor_runner_output():
    from nas.latency.kinds.adb import parse_executor_runner_output

    log = "".join(f"I 00:00:01.{i} executorch:executor_runner.cpp:420] Iteration {i} of 5: {ms} ms\n"
                  for i, ms in enumerate((2.0, 1.0, 1.5, 3.0, 1.2), start=1))
    stats = parse_executor_runner_output(log + "Model executed successfully 5 time(s) in 8.7 ms.\n")
    assert stats.median_ms == pytest.approx(1.5) and stats.p10_ms < stats.median_ms < stats.p90_ms
    # A release that prints only the total: its mean, with no spread.
    older = parse_executor_runner_output("I 00:00:00.046 executorch:executor_runner.cpp:289] Model executed "
                                         "successfully 10 time(s) in 123.5 ms.")
    assert (older.median_ms, older.p10_ms, older.p90_ms, older.spread) == pytest.approx((12.35, 12.35, 12.35, 0.0))
    with pytest.raises(DeviceError, match="printed no timing"):
        parse_executor_runner_output("Model loaded in 3.2 ms.")

"""ARM end to end: the loopback sshd's ForceCommand runs every command inside an emulated arm64
Debian userland (qemu-user-static, built once by scripts/build-arm-rootfs.sh and cached outside
the repo). Emulated timings mean nothing; this proves the path a real board takes: ssh,
upload, the board's own python3 and aarch64 onnxruntime, parsing, and identical outputs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nas.latency import RunSettings, measure_config, open_device
from nas.latency.measure import export_config

from .sshd import start_sshd

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow

ENTER_ROOTFS = """#!/bin/sh
# sshd ForceCommand: run the client's command inside the arm64 rootfs, with proc, sysfs and a
# fake ARM /proc/cpuinfo (aarch64 onnxruntime under qemu segfaults on the host's x86 one).
exec unshare -m --propagation private /bin/sh -c '
  mount -t proc proc "$0/proc" && mount -t sysfs sysfs "$0/sys" &&
  mount --bind "$0/etc/arm-cpuinfo" "$0/proc/cpuinfo" &&
  exec chroot "$0" /bin/sh -c "$SSH_ORIGINAL_COMMAND"' {root}
"""


@pytest.fixture(scope="module")
def arm_sshd(ssh_keys, tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("building the emulated arm64 rootfs needs root and apt-get")
    built = subprocess.run(["bash", "scripts/build-arm-rootfs.sh"], cwd=REPO, capture_output=True, text=True,
                           timeout=1800)
    assert built.returncode == 0, built.stderr[-2000:]
    archive = Path(built.stdout.strip().splitlines()[-1])
    root = tmp_path_factory.mktemp("arm64") / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(root)], check=True)
    enter = root.parent / "enter-rootfs.sh"
    enter.write_text(ENTER_ROOTFS.format(root=root))
    enter.chmod(enter.stat().st_mode | stat.S_IEXEC)
    server = start_sshd(tmp_path_factory.mktemp("arm-sshd"), ssh_keys["client"], force_command=str(enter))
    yield server
    server.stop()


def _board_and_host_outputs(device, model: Path, config, folder: Path, *, seed: int):
    """``model``'s output for one seeded random image, run on the board and in this host's ONNX Runtime."""
    import onnxruntime

    image = np.random.default_rng(seed).standard_normal((1, 3, config.input_size, config.input_size)).astype(np.float32)
    np.save(folder / "input.npy", image)
    (timing,) = device.measure([model], RunSettings(warmup=1, runs=3, outputs=True, timeout_s=600),
                               input_file=folder / "input.npy")
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: image})[0]
    return np.asarray(timing.output, dtype=np.float32).reshape(timing.output_shape), expected


def test_arm_board_over_ssh_reports_aarch64_and_matches_host_outputs(arm_sshd, tiny_config, tmp_path):
    device = open_device(arm_sshd.spec, **arm_sshd.options())
    info = device.probe()
    assert info["arch"] == "aarch64"
    assert "Cortex-A76" in info["cpu_model"] and info["onnxruntime"]

    model = export_config(tiny_config, tmp_path / "tiny.onnx")
    arm_output, expected = _board_and_host_outputs(device, model, tiny_config, tmp_path, seed=7)
    assert arm_output.shape == expected.shape
    assert np.abs(arm_output - expected).max() <= 1e-4

    result = measure_config(device, tiny_config, RunSettings(warmup=2, runs=5, timeout_s=600))
    assert result.device["arch"] == "aarch64" and 0 < result.p10_ms <= result.median_ms <= result.p90_ms


def test_arm_board_runs_onnxruntime_int8_and_refuses_executorch_in_one_line(arm_sshd, tiny_config, tmp_path):
    """int8 on the board: the static QDQ file runs in the board's aarch64 onnxruntime and names
    the same classes as on the host. The board has no ExecuTorch Python runtime (it imports
    torch): asked for one, the device says what to do instead, in one line."""
    from nas.latency import DeviceUnavailableError
    from nas.latency.measure import export_for_runtime

    device = open_device(arm_sshd.spec, **arm_sshd.options())
    model = export_for_runtime(tiny_config, tmp_path, "onnxruntime", "int8")
    assert model.name == "model.int8.onnx"
    arm_output, expected = _board_and_host_outputs(device, model, tiny_config, tmp_path, seed=3)
    # int8 kernels differ between x86 and ARM by a rounding step; the answer does not.
    assert arm_output.argmax() == expected.argmax()
    assert np.abs(arm_output - expected).max() <= 0.05 * np.abs(expected).max()
    result = measure_config(device, tiny_config, RunSettings(warmup=2, runs=5, timeout_s=600), precision="int8")
    assert result.device["arch"] == "aarch64" and result.median_ms > 0
    with pytest.raises(DeviceUnavailableError, match="no ExecuTorch Python runtime.*executor_runner"):
        measure_config(device, tiny_config, RunSettings(warmup=2, runs=5, timeout_s=600), runtime="executorch")

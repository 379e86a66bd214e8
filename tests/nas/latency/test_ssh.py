"""A real sshd on 127.0.0.1 (tests/nas/latency/sshd.py): measure through it, and every fault
a user meets (unknown host key, wrong key, missing runtime, crash, timeout, unreachable) ends
as one clear line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from nas.errors import UserError
from nas.latency import DeviceError, DeviceUnavailableError, LatencyCache, LatencyEvaluator, RunSettings, measure_config, open_device
from nas.latency.kinds.ssh import parse_ssh_spec

from .sshd import free_port


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_measures_a_model_through_ssh(sshd, remote_python, tiny_config, tmp_path):
    device = open_device(sshd.spec, remote_python=remote_python, **sshd.options())
    info = device.probe()
    assert info["arch"] and info["cores"] >= 1 and info["onnxruntime"]
    cache = LatencyCache(tmp_path / "latency.json")
    result = measure_config(device, tiny_config, RunSettings(runs=50, warmup=10), cache=cache)
    assert result.runs == 50 and not result.cached
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    again = measure_config(device, tiny_config, RunSettings(runs=50, warmup=10), cache=cache)
    assert again.cached and again.median_ms == result.median_ms
    evaluator = LatencyEvaluator(device, lut=None, threads=1, cache=cache)
    latency = evaluator.latency(tiny_config)
    assert latency.source == "measured" and latency.device["spec"] == sshd.spec


def test_unknown_host_key_is_refused_with_a_hint(sshd, remote_python, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = open_device(sshd.spec, remote_python=remote_python, **sshd.options(known_hosts=str(empty)))
    with pytest.raises(DeviceUnavailableError, match="host key .* is not known.*--accept-new-host-key"):
        device.probe()
    assert empty.read_text() == ""


def test_accept_new_host_key_records_it_once(sshd, remote_python, tmp_path):
    fresh = tmp_path / "known_hosts"
    device = open_device(sshd.spec, remote_python=remote_python,
                         **sshd.options(known_hosts=str(fresh), accept_new_host_key=True))
    assert device.probe()["onnxruntime"]
    recorded = fresh.read_text()
    assert sshd.host_key.with_suffix(".pub").read_text().split()[1] in recorded


def test_a_changed_host_key_is_refused_even_with_accept_new(sshd, remote_python, tmp_path, ssh_keys):
    wrong = tmp_path / "known_hosts"
    stranger_key = Path(f"{ssh_keys['stranger']}.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {stranger_key[0]} {stranger_key[1]}\n")
    device = open_device(sshd.spec, remote_python=remote_python,
                         **sshd.options(known_hosts=str(wrong), accept_new_host_key=True))
    with pytest.raises(DeviceError, match="CHANGED"):
        device.probe()


def test_wrong_client_key_is_refused(sshd, remote_python, ssh_keys):
    device = open_device(sshd.spec, remote_python=remote_python,
                         **sshd.options(identity_file=str(ssh_keys["stranger"])))
    with pytest.raises(DeviceUnavailableError, match="authentication refused"):
        device.probe()


def test_missing_runtime_names_the_install_command(sshd, tiny_config, tmp_path):
    # A board whose python3 has no onnxruntime: the system interpreter with site-packages off.
    bare = _script(tmp_path / "python3", 'exec /usr/bin/python3 -I -S "$@"\n')
    device = open_device(sshd.spec, remote_python=bare, **sshd.options())
    assert device.probe()["onnxruntime"] is None
    with pytest.raises(DeviceUnavailableError, match="onnxruntime is not installed.*pip install onnxruntime"):
        measure_config(device, tiny_config)


def test_remote_crash_and_timeout_and_unreachable(sshd, remote_python, tiny_config, tmp_path):
    # The runtime dies of SIGSEGV while timing (probing still works, as on a real broken build).
    crash = _script(tmp_path / "crash", f'[ "$2" = probe ] && exec {remote_python} "$@"\nkill -SEGV $$\n')
    with pytest.raises(DeviceError, match=r"crashed \(signal 11, SIGSEGV\)") as crashed:
        measure_config(open_device(sshd.spec, remote_python=crash, **sshd.options()), tiny_config)
    assert not isinstance(crashed.value, DeviceUnavailableError)  # one model failed, the board is fine
    hang = _script(tmp_path / "hang", f'[ "$2" = probe ] && exec {remote_python} "$@"\nsleep 60\n')
    device = open_device(sshd.spec, remote_python=hang, **sshd.options(connect_timeout=2))
    with pytest.raises(DeviceError, match="timeout"):
        measure_config(device, tiny_config, RunSettings(timeout_s=2))
    closed = open_device(f"ssh://root@127.0.0.1:{free_port()}", **sshd.options(connect_timeout=3))
    with pytest.raises(DeviceUnavailableError, match="cannot reach 127.0.0.1"):
        closed.probe()


def test_hostile_strings_never_reach_a_shell(sshd, tmp_path):
    marker = tmp_path / "pwned"
    python = f"/nonexistent/python3; touch {marker}"
    device = open_device(sshd.spec, remote_python=python, **sshd.options())
    with pytest.raises(DeviceError, match="was not found on the device"):
        device.probe()
    assert not marker.exists()
    for spec in ("ssh://-oProxyCommand=touch%20x", "ssh://host;rm -rf /", "ssh://a b", "ssh://host/path"):
        with pytest.raises(UserError):
            parse_ssh_spec(spec)
    assert parse_ssh_spec("ssh://pi@board.local:2222") == parse_ssh_spec("pi@board.local:2222")
    assert parse_ssh_spec("myboard").host == "myboard"


def test_cli_measure_and_faults(nas, sshd, remote_python, tmp_path):
    ssh_args = ["--known-hosts", str(sshd.known_hosts), "--identity-file", str(sshd.client_key),
                "--remote-python", remote_python]
    done = nas("latency", "measure", "--device", sshd.spec, "--preset", "shufflenet_v1_0.25x_g8", "--runs", "20",
               "--json", "--cache", str(tmp_path / "cache.json"), *ssh_args)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["runs"] == 20 and payload["p10_ms"] <= payload["median_ms"] <= payload["p90_ms"]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    refused = nas("latency", "probe", "--device", sshd.spec, "--known-hosts", str(empty), "--identity-file",
                  str(sshd.client_key))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("nas: error: ") and "--accept-new-host-key" in refused.stderr
    bad = nas("latency", "measure", "--device", sshd.spec, "--config", str(tmp_path / "missing.json"), *ssh_args)
    assert bad.returncode == 2 and "cannot read config" in bad.stderr


def test_an_alias_from_the_users_ssh_config(sshd, remote_python, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host board\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
                      f"  IdentityFile {sshd.client_key}\n  UserKnownHostsFile {sshd.known_hosts}\n")
    device = open_device("board", ssh_config=str(config), remote_python=remote_python)
    assert device.kind == "ssh" and device.probe()["onnxruntime"]

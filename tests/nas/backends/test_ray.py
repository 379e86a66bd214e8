"""``nas search --backend ray`` against a real Ray head on 127.0.0.1 (started by the fixture)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nas.backends.ray import ray_options_from
from nas.backends.ray.cluster import check_reachable
from nas.errors import UserError
from tests.conftest import REPO_ROOT, run_nas

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
TINY = ["--epochs", "3", "--train-size", "600", "--val-size", "200", "--batch-size", "32", "--no-presets", "-q", "--final", "0"]
"""Small enough for seconds per trial, big enough that epoch-1 accuracies differ (so ASHA has something to stop)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cluster_pids(temp_dir: str) -> list[int]:
    """Our head's processes: those naming its private temp dir, and all their descendants (workers)."""
    parents: dict[int, int] = {}
    roots = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            if temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                roots.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def _start_head(*extra: str) -> tuple[str, str]:
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="nasray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, **RAY_ENV}
    ray = str(Path(sys.executable).parent / "ray")
    started = subprocess.run(
        [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}",
         "--disable-usage-stats", "--node-ip-address=127.0.0.1", *extra],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    return f"127.0.0.1:{port}", temp_dir


@pytest.fixture(scope="module")
def ray_head():
    """A 2-CPU Ray head on loopback; torn down by killing exactly the processes it started."""
    address, temp_dir = _start_head()
    yield address, temp_dir
    kill_cluster(temp_dir)


@pytest.fixture(scope="module")
def gpu_head():
    """A head that declares 2 logical GPUs: Ray schedules by them, though no GPU exists here."""
    address, temp_dir = _start_head("--num-gpus=2")
    yield address, temp_dir
    kill_cluster(temp_dir)


def kill_cluster(temp_dir: str) -> None:
    """Stop exactly the processes of the cluster that uses ``temp_dir`` (never `ray stop`, which
    would stop every Ray on the machine)."""
    ours = _cluster_pids(temp_dir)  # taken once: agents leave the tree when the raylet exits
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def _study(db: Path, name: str = "shufflenet-140M"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


# -- fast checks ---------------------------------------------------------------------------------
def _request(**changes):  # noqa: ANN003, ANN202 - a `nas search` command line as typed
    from nas.commands.search_settings import SearchRequest

    fields = dict(
        budget=["140M"], n_trials=4, timeout=None, seed=0, sampler="tpe", storage=None, study=None, workers=0, threads=0,
        space_file=None, data="fashion-mnist", evaluator="proxy", epochs=1, resolution=32, train_size=None, val_size=None,
        batch_size=128, seeds=1, objectives="accuracy,mflops", presets=True, prescreen=0, keep_weights=False,
        early_stopping=True, device=None, latency_budget=None, lut=None, runs_dir=Path("runs"), quiet=True,
    )
    return SearchRequest(**{**fields, **changes})


def test_backend_options_are_checked_before_anything_runs():
    from nas.commands.search_settings import backend_options

    assert backend_options(_request()) == ("local", None)
    name, options = backend_options(_request(backend="ray", ray_address="10.0.0.5:6379", cpus_per_trial=2, max_concurrent=3))
    assert name == "ray" and (options.address, options.cpus_per_trial, options.max_concurrent) == ("10.0.0.5:6379", 2, 3)
    bad = (dict(backend="spark"), dict(ray_address="auto"), dict(backend="ray", ray_address="no-port"),
           dict(backend="ray", ray_address="h:99999"))
    for changes in bad:
        with pytest.raises(UserError):
            backend_options(_request(**changes))
    with pytest.raises(UserError):
        ray_options_from(None, 0, None)


def test_unreachable_address_is_one_line_error_and_nothing_is_stored(tmp_path):
    port = _free_port()  # nothing listens here
    with pytest.raises(UserError, match="no Ray cluster at"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    db = tmp_path / "bad.db"
    result = run_nas("search", "--backend", "ray", "--ray-address", f"127.0.0.1:{port}", "--storage", str(db), *TINY, env=RAY_ENV, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nas: error: no Ray cluster at 127.0.0.1:"), result.stderr
    assert not db.exists()
    result = run_nas("search", "--ray-address", "auto", "--storage", str(db), *TINY, env=RAY_ENV, timeout=60)
    assert result.returncode == 2 and "only apply with --backend ray" in result.stderr


# -- through a real cluster -------------------------------------------------------------------------
@pytest.mark.slow
def test_search_on_ray_stores_trials_like_local_and_resumes(ray_head, tmp_path):
    address, _ = ray_head
    ray_db, local_db = tmp_path / "ray.db", tmp_path / "local.db"
    # ASHA (reduction 3) stops a trial whose epoch-1 accuracy is below the top third of those
    # already recorded; 6 trials once arrived in an order (and with ties) that stopped none.
    result = run_nas(
        "search", "--backend", "ray", "--ray-address", address, "--n-trials", "9", "--max-concurrent", "2",
        "--storage", str(ray_db), "--runs-dir", str(tmp_path / "runs"), *TINY, env=RAY_ENV, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    study = _study(ray_db)
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert len(trials) == 9 and set(states) <= {"COMPLETE", "PRUNED"}, states
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.user_attrs["pruned_by"].startswith("asha after epoch") for t in pruned), [
        t.user_attrs.get("learning_curve") for t in trials]
    assert all(len(t.user_attrs["learning_curve"]) < 3 for t in pruned)
    assert list((tmp_path / "runs" / "ray").iterdir()), "Tune's storage_path is under the runs folder"

    local = run_nas("search", "--n-trials", "1", "--workers", "1", "--storage", str(local_db), "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert local.returncode == 0, local.stderr
    local_study = _study(local_db)
    local_trial = local_study.get_trials()[0]
    assert set(local_study.user_attrs) == set(study.user_attrs)
    proposal = {"start_design", "preset"}  # how a trial was proposed, not what it stored
    for trial in (t for t in trials if t.state.name == "COMPLETE"):
        assert set(local_trial.user_attrs) - proposal <= set(trial.user_attrs)
        assert set(local_trial.constraints) == set(trial.constraints)
        assert len(trial.values) == len(local_trial.values) == 2
        assert trial.values[0] == trial.user_attrs["accuracy"] == trial.user_attrs["learning_curve"][-1]
        assert trial.values[1] == pytest.approx(trial.user_attrs["macs"] / 1e6)
        assert trial.user_attrs["backend"] == "ray"

    resumed = run_nas(
        "search", "--backend", "ray", "--ray-address", address, "--n-trials", "11", "--storage", str(ray_db),
        "--runs-dir", str(tmp_path / "runs"), *TINY, env=RAY_ENV, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _study(ray_db).get_trials()
    assert len(after) == 11
    assert [(t.number, t.state, t.values, t.params) for t in after[:9]] == [(t.number, t.state, t.values, t.params) for t in trials]
    assert len({t.user_attrs["ray_run"] for t in after[9:]}) == 1 != len({t.user_attrs["ray_run"] for t in after})


@pytest.mark.slow
def test_killed_worker_is_retried_and_search_finishes(ray_head, tmp_path):
    address, temp_dir = ray_head
    db = tmp_path / "kill.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", "--backend", "ray", "--ray-address", address, "--n-trials", "3",
         "--max-concurrent", "1", "--no-early-stopping", "--storage", str(db), "--runs-dir", str(tmp_path / "runs"),
         "--epochs", "3", "--train-size", "1200", "--val-size", "100", "--no-presets", "-q", "--final", "0"],
        cwd=REPO_ROOT, env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    victim = None
    try:
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            if not db.exists():
                continue
            try:
                running = [t for t in _study(db).get_trials() if t.state.name == "RUNNING" and t.user_attrs.get("learning_curve")]
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            if running:
                victim = running[0]
        assert victim is not None, "no trial got past its first epoch"
        pid = int(victim.user_attrs["worker_pid"])
        assert pid in _cluster_pids(temp_dir), "the worker belongs to the fixture's cluster"
        os.kill(pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    trials = _study(db).get_trials()
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state.name == "FAIL" and "Ray worker died" in killed.user_attrs["fail_reason"]
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(finished) == 3
    retried = [t for t in finished if t.user_attrs["ray_trial_id"] == victim.user_attrs["ray_trial_id"]]
    assert len(retried) == 1 and retried[0].params == victim.params and retried[0].user_attrs["worker_pid"] != pid


@pytest.mark.slow
def test_ray_search_whose_every_trial_fails_exits_1(ray_head, tmp_path):
    """The exit codes are the engine's, whatever the backend: every config misses the latency
    table the user passed, so every trial fails on its own and the command exits 1."""
    from nas.latency.lut import LatencyLUT

    address, _ = ray_head
    table = tmp_path / "other-space.json"
    LatencyLUT(device={"name": "elsewhere"}, entries={}, settings={"threads": 1}).save(table)
    db = tmp_path / "fail.db"
    result = run_nas(
        "search", "--backend", "ray", "--ray-address", address, "--budget", "40M", "--n-trials", "3", "--evaluator", "zero-cost",
        "--storage", str(db), "--runs-dir", str(tmp_path / "runs"), "--device", "lut", "--lut", str(table), "--quiet",
        env=RAY_ENV, timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "every trial of this run failed" in result.stdout and "Traceback" not in result.stderr
    states = [t.state.name for t in _study(db, "shufflenet-40M").get_trials()]
    assert states.count("FAIL") == 3 and "RUNNING" not in states and "COMPLETE" not in states, states


@pytest.mark.slow
def test_trials_request_and_receive_gpus_on_a_cluster_that_has_them(gpu_head, tmp_path):
    """Fractional GPUs: 0.5 per trial, 2 logical GPUs, so up to 4 trials fit (2 CPUs allow 2).
    Zero-cost trials: before the fix each one crashed after it was stored (no learning curve)
    and Tune ran it twice more, so 4 trials became 12."""
    address, _ = gpu_head
    db = tmp_path / "gpu.db"
    common = ["search", "--backend", "ray", "--ray-address", address, "--storage", str(db), "--evaluator", "zero-cost",
              "--n-trials", "4", "--no-presets", "--final", "0", "--runs-dir", str(tmp_path / "runs")]
    result = run_nas(*common, "--gpus-per-trial", "0.5", env=RAY_ENV, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 GPUs, up to 2 trial(s) x 1 CPU + 0.5 GPU" in result.stdout + result.stderr
    trials = [t for t in _study(db).get_trials() if t.state.name != "WAITING"]  # start design not reached: waits
    assert len(trials) == 4
    for trial in trials:
        assert trial.state.name == "COMPLETE"
        assert len(trial.user_attrs["ray_gpu_ids"]) == 1 and set(trial.user_attrs["ray_gpu_ids"]) <= {"0", "1"}
    too_many = run_nas(*common, "--gpus-per-trial", "3", env=RAY_ENV, timeout=300)
    assert too_many.returncode == 2 and "--gpus-per-trial 3 is more than the Ray cluster's 2 GPUs" in too_many.stderr


def test_gpu_options_are_checked_before_anything_runs():
    from nas.commands.search_settings import backend_options

    _, options = backend_options(_request(backend="ray", gpus_per_trial=0.25))
    assert options.gpus_per_trial == 0.25 and options.num_gpus is None
    for changes, says in ((dict(backend="ray", gpus_per_trial=0.0), "--gpus-per-trial must be above 0"),
                          (dict(backend="ray", ray_address="auto", num_gpus=2), "--num-gpus sets the GPUs of the local Ray"),
                          (dict(gpus_per_trial=1.0), "only apply with --backend ray")):
        with pytest.raises(UserError, match=says):
            backend_options(_request(**changes))

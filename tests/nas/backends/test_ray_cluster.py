"""``nas search --backend ray`` on a two-node Ray cluster made on this machine, storing into a real
PostgreSQL server: trials run on both nodes, and killing a worker, the second node and then the
whole command loses no finished trial and duplicates none.

Both nodes run on 127.0.0.1 (a head and a second raylet started with ``ray start --address``),
so the trials record Ray's node id (``ray_node_id``) to tell the nodes apart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nas import records as R
from tests.conftest import REPO_ROOT, run_nas
from tests.nas.backends.test_ray import RAY_ENV, _cluster_pids, _free_port, kill_cluster

pytestmark = pytest.mark.slow

CLUSTER_ENV = {**RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
"""Ray refuses a second node on a machine whose head was started without this (Ray's check
for desktop platforms; the head records it)."""

N_TRIALS = 8
SEARCH = [
    "search", "--final", "0", "--backend", "ray", "--n-trials", str(N_TRIALS), "--max-concurrent", "2", "--no-early-stopping",
    "--epochs", "3", "--train-size", "1200", "--val-size", "100", "--batch-size", "32", "--no-presets", "-q",
]


def _proc_args(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def _raylet(temp_dir: str, manager_port: int) -> tuple[int, str]:
    """The second node's raylet (pid, Ray node id), found by the node-manager port we gave it."""
    for pid in _cluster_pids(temp_dir):
        args = _proc_args(pid)
        if args and args[0].endswith("/raylet") and f"--node_manager_port={manager_port}" in args:
            node_id = next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))
            return pid, node_id
    raise AssertionError("the second node's raylet is not running")


@pytest.fixture(scope="module")
def two_nodes():
    """A head (1 CPU) and a second node (1 CPU) on loopback, each its own raylet; torn down by
    killing exactly the processes they started."""
    env = {**os.environ, **CLUSTER_ENV}
    ray = str(Path(sys.executable).parent / "ray")
    port, manager_port = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="nasray2", dir="/tmp")
    common = ["--num-cpus=1", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    try:
        head = subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false",
                               f"--temp-dir={temp_dir}", *common], env=env, capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, head.stdout + head.stderr
        second = subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", f"--node-manager-port={manager_port}", *common],
                                env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        deadline = time.monotonic() + 60
        while True:
            status = subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], env=env, capture_output=True, text=True,
                                    timeout=60)
            if status.stdout.count(" node_") >= 2:
                break
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(1)
        yield f"127.0.0.1:{port}", temp_dir, manager_port
    finally:
        kill_cluster(temp_dir)


def _trials(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name="shufflenet-140M", storage=url.replace("postgresql://", "postgresql+psycopg://")
                                 ).get_trials()
    except KeyError:  # the study is not created yet
        return []


def _wait_for(what: str, found: Callable[[], object], process: subprocess.Popen, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the search ended before {what}: {process.communicate()[0]}"
        value = found()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_tree(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_two_nodes_on_postgresql_survive_a_killed_worker_node_and_command(two_nodes, postgres_server, tmp_path):
    address, temp_dir, manager_port = two_nodes
    url = postgres_server.create_database(f"ray2_{os.getpid()}")
    command = [*SEARCH, "--ray-address", address, "--storage", url, "--runs-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", *command], cwd=REPO_ROOT, env={**os.environ, **CLUSTER_ENV},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    second_pid, second_id = _raylet(temp_dir, manager_port)
    try:
        # 1. A worker killed mid-trial (past its first epoch).
        def running(node: str | None = None, exclude: tuple[int, ...] = ()):
            return [t for t in _trials(url) if t.state.name == "RUNNING" and t.user_attrs.get(R.LEARNING_CURVE)
                    and t.number not in exclude and (node is None or t.user_attrs.get(R.RAY_NODE_ID) == node)]

        worker_victim = _wait_for("a trial past its first epoch", running, process)[0]
        worker_pid = int(worker_victim.user_attrs[R.WORKER_PID])
        assert worker_pid in _cluster_pids(temp_dir)
        os.kill(worker_pid, signal.SIGKILL)

        # 2. The second node killed while it runs a trial.
        node_victim = _wait_for("a trial on the second node", lambda: running(second_id, (worker_victim.number,)), process)[0]
        _kill_tree(_descendants(second_pid))

        # 3. The whole command killed once the head has finished a trial after the node died.
        def finished_after_node_death():
            return [t for t in _trials(url) if t.state.name == "COMPLETE" and t.number > node_victim.number]

        _wait_for("a trial finished after the node died", finished_after_node_death, process, timeout=400)
        before = {t.number: t for t in _trials(url) if t.state.name == "COMPLETE"}
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=60)
    assert len(before) < N_TRIALS, "the command was killed before the study reached its target"

    resumed = run_nas(*command, env=CLUSTER_ENV, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _trials(url)
    by_number = {t.number: t for t in after}

    # No finished trial lost: every trial finished before the kill is unchanged.
    for number, trial in before.items():
        assert by_number[number].state.name == "COMPLETE" and by_number[number].values == trial.values
        assert by_number[number].params == trial.params
    # None duplicated: each Tune trial of each run finished once, and each lost trial was rerun once.
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == N_TRIALS, [(t.number, t.state.name, t.user_attrs.get(R.FAIL_REASON)) for t in after]
    tune_trials = [(t.user_attrs[R.RAY_RUN], t.user_attrs[R.RAY_TRIAL_ID]) for t in complete]
    assert len(set(tune_trials)) == len(tune_trials)
    retries = [t.user_attrs[R.RETRY_OF] for t in after if R.RETRY_OF in t.user_attrs]
    assert len(set(retries)) == len(retries)
    assert not [t for t in after if t.state.name in ("RUNNING", "WAITING")]
    # Lost trials are FAIL, marked lost, with a reason; they do not count toward --n-trials.
    for victim in (worker_victim, node_victim):
        lost = by_number[victim.number]
        assert lost.state.name == "FAIL" and lost.user_attrs.get(R.LOST), lost.user_attrs
        assert lost.user_attrs.get(R.FAIL_REASON)
    # Trials ran on both nodes.
    nodes = {t.user_attrs[R.RAY_NODE_ID] for t in after if R.RAY_NODE_ID in t.user_attrs}
    assert second_id in nodes and len(nodes) == 2, nodes

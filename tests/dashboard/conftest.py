"""Study storages for the dashboard tests.

The main ones come from the real `nas search` (a zero-cost study, and a tiny proxy-trained one
for accuracy and learning curves); the edge cases a search does not produce on demand (an
empty study, latency, infeasible trials that still have an accuracy) are written directly with
Optuna following nas/records.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_nas

from .studies import make_empty_study, make_study


@dataclass(frozen=True)
class Storage:
    path: Path
    study: str


def _search(path: Path, study: str, *args: str) -> Storage:
    done = run_nas("search", "--final", "0", "--budget", "40M", "--storage", str(path), "--study", study, "--seed", "0", *args,
                   timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return Storage(path, study)


@pytest.fixture(scope="session")
def search_storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """A tiny real zero-cost search under 40M: the paper's four 0.5x presets, then 2 searched trials."""
    return _search(tmp_path_factory.mktemp("search") / "runs.db", "tiny", "--n-trials", "6", "--evaluator", "zero-cost")


@pytest.fixture(scope="session")
def proxy_storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """A tiny real proxy-trained search (accuracy and a 2-epoch learning curve per trial)."""
    return _search(tmp_path_factory.mktemp("proxy") / "runs.db", "proxy", "--n-trials", "2", "--evaluator", "proxy",
                   "--epochs", "2", "--train-size", "256", "--val-size", "128")


@pytest.fixture(scope="session")
def edge_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Edge cases in one file: presets + infeasible + untrained trials, latency, an empty study."""
    path = tmp_path_factory.mktemp("edge") / "edge.db"
    make_study(path, "with_presets", n_trials=6, budget_mflops=140.0, presets=("shufflenet_v1_1.0x_g3",), skipped=2)
    make_study(path, "with_latency", n_trials=4, budget_mflops=140.0, latency=True, seed=1)
    make_empty_study(path, "empty")
    return path

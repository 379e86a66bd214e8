"""Study storages for the dashboard tests: one made by a real `nas search`, others by Optuna.

The search study is the main fixture. Until `nas search` exists in this checkout the fixture
writes an equivalent study directly with Optuna (real SQLite, same attribute contract) and says
so in its name, so the tests stay meaningful either way.
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
    source: str  # "nas search" or "optuna fixture"


def _has_search_command() -> bool:
    done = run_nas("--help", timeout=120)
    return done.returncode == 0 and " search " in done.stdout


@pytest.fixture(scope="session")
def search_storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """A tiny real search: 4 zero-cost trials under 40M, plus a proxy-trained one for curves."""
    folder = tmp_path_factory.mktemp("search")
    path = folder / "runs.db"
    if _has_search_command():
        done = run_nas("search", "--budget", "40M", "--n-trials", "4", "--storage", str(path), "--study", "tiny",
                       "--seed", "0", "--evaluator", "zero-cost", timeout=900)
        assert done.returncode == 0, done.stderr
        return Storage(path, "tiny", "nas search")
    make_study(path, "tiny", n_trials=8, budget_mflops=40.0, presets=("shufflenet_v1_0.5x_g3",))
    return Storage(path, "tiny", "optuna fixture")


@pytest.fixture(scope="session")
def edge_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Edge cases in one file: a study with latency, an empty study, and a plain one with presets."""
    path = tmp_path_factory.mktemp("edge") / "edge.db"
    make_study(path, "with_presets", n_trials=6, budget_mflops=140.0, presets=("shufflenet_v1_1.0x_g3",))
    make_study(path, "with_latency", n_trials=4, budget_mflops=140.0, latency=True, seed=1)
    make_empty_study(path, "empty")
    return path

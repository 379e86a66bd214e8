"""Studies written by release 0.1.0 (tests/fixtures/studies-0.1.0.db, see its README) still
open, show, export and resume: what users already stored outlives every redesign."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from dashboard.data import load_study_data
from nas.engine.outcome import count_toward_target
from nas.records import load_records
from nas.results import best_trial, study_front
from tests.conftest import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "studies-0.1.0.db"
PROXY_ARGS = ["--final", "0", "--budget", "40M", "--seed", "1", "--epochs", "2", "--train-size", "300", "--val-size", "100",
              "--batch-size", "50", "--workers", "1", "--quiet"]


@pytest.fixture
def release_db(tmp_path) -> Path:
    copy = tmp_path / "studies.db"
    shutil.copyfile(FIXTURE, copy)
    return copy


def test_release_studies_open_and_show_the_same_front_everywhere(nas, release_db) -> None:
    listed = nas("runs", "list", "--storage", str(release_db))
    assert listed.returncode == 0 and "zero-cost-40M" in listed.stdout and "proxy-40M" in listed.stdout
    for name in ("zero-cost-40M", "proxy-40M"):
        shown = nas("runs", "show", name, "--storage", str(release_db), "--json")
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        data = load_study_data(str(release_db), name)
        assert document["front"] == sorted(r.number for r in study_front(data.records, data.info))
        assert document["front"] and document["best"] == best_trial(data.records, data.info).number


@pytest.mark.parametrize("name", ["zero-cost-40M", "proxy-40M"])
def test_release_studies_export_their_best_trial(nas, release_db, tmp_path, name: str) -> None:
    out = tmp_path / name
    result = nas("export", "--storage", str(release_db), "--study", name, "--best", "--budget", "40M", "--out", str(out),
                 "--untrained", "--format", "pytorch")
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["provenance"]["study"] == name


def test_release_studies_resume_where_they_stopped(nas, release_db) -> None:
    before = {t.number: t.state.name for t in optuna.load_study(study_name="proxy-40M", storage=f"sqlite:///{release_db}").get_trials()}
    resumed = nas("search", *PROXY_ARGS, "--n-trials", "12", "--storage", str(release_db), "--study", "proxy-40M")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = optuna.load_study(study_name="proxy-40M", storage=f"sqlite:///{release_db}")
    assert count_toward_target(load_records(study)) == 12
    assert {t.number: t.state.name for t in study.get_trials() if t.number in before} == before  # nothing rewritten
    assert study.user_attrs["shufflenas_version"] == "0.1.0"  # the study remembers what made it
    zero_cost = nas("search", "--budget", "40M", "--n-trials", "8", "--evaluator", "zero-cost", "--seed", "3",
                    "--storage", str(release_db), "--study", "zero-cost-40M", "--workers", "1", "--quiet")
    assert zero_cost.returncode == 0, zero_cost.stdout + zero_cost.stderr
    assert "8 of 8 count toward --n-trials" in zero_cost.stdout

"""`nas compare` end to end: real training on the embedded data, a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from nas import records as R
from shufflenet_core import get_preset
from tests.conftest import interrupt_when

TINY = ["--epochs", "1", "--train-size", "300", "--batch-size", "50"]
CONFIGS = ["shufflenet_v1_0.5x_g3", "shufflenet_v1_0.5x_g3+noshuffle", "g3,b0.5,d2-4-2"]


def _trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}").get_trials()


def test_compare_trains_each_config_on_the_same_seeds_reports_and_resumes(nas, tmp_path) -> None:
    db = tmp_path / "c.db"
    args = ["compare", *CONFIGS, *TINY, "--seeds", "2", "--budget", "40M", "--storage", str(db), "--json"]
    first = nas(*args)
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert document["evaluated_on"] == {"split": "test", "images": 2000}
    assert document["trained_now"] == 6 and document["seeds"] == [1000, 1001]
    assert [row["label"] for row in document["rows"]] == CONFIGS
    reference, *others = document["rows"]
    assert reference["gap"] is None and reference["p_value"] is None
    for row in others:
        assert len(row["scores"]) == 2 and 0 < row["mean"] < 1
        assert row["gap"] == pytest.approx(row["mean"] - reference["mean"])
        assert 1 / 6 <= row["p_value"] <= 1
    assert document["rows"][2]["mflops"] <= 40.0
    assert "out of reach: add seeds" in document["verdict"]
    stored = _trials(db)
    assert len(stored) == 6 and {t.user_attrs[R.COMPARE_SEED] for t in stored} == {1000, 1001}
    assert {t.user_attrs[R.COMPARE_LABEL] for t in stored} == set(CONFIGS)

    again = nas(*args)  # the same command: everything is stored, nothing trains
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["trained_now"] == 0
    assert json.loads(again.stdout)["rows"] == document["rows"]

    more = nas(*[a if a != "2" else "3" for a in args])  # one more seed: only that seed trains
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["trained_now"] == 3 and len(_trials(db)) == 9


def test_a_config_named_twice_trains_once_and_the_table_names_the_test_split(nas, tmp_path) -> None:
    db = tmp_path / "c.db"
    config_file = tmp_path / "mine.json"
    config_file.write_text(json.dumps(get_preset("shufflenet_v1_0.5x_g3").to_dict()))
    result = nas("compare", str(config_file), "--reference", "shufflenet_v1_0.5x_g3", *TINY, "--seeds", "2",
                 "--storage", str(db), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "accuracy on the test split (2000 images), 2 seeds" in result.stdout
    assert "trained now: 2" in result.stdout and "verdict: no config beats shufflenet_v1_0.5x_g3" in result.stdout
    assert "smallest reachable p = 0.167" in result.stdout
    assert len(_trials(db)) == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["shufflenet_v1_1.0x_g3"], "at least two configs"),
        (["shufflenet_v1_1.0x_g3", "g7,b0.5,d2-4-2"], "groups must be one of"),
        (["shufflenet_v1_1.0x_g3", "g3,b0.5,d2-4-2", "--budget", "1e400"], "budget"),
        (["shufflenet_v1_1.0x_g3", "g3,b0.5,d2-4-2", "--train-size", "lots"], "--train-size"),
        (["shufflenet_v1_1.0x_g3", "g3,b0.5,d2-4-2", "--eval-on", "train"], "--eval-on"),
        (["shufflenet_v1_1.0x_g3", "g3,b0.5,d2-4-2", "--seeds", "1"], "--seeds"),
        (["shufflenet_v1_1.0x_g3", "study:3"], "needs --study"),
        (["shufflenet_v1_1.0x_g3", "g3,b0.5,d2-4-2", "--data", "mnist"], "unknown data spec"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(nas, tmp_path, args: list[str], says: str) -> None:
    db = tmp_path / "c.db"
    result = nas("compare", *args, "--storage", str(db))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("nas: error:") and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not db.exists()


def test_study_trial_that_does_not_exist_is_one_line(nas, tmp_path) -> None:
    db = tmp_path / "s.db"
    optuna.create_study(study_name="found", storage=f"sqlite:///{db}")
    result = nas("compare", "shufflenet_v1_1.0x_g3", "study:4", "--storage", str(db), "--study", "found")
    assert result.returncode == 2 and "study 'found' has no trial 4 with a config" in result.stderr
    missing = nas("compare", "shufflenet_v1_1.0x_g3", "study:4", "--storage", str(db), "--study", "lost")
    assert missing.returncode == 2 and "no study named 'lost'" in missing.stderr


def test_ctrl_c_keeps_what_finished_and_the_same_command_finishes_the_rest(nas, tmp_path) -> None:
    db = tmp_path / "c.db"
    args = ["compare", *CONFIGS[:2], "--epochs", "1", "--train-size", "2000", "--seeds", "3", "--storage", str(db)]
    run = interrupt_when([*args, "--quiet"], lambda: db.exists() and _stored_count(db) > 0)
    out, err = run.stdout_text, run.stderr_text
    assert run.returncode == 130, (out, err)
    assert "the same command trains only the rest" in err and "Traceback" not in err
    kept = _stored_count(db)
    assert 1 <= kept < 6
    rest = nas(*args, "--json")
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout)["trained_now"] == 6 - kept and _stored_count(db) == 6


def _stored_count(db: Path) -> int:
    try:
        return len(_trials(db))
    except (ValueError, optuna.exceptions.OptunaError, Exception):  # noqa: BLE001 - the study is being created
        return 0

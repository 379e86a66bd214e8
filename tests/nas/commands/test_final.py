"""`nas final` end to end on a real study: real training on the embedded selection split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from nas.records import FINAL_ANSWER, RUNNING
from tests.conftest import interrupt_when, run_nas

TINY_SEARCH = ["--n-trials", "6", "--train-size", "300", "--val-size", "100", "--batch-size", "50", "--workers", "1",
               "--threads", "1", "--quiet"]
TINY_FINAL = ["--epochs", "1", "--train-size", "400", "--batch-size", "50", "--seeds", "2", "--round-seeds", "1"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """One tiny search at 40M (presets in budget) and one at 10M (none), shared by the tests."""
    folder = tmp_path_factory.mktemp("final")
    db = folder / "s.db"
    for budget, name in (("40M", "with-presets"), ("10M", "no-preset")):
        result = run_nas("search", "--budget", budget, "--storage", str(db), "--study", name, *TINY_SEARCH, "--final", "0")
        assert result.returncode == 0, result.stderr
    return db


def _copy(db: Path, tmp_path: Path) -> Path:
    target = tmp_path / "s.db"
    shutil.copy(db, target)
    return target


def _answer(db: Path, name: str) -> dict:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").user_attrs[FINAL_ANSWER]


def test_final_races_the_front_stores_the_answer_and_export_takes_it(nas, searched, tmp_path) -> None:
    db = _copy(searched, tmp_path)
    result = nas("final", "--storage", str(db), "--study", "with-presets", *TINY_FINAL, "-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["selection_images"] == 2000 and verdict["fidelity"]["split"] == "selection"
    assert verdict["final_seeds"][0] >= 2000 and verdict["trained_now"] > 0
    assert verdict["reference"]["label"].startswith("shufflenet_v1_0.5x_g4")  # the paper's best preset under 40M
    stored = _answer(db, "with-presets")
    assert stored["verdict"] == verdict["verdict"] and stored["finalists"] == verdict["finalists"]
    for row in verdict["finalists"]:
        assert len(row["scores"]) == 2 and len(row["test_scores"]) == 2 and row["mflops"] <= 40
    assert verdict["verdict"].startswith("answer: ") or (
        verdict["verdict"].startswith("no finalist beats the reference") and verdict["answer_trial"] is None)
    assert "smallest reachable p 0.17" in verdict["verdict"]

    again = nas("final", "--storage", str(db), "--study", "with-presets", *TINY_FINAL, "-k", "3", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["trained_now"] == 0  # every run is stored

    listed = nas("runs", "list", "--storage", str(db))  # the result study is not listed as a search
    assert "and 1 result study of `nas compare` / `nas final`" in listed.stdout and "compare-" not in listed.stdout
    shown = nas("runs", "show", "with-presets", "--storage", str(db))
    assert f"final stage: {verdict['verdict']}" in shown.stdout
    if verdict["answer_trial"] is not None:
        exported = nas("export", "--storage", str(db), "--study", "with-presets", "--best", "--untrained",
                       "--format", "pytorch", "--out", str(tmp_path / "model"))
        assert exported.returncode == 0, exported.stderr
        assert f"best trial: #{verdict['answer_trial']}, the answer of the study's final stage" in exported.stderr
        card = json.loads((tmp_path / "model" / "model_card.json").read_text())
        assert card["provenance"]["final_stage"] == verdict["verdict"]
        # The answer's most accurate final run keeps its weights, beside the storage file; export takes them.
        kept = verdict["answer_weights"]
        assert kept["seed"] in verdict["final_seeds"] and kept["accuracy"] == max(
            row for row in verdict["finalists"] if row["trial"] == verdict["answer_trial"])["scores"][
            verdict["final_seeds"].index(kept["seed"])]
        folder = tmp_path / "weights" / "with-presets" / "final"
        assert list(folder.iterdir()) == [Path(kept["path"])]  # the other runs' files are deleted
        trained = nas("export", "--storage", str(db), "--study", "with-presets", "--best", "--format", "pytorch",
                      "--out", str(tmp_path / "trained"))
        assert trained.returncode == 0, trained.stderr
        assert "weights: final" in trained.stdout and f"seed {kept['seed']}" in trained.stderr
        card = json.loads((tmp_path / "trained" / "model_card.json").read_text())
        assert card["weights"]["source"] == "final" and card["weights"]["training"]["selection_accuracy"] == kept["accuracy"]
        import torch

        exported_state = torch.load(tmp_path / "trained" / "model.pt", weights_only=True)
        kept_state = torch.load(kept["path"], weights_only=True)
        assert all(torch.equal(exported_state[k], v) for k, v in kept_state.items())


def test_final_on_a_study_without_a_preset_in_budget_widens_g3_to_it(nas, searched, tmp_path) -> None:
    db = _copy(searched, tmp_path)
    result = nas("final", "--storage", str(db), "--study", "no-preset", *TINY_FINAL, "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["reference"]["label"] == "g3,b0.25,d4-8-4 (paper depths, width solved to the budget)"
    assert verdict["reference"]["trial"] is None
    assert all(row["mflops"] <= 10 for row in verdict["finalists"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--study", "nope"], "no study named 'nope'"),
        (["--study", "with-presets", "--train-size", "many"], "--train-size"),
        (["--study", "with-presets", "--seeds", "1"], "--seeds"),
        (["--study", "with-presets", "--data", "mnist"], "unknown data spec"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_stores_nothing(nas, searched, tmp_path, args: list[str], says: str) -> None:
    db = _copy(searched, tmp_path)
    before = db.read_bytes()
    result = nas("final", "--storage", str(db), *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("nas: error:") and says in result.stderr and len(result.stderr.splitlines()) == 1
    assert db.read_bytes() == before


def test_a_missing_storage_is_not_created(nas, tmp_path) -> None:
    result = nas("final", "--storage", str(tmp_path / "none.db"))
    assert result.returncode == 2 and not (tmp_path / "none.db").exists()


def test_ctrl_c_keeps_finished_runs_and_the_same_command_finishes(nas, searched, tmp_path) -> None:
    db = _copy(searched, tmp_path)
    args = ["final", "--storage", str(db), "--study", "with-presets", "--epochs", "1", "--train-size", "3000",
            "--seeds", "2", "-k", "2"]
    run = interrupt_when([*args, "--quiet"], lambda: _stored_runs(db) >= 1)
    out, err = run.stdout_text, run.stderr_text
    assert run.returncode == 130, (out, err)
    assert "the same command trains only the rest" in err and "Traceback" not in err
    kept = _stored_runs(db)
    assert kept >= 1
    study = optuna.load_study(study_name="with-presets", storage=f"sqlite:///{db}")
    assert FINAL_ANSWER not in study.user_attrs  # no verdict from half a race
    assert all(t.state.name != RUNNING for t in study.get_trials())
    rest = nas(*args, "--json")
    assert rest.returncode == 0, rest.stderr
    document = json.loads(rest.stdout)
    assert document["trained_now"] + kept == 3 * 2  # reference + 2 finalists, 2 seeds each


def _stored_runs(db: Path) -> int:
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")]
        name = next((n for n in names if n.startswith("compare-")), None)
        return 0 if name is None else len(optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials())
    except Exception:  # noqa: BLE001 - the file is being written
        return 0


def _image_folder(root: Path, per_class: int = 60) -> Path:
    """Three classes of real Fashion-MNIST images as PNG files: a user's own small data set."""
    import numpy as np
    from PIL import Image

    from nas.evaluation.data import load_data

    fashion = load_data("fashion-mnist")
    for label, name in enumerate(("shirt", "trouser", "bag")):
        folder = root / name
        folder.mkdir(parents=True)
        for index in np.flatnonzero(fashion.train_labels == label)[:per_class]:
            Image.fromarray(fashion.train_images[index, 0]).save(folder / f"{index}.png")
    return root


def test_search_runs_the_final_stage_by_default_and_ends_with_its_verdict(nas, tmp_path) -> None:
    data = _image_folder(tmp_path / "images")
    db = tmp_path / "s.db"
    result = nas("search", "--budget", "40M", "--n-trials", "5", "--data", f"imagefolder:{data}", "--workers", "1",
                 "--threads", "1", "--storage", str(db), "--study", "own", "--final-time", "120", "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    started = next(line for line in lines if line.startswith("final stage of 'own':"))
    assert "epoch(s) on all training images of imagefolder:" in started and "sized to --final-time 120s" in started
    verdict = _answer(db, "own")
    assert verdict["verdict"] in lines  # the search ends with the answer line (and, with an answer, the export command)
    assert lines[-1] == verdict["verdict"] or lines[-1].startswith("next: nas export")
    assert verdict["fidelity"]["data"] == f"imagefolder:{data}" and verdict["fidelity"]["split"] == "selection"
    assert 1 <= verdict["fidelity"]["epochs"] <= 3 and len(verdict["final_seeds"]) == 4


def test_a_final_stage_that_cannot_fit_its_time_is_skipped_and_says_how_to_run_it(nas, searched, tmp_path) -> None:
    db = _copy(searched, tmp_path)
    base = ["search", "--budget", "40M", "--storage", str(db), "--study", "with-presets", *TINY_SEARCH]
    asked = nas(*base[:-1], "--n-trials", "7", "--final", "2", "--final-time", "10", "--quiet")
    assert asked.returncode == 1, asked.stdout  # asked for explicitly and not done: not a success
    assert "final stage of 'with-presets' skipped" in asked.stdout
    assert f"nas final --storage {db} --study with-presets" in asked.stdout
    default = nas(*base[:-1], "--n-trials", "8", "--final-time", "10", "--quiet")
    assert default.returncode == 0 and "final stage of 'with-presets' skipped" in default.stdout
    assert FINAL_ANSWER not in optuna.load_study(study_name="with-presets", storage=f"sqlite:///{db}").user_attrs


def test_zero_cost_searches_never_train_a_final_stage_unless_asked(nas, tmp_path) -> None:
    db = tmp_path / "z.db"
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--evaluator", "zero-cost", "--storage", str(db),
                 "--study", "z", "--workers", "1")
    assert result.returncode == 0 and "final stage" not in result.stdout

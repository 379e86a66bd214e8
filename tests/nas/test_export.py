"""``nas export`` on a tiny real study: files, round trips through PyTorch and ONNX Runtime, errors.

The study is a real SQLite Optuna study written the way nas/records.py says a search stores
trials (objective values [accuracy, mflops], user attrs, ``trial.set_constraint``). Its
weights are real state_dicts of the proxy-sized models (10 classes, 1 channel), with random
BatchNorm statistics so that a lost buffer would change the outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nas import records as keys
from nas.errors import UserError
from nas.export.bundle import check_output_folder, select_best, select_trial, write_atomically
from nas.records import load_records, study_info
from shufflenet_core import ShuffleNetConfig, build_model, complexity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUDGET = 40_000_000
STUDY = "tiny"
# (groups, width, accuracy, latency_ms, keep weights); trial 2 is over budget, trial 4 fails.
TRIALS = [
    (3, 0.25, 0.70, None, True),
    (3, 0.50, 0.78, 12.5, True),
    (3, 1.00, 0.85, 30.0, True),
    (1, 0.25, 0.72, 5.0, False),
]


def _proxy_weights(config: ShuffleNetConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(config.replace(num_classes=10, in_channels=1, input_size=32))
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 1.5)
    return model.state_dict()


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> Path:
    import optuna

    folder = tmp_path_factory.mktemp("study")
    db = folder / "runs.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY, storage=f"sqlite:///{db}", directions=["maximize", "minimize"]
    )
    for key, value in {
        keys.SHUFFLENAS_VERSION: "0.1.0", keys.BUDGET_MACS: BUDGET, keys.BUDGET_LABEL: "40M",
        keys.OBJECTIVES: ["accuracy", "mflops"], keys.DATA_SPEC: "fashion-mnist", keys.SEED: 0,
        keys.EVALUATOR_SPEC: {"name": "proxy", "data": "fashion-mnist", "seeds": [0],
                              "recipe": {"epochs": 1, "resolution": 32, "learning_rate": 0.1}},
    }.items():
        study.set_user_attr(key, value)
    (folder / "weights").mkdir()
    for number, (groups, width, accuracy, latency, keep) in enumerate(TRIALS):
        config = ShuffleNetConfig.from_width(groups=groups, width=width)
        cost = complexity(config)
        trial = study.ask()
        attrs = {
            keys.CONFIG: config.to_dict(), keys.MACS: cost.macs, keys.PARAMS: cost.params,
            keys.ACCURACY: accuracy, keys.ACCURACY_STD: 0.01, keys.LEARNING_CURVE: [accuracy - 0.1, accuracy],
            keys.EVALUATOR: "proxy", keys.EPOCHS: 2,
        }
        if latency is not None:
            attrs.update({keys.LATENCY_MS: latency, keys.LATENCY_SOURCE: "measured",
                          keys.LATENCY_DEVICE: {"name": "local-cpu", "threads": 1}})
        if keep:
            path = folder / "weights" / f"trial{number}.pt"
            torch.save(_proxy_weights(config, seed=number), path)
            attrs[keys.WEIGHTS_PATH] = str(path)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint("macs_over_budget", cost.macs - BUDGET)
        study.tell(trial, [accuracy, cost.mflops])
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    return db


def _records(db: Path):
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    return study_info(study), load_records(study)


def _one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas: error:"), result.stderr
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _tree(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its SHA-256 (files), "dir" or its link target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --- choosing the trial (pure, on the real study's records) ----------------------------------


def test_best_is_the_most_accurate_feasible_trial_within_budgets(study_db: Path) -> None:
    info, records = _records(study_db)
    assert select_best(records, info).number == 1  # trial 2 is more accurate but over the study budget
    assert select_best(records, info, budget_macs=11_005_000).number == 3  # only g1 0.25x fits
    assert select_best(records, info, latency_budget_ms=10.0).number == 3  # trial 0 has no latency
    assert select_best(records, info, budget_macs=20_000_000).number == 3  # 0.72 beats 0.70
    chosen = select_trial(records, 2)
    assert chosen.macs == complexity(chosen.config).macs
    with pytest.raises(UserError, match="no feasible trial within 5M"):
        select_best(records, info, budget_macs=5_000_000, budget_label="5M")
    with pytest.raises(UserError, match="no trial 99"):
        select_trial(records, 99)
    with pytest.raises(UserError, match="trial 4 has no result"):
        select_trial(records, 4)


# --- round trips through the real command -----------------------------------------------------


def test_export_best_round_trip_pytorch_and_onnx_runtime(nas, study_db: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    import shufflenet_core

    out = tmp_path / "deploy" / "best"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--best", "--budget", "40M", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx", "model.pt", "model_card.json", "model_card.md"]
    assert _leftovers(out.parent) == []

    # PyTorch: the loaded model is trial 1's architecture with exactly its stored weights.
    loaded = shufflenet_core.load(out)
    stored_config = ShuffleNetConfig.from_width(groups=3, width=0.5)
    assert loaded.config == stored_config.replace(num_classes=10, in_channels=1)
    reference = build_model(loaded.config).eval()
    reference.load_state_dict(_proxy_weights(stored_config, seed=1))
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))

    # ONNX: valid, weights in the one file, and ONNX Runtime agrees at the proxy and deployment sizes.
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")), full_check=True)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for size in (32, 224):
        x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            expected = loaded(x).numpy()
        actual = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(actual - expected).max() < 1e-4

    card = json.loads((out / "model_card.json").read_text())
    assert card["provenance"]["trial"] == 1 and card["provenance"]["study"] == STUDY
    assert card["provenance"]["seed"] == 0 and card["provenance"]["selection"] == "--best --budget 40M"
    assert card["complexity"]["macs"] == complexity(loaded.config).macs
    assert card["complexity"]["params"] == sum(p.numel() for p in loaded.parameters())
    assert card["accuracy"]["value"] == 0.78 and card["accuracy"]["data"] == "fashion-mnist"
    assert card["accuracy"]["epochs"] == 2 and card["accuracy"]["recipe"]["resolution"] == 32
    assert card["latency"] == {"ms": 12.5, "source": "measured", "device": {"name": "local-cpu", "threads": 1}}
    assert card["files"]["onnx"]["opset"] == 18 and card["weights"]["source"] == "search"
    markdown = (out / "model_card.md").read_text()
    assert f"{complexity(loaded.config).mflops:.3f}" in markdown and "ONNX opset 18" in markdown
    assert "78.00%" in markdown and "12.500 ms**, measured" in markdown and "fashion-mnist" in markdown
    assert f"judged this architecture at {complexity(stored_config).mflops:.3f} MFLOPs" in markdown
    assert "Exported" in result.stdout or "exported" in result.stdout


def test_untrained_export_and_missing_weights(nas, study_db: Path, tmp_path: Path) -> None:
    import shufflenet_core

    out = tmp_path / "arch"
    base = ["export", "--storage", str(study_db), "--study", STUDY, "--out", str(out)]
    line = _one_line_error(nas(*base, "--trial", "3"))
    assert "kept no weights" in line and "--train-epochs" in line and "--untrained" in line
    assert not out.exists()

    result = nas(*base, "--best", "--latency-budget", "10ms", "--untrained", "--format", "pytorch")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["config.json", "model.pt", "model_card.json", "model_card.md"]
    model = shufflenet_core.load(out)
    assert model.config == ShuffleNetConfig.from_width(groups=1, width=0.25)
    card = json.loads((out / "model_card.json").read_text())
    assert card["weights"]["source"] == "untrained" and card["provenance"]["trial"] == 3
    assert "untrained" in card["accuracy"]["applies_to"] and card["files"]["onnx"] is None
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def _export_args(study_db: Path, out: Path, trial: int = 0) -> list[str]:
    return ["export", "--storage", str(study_db), "--study", STUDY, "--trial", str(trial), "--out", str(out)]


def _user_folder(folder: Path) -> None:
    """A folder of someone's own work, with names an export also writes."""
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "model.pt").write_bytes(b"my own checkpoint")
    (folder / "data" / "train.bin").write_bytes(os.urandom(4096))
    (folder / "link").symlink_to("notes.txt")


@pytest.mark.parametrize("card", [None, {"model": "a card some other tool wrote", "files": {"list": ["model.pt"]}}])
def test_force_refuses_a_folder_that_is_not_an_export(nas, study_db: Path, tmp_path: Path, card) -> None:
    out = tmp_path / "work"
    _user_folder(out)
    if card is not None:
        (out / "model_card.json").write_text(json.dumps(card))
    before = _tree(out)
    for extra in ([], ["--force"]):
        line = _one_line_error(nas(*_export_args(study_db, out), "--format", "pytorch", *extra))
        assert f"--out {out} already exists" in line and "--force only replaces a previous export" in line, line
        assert "choose a new or empty folder" in line
        if card is None:
            assert "no model_card.json" in line and "data/, link, model.pt" in line, line
        else:
            assert "model_card.json was not written by nas export" in line, line
        assert _tree(out) == before
        assert os.listdir(tmp_path) == ["work"]  # no staging or backup folder left beside it


def test_force_replaces_a_previous_export(nas, study_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    first = nas(*_export_args(study_db, out), "--format", "pytorch")
    assert first.returncode == 0, first.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["generator"] == "shufflenas nas export" and card["provenance"]["trial"] == 0
    before = _tree(out)

    args = [*_export_args(study_db, out, trial=1), "--onnx-exporter", "legacy"]
    line = _one_line_error(nas(*args))
    assert line.endswith(f"--out {out} already exists (holds a previous export); pass --force to replace it or "
                         "choose another path"), line
    assert _tree(out) == before
    result = nas(*args, "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["config.json", "model.onnx", "model.pt", "model_card.json", "model_card.md"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["provenance"]["trial"] == 1 and card["generator"] == "shufflenas nas export"
    assert card["files"]["onnx"]["exporter"] == "legacy" and card["files"]["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4
    assert card["latency"]["ms"] == 12.5
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("dropped", ["notes.txt", "eval/", "model.onnx"])
def test_force_refuses_a_previous_export_with_an_extra_file(nas, study_db: Path, tmp_path: Path, dropped) -> None:
    out = tmp_path / "model"
    assert nas(*_export_args(study_db, out), "--format", "pytorch").returncode == 0
    if dropped.endswith("/"):
        (out / dropped).mkdir()
        (out / dropped / "results.csv").write_text("top1,0.8")
    else:  # model.onnx: a file the card of this pytorch-only export does not list
        (out / dropped).write_text("the user's own file")
    before = _tree(out)
    line = _one_line_error(nas(*_export_args(study_db, out, trial=1), "--format", "pytorch", "--force"))
    assert f"holds files the previous export did not write ({dropped})" in line, line
    assert "move them out or choose another folder" in line
    assert _tree(out) == before and _leftovers(tmp_path) == []


@pytest.mark.parametrize("schema", ["as released", "shufflenas.export.model_card/1"])
def test_force_replaces_an_export_of_release_0_1_0(nas, study_db: Path, tmp_path: Path, schema) -> None:
    """Cards written by 0.1.0 have no "generator"; their schema and provenance identify them."""
    out = tmp_path / "model"
    shutil.copytree(FIXTURES / "export-0.1.0", out)
    card = json.loads((out / "model_card.json").read_text())
    assert "generator" not in card and card["provenance"]["exported_with"] == "shufflenas 0.1.0"
    if schema != "as released":
        card["schema"] = schema  # what the development version after 0.1.0 wrote
        (out / "model_card.json").write_text(json.dumps(card))
    for name in card["files"]["list"]:
        (out / name).write_bytes(b"exported by 0.1.0")
    result = nas(*_export_args(study_db, out), "--format", "pytorch", "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["config.json", "model.pt", "model_card.json", "model_card.md"]
    assert json.loads((out / "model_card.json").read_text())["generator"] == "shufflenas nas export"


def test_an_empty_folder_is_used_with_force(nas, study_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    line = _one_line_error(nas(*_export_args(study_db, out), "--format", "pytorch"))
    assert "already exists (is an empty folder); pass --force" in line and os.listdir(out) == []
    result = nas(*_export_args(study_db, out), "--format", "pytorch", "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["config.json", "model.pt", "model_card.json", "model_card.md"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--trial", "99"], "no trial 99"),
        (["--best", "--budget", "5M"], "no feasible trial within 5M"),
        (["--best", "--budget", "lots"], "is not a number of FLOPs"),
        (["--best", "--latency-budget", "fast"], "not a duration"),
        (["--trial", "1", "--best"], "exactly one of --trial N or --best"),
        (["--trial", "1", "--format", "tflite"], "choose from onnx, pytorch"),
        (["--trial", "1", "--untrained", "--train-epochs", "2"], "exclude each other"),
        (["--study", "nope", "--trial", "1"], "no study named 'nope'"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(nas, study_db: Path, tmp_path: Path, extra, expected) -> None:
    out = tmp_path / "never"
    args = ["export", "--storage", str(study_db), "--out", str(out)]
    if "--study" not in extra:
        args += ["--study", STUDY]
    assert expected in _one_line_error(nas(*args, *extra))
    assert not out.exists() and os.listdir(tmp_path) == []


def test_missing_storage_and_unwritable_paths(nas, study_db: Path, tmp_path: Path) -> None:
    line = _one_line_error(nas("export", "--storage", str(tmp_path / "none.db"), "--trial", "0", "--out", str(tmp_path / "x")))
    assert "no study storage" in line and not (tmp_path / "x").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = ["export", "--storage", str(study_db), "--study", STUDY, "--trial", "0"]
    assert "is a file" in _one_line_error(nas(*base, "--out", str(blocker / "sub")))
    assert "is not a folder" in _one_line_error(nas(*base, "--out", str(blocker)))
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "permission denied" in _one_line_error(nas(*base, "--out", str(locked / "m")))
    # Root may write anywhere the kernel lets it; /proc refuses new folders even to root.
    line = _one_line_error(nas(*base, "--out", "/proc/shufflenas-export-test"))
    assert "cannot write" in line or "permission denied" in line


# --- the atomic write itself --------------------------------------------------------------------


def test_failure_midway_leaves_the_old_folder_or_nothing(tmp_path: Path) -> None:
    def half_then_fail(folder: Path) -> None:
        (folder / "model.pt").write_text("partial")
        raise KeyboardInterrupt

    fresh = tmp_path / "new" / "deeper" / "model"
    with pytest.raises(KeyboardInterrupt):
        write_atomically(fresh, force=False, fill=half_then_fail)
    assert os.listdir(tmp_path) == []  # no partial folder, no parents it created

    existing = tmp_path / "model"
    _previous_export(existing)
    check_output_folder(existing, force=True)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(existing, force=True, fill=half_then_fail)
    assert os.listdir(tmp_path) == ["model"] and (existing / "model.pt").read_text() == "old"

    write_atomically(existing, force=True, fill=lambda folder: (folder / "model.pt").write_text("new"))
    assert os.listdir(tmp_path) == ["model"] and (existing / "model.pt").read_text() == "new"


def _previous_export(folder: Path) -> None:
    folder.mkdir()
    (folder / "model.pt").write_text("old")
    card = {"generator": "shufflenas nas export", "files": {"list": ["model.pt"]}}
    (folder / "model_card.json").write_text(json.dumps(card))


def test_a_file_dropped_in_while_exporting_stops_the_replacement(tmp_path: Path) -> None:
    """The check before training is repeated when the new files are ready (an export may take hours)."""
    existing = tmp_path / "model"
    _previous_export(existing)
    check_output_folder(existing, force=True)

    def fill_while_the_user_works(folder: Path) -> None:
        (folder / "model.pt").write_text("new")
        (existing / "results.csv").write_text("the user's evaluation")

    with pytest.raises(UserError, match=r"holds files the previous export did not write \(results.csv\)"):
        write_atomically(existing, force=True, fill=fill_while_the_user_works)
    assert sorted(os.listdir(existing)) == ["model.pt", "model_card.json", "results.csv"]
    assert (existing / "model.pt").read_text() == "old" and os.listdir(tmp_path) == ["model"]


# --- training before export ----------------------------------------------------------------------


@pytest.mark.slow
def test_train_epochs_trains_on_real_data_and_reports_test_accuracy(nas, study_db: Path, tmp_path: Path) -> None:
    import shufflenet_core
    from nas.evaluation.data import load_data

    out = tmp_path / "trained"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--trial", "3", "--train-epochs", "1",
                 "--format", "pytorch", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "held-out test accuracy" in result.stderr and "train" in result.stderr
    card = json.loads((out / "model_card.json").read_text())
    training = card["weights"]["training"]
    dataset = load_data("fashion-mnist")
    assert card["weights"]["source"] == "trained" and training["epochs"] == 1
    assert training["data"] == "fashion-mnist" and training["test_images"] == len(dataset.test_labels)
    assert training["recipe"]["resolution"] == 32 and len(training["preprocessing"]["mean"]) == 1

    # The card's test accuracy is what the exported weights really score on the test split.
    model = shufflenet_core.load(out)
    prep = training["preprocessing"]
    images = torch.from_numpy(dataset.test_images).float() / 255
    images = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    images = (images - torch.tensor(prep["mean"]).view(1, -1, 1, 1)) / torch.tensor(prep["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        predicted = torch.cat([model(images[i : i + 500]).argmax(1) for i in range(0, len(images), 500)])
    accuracy = float((predicted == torch.from_numpy(dataset.test_labels)).float().mean())
    assert abs(accuracy - training["test_accuracy"]) < 1e-3
    assert accuracy > 0.3  # ten classes: chance is 0.1; one real epoch learns far more
    assert f"{100 * training['test_accuracy']:.2f}%" in (out / "model_card.md").read_text()


# --- end to end through the real search ----------------------------------------------------------


@pytest.mark.slow
def test_search_keep_weights_then_export_best(nas, tmp_path: Path) -> None:
    import onnxruntime

    import shufflenet_core

    db = tmp_path / "search.db"
    searched = nas("search", "--budget", "40M", "--n-trials", "3", "--storage", str(db), "--study", "e2e", "--seed", "0",
                   "--evaluator", "proxy", "--epochs", "1", "--train-size", "256", "--val-size", "128", "--keep-weights",
                   "--runs-dir", str(tmp_path / "runs"), "--quiet", "--final", "0", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr
    out = tmp_path / "model"
    exported = nas("export", "--storage", str(db), "--study", "e2e", "--best", "--budget", "40M", "--out", str(out),
                   "--onnx-exporter", "legacy", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr

    info, records = _records_of(db, "e2e")
    best = max((r for r in records if r.evaluated and r.feasible), key=lambda r: (r.accuracy, -r.macs))
    card = json.loads((out / "model_card.json").read_text())
    assert card["provenance"]["trial"] == best.number and card["weights"]["source"] == "search"
    assert card["accuracy"]["value"] == best.accuracy and card["accuracy"]["recipe"]["train_size"] == 256

    # The exported weights are exactly the ones the search kept for that trial.
    model = shufflenet_core.load(out)
    kept = torch.load(best.attrs[keys.WEIGHTS_PATH], weights_only=True)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in kept.items())
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, model.config.in_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert np.abs(session.run(None, {"input": x.numpy()})[0] - model(x).numpy()).max() < 1e-4


def _records_of(db: Path, name: str):
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return study_info(study), load_records(study)


# --- int8 -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_int8_of_a_trained_model_keeps_its_accuracy_and_the_card_says_so(nas, study_db: Path, tmp_path: Path) -> None:
    import onnxruntime

    from nas.evaluation.data import load_data

    out = tmp_path / "int8"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--trial", "3", "--train-epochs", "2",
                 "--format", "onnx-int8,pytorch,executorch,executorch-int8", "--onnx-exporter", "legacy", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.int8.onnx", "model.int8.pte", "model.pt",
                                                      "model.pte", "model_card.json", "model_card.md"]
    # (the float32 ONNX file int8 came from is not left behind)
    card = json.loads((out / "model_card.json").read_text())
    int8 = card["files"]["onnx_int8"]
    assert int8["calibration"] == {"images": 256, "split": "train", "method": "MinMax", "weights": "int8, per channel",
                                   "activations": "uint8, per tensor"}
    assert int8["bytes"] == (out / "model.int8.onnx").stat().st_size
    rows = {row["file"]: row for row in card["deployed_accuracy"]["files"]}
    fp32, quantized = rows["model.pt"]["test_accuracy"], rows["model.int8.onnx"]["test_accuracy"]
    assert fp32 == card["weights"]["training"]["test_accuracy"] or abs(fp32 - card["weights"]["training"]["test_accuracy"]) < 1e-3
    assert rows["model.int8.onnx"]["top1_agreement_with_fp32"] >= 0.97 and fp32 - quantized <= 0.02, rows

    # The int8 file really scores what the card says, with the card's own preprocessing.
    proto_ops = {node.op_type for node in __import__("onnx").load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= proto_ops
    prep = card["preprocessing"]
    dataset = load_data("fashion-mnist")
    images = torch.from_numpy(dataset.test_images).float() / 255
    images = torch.nn.functional.interpolate(images, size=tuple(prep["resize_to"]), mode="bilinear", antialias=True,
                                             align_corners=False)
    images = ((images - torch.tensor(prep["mean"]).view(1, -1, 1, 1)) / torch.tensor(prep["std"]).view(1, -1, 1, 1)).numpy()
    session = onnxruntime.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    predicted = np.concatenate([session.run(None, {"input": images[i : i + 500]})[0].argmax(1) for i in range(0, len(images), 500)])
    assert abs(float((predicted == dataset.test_labels).mean()) - quantized) < 1e-3
    text = (out / "model_card.md").read_text()
    assert "| `model.int8.onnx` | onnxruntime | int8 |" in text and "## Preprocessing" in text

    # ExecuTorch: the program runs in ExecuTorch's runtime, agrees with PyTorch, and XNNPACK runs it.
    import shufflenet_core
    from executorch.runtime import Runtime

    programs = {program["file"]: program for program in card["files"]["executorch"]}
    assert programs["model.pte"]["input_shape"] == [1, 1, 32, 32]
    for program in programs.values():
        assert program["delegation"]["delegated_share"] >= 0.9 and program["bytes"] == (out / program["file"]).stat().st_size
    model = shufflenet_core.load(out).eval()
    method = Runtime.get().load_program(str(out / "model.pte")).load_method("forward")
    for index in range(5):
        image = torch.from_numpy(images[index : index + 1])
        with torch.no_grad():
            assert (method.execute([image])[0] - model(image)).abs().max() < 1e-4
    assert rows["model.pte"]["top1_agreement_with_fp32"] >= 0.999
    assert rows["model.int8.pte"]["top1_agreement_with_fp32"] >= 0.97, rows
    assert fp32 - rows["model.int8.pte"]["test_accuracy"] <= 0.02, rows
    assert programs["model.int8.pte"]["quantization"]["split"] == "train"


def test_executorch_formats_without_the_package_are_one_line_and_write_nothing(nas, study_db: Path, tmp_path: Path) -> None:
    """ExecuTorch is installed for the tests; a package that fails to import stands in for its absence."""
    shadow = tmp_path / "shadow" / "executorch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    out = tmp_path / "never"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--trial", "1", "--untrained", "--format",
                 "executorch", "--out", str(out), env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert result.returncode == 2
    assert result.stderr.strip() == 'nas: error: the executorch formats need ExecuTorch: pip install "shufflenas[mobile]"'
    assert not out.exists()


def test_onnx_int8_of_an_untrained_architecture_is_calibrated_on_random_inputs(nas, study_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "untrained-int8"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--trial", "1", "--untrained",
                 "--format", "onnx,onnx-int8", "--onnx-exporter", "legacy", "--out", str(out))
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["files"]["onnx_int8"]["calibration"]["split"] == "random" and card["deployed_accuracy"] is None
    assert (out / "model.onnx").exists() and (out / "model.int8.onnx").exists()


def test_export_times_each_file_on_the_named_device_for_the_card(nas, study_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "timed"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--trial", "1", "--untrained",
                 "--format", "onnx,onnx-int8,pytorch", "--onnx-exporter", "legacy", "--device", "local", "--out", str(out))
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model_card.json").read_text())
    timed = card["file_latency"]
    assert timed["device"]["kind"] == "local" and timed["threads"] == 1 and timed["runs"] == 50
    config = json.loads((out / "config.json").read_text())
    assert timed["input_shape"] == [1, config["in_channels"], config["input_size"], config["input_size"]]
    rows = {row["file"]: row for row in timed["files"]}
    assert set(rows) == {"model.onnx", "model.int8.onnx"}  # model.pt has no runtime to time it in
    assert [(rows[f]["runtime"], rows[f]["precision"]) for f in ("model.onnx", "model.int8.onnx")] == [
        ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert all(0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] for row in rows.values())
    markdown = (out / "model_card.md").read_text()
    assert "| `model.int8.onnx` | onnxruntime | int8 |" in markdown and "Latency of each file on local" in markdown


def test_export_to_a_device_that_cannot_time_a_format_is_refused_before_any_work(nas, study_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = nas("export", "--storage", str(study_db), "--study", STUDY, "--trial", "1", "--untrained",
                 "--format", "onnx", "--device", "ssh://nobody@127.0.0.1:1", "--out", str(out))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("nas: error: ssh://nobody@127.0.0.1:1") and not out.exists()

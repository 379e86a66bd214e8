"""`nas search` end to end, as a user drives it: a real SQLite study file, real training."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas.budget import parse_budget
from shufflenet_core import ShuffleNetConfig, complexity

from tests.conftest import REPO_ROOT

TINY = ["--train-size", "200", "--val-size", "100", "--batch-size", "50", "--no-presets", "--threads", "1", "--final", "0"]


def load(db: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def test_tiny_search_stores_everything_and_respects_the_budget(nas, tmp_path) -> None:
    db = tmp_path / "s.db"
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--storage", str(db), "--study", "tiny",
                 "--workers", "1", "--keep-weights", "--runs-dir", str(tmp_path / "runs"), *TINY)
    assert result.returncode == 0, result.stderr
    assert "Pareto front of 'tiny'" in result.stdout and "best under 40M" in result.stdout
    study = load(db, "tiny")
    assert study.user_attrs["budget_macs"] == 40_000_000 and study.user_attrs["objectives"] == ["accuracy", "mflops"]
    assert study.user_attrs["evaluator_spec"]["recipe"]["train_size"] == 200
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3
    for trial in trials:
        config = ShuffleNetConfig.from_dict(trial.user_attrs["config"])
        macs = complexity(config).macs
        assert macs == trial.user_attrs["macs"] and complexity(config).params == trial.user_attrs["params"]
        assert trial.values[1] == pytest.approx(macs / 1e6)
        feasible = all(v <= 0 for v in trial.constraints.values())
        if feasible:
            assert macs <= parse_budget("40M")
            assert 0.0 <= trial.user_attrs["accuracy"] <= 1.0 and trial.values[0] == trial.user_attrs["accuracy"]
            assert len(trial.user_attrs["learning_curve"]) == 1 and trial.user_attrs["train_seconds"] > 0
            weights = Path(trial.user_attrs["weights_path"])
            import torch

            state = torch.load(weights, weights_only=True)
            assert "classifier.weight" in state
        else:
            assert trial.user_attrs["skipped"].startswith("over budget")


def test_same_seed_random_sampler_gives_the_same_configs(nas, tmp_path) -> None:
    sequences = []
    for run in range(2):
        db = tmp_path / f"r{run}.db"
        result = nas("search", "--budget", "140M", "--n-trials", "5", "--sampler", "random", "--seed", "11",
                     "--evaluator", "zero-cost", "--storage", str(db), "--workers", "1", "--no-presets")
        assert result.returncode == 0, result.stderr
        sequences.append([t.user_attrs["config"] for t in load(db, "shufflenet-140M").get_trials()])
    assert sequences[0] == sequences[1] and len(sequences[0]) == 5
    assert len({str(c) for c in sequences[0]}) > 1


def test_repeated_budgets_make_one_study_each_and_resume(nas, tmp_path) -> None:
    db = tmp_path / "multi.db"
    args = ["search", "--budget", "40M", "--budget", "0.14G", "--n-trials", "4", "--evaluator", "zero-cost",
            "--storage", str(db), "--workers", "1"]
    assert nas(*args).returncode == 0
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}"))
    assert names == ["shufflenet-0.14G", "shufflenet-40M"]
    presets = [t.user_attrs.get("preset") for t in load(db, "shufflenet-0.14G").get_trials()]
    assert "shufflenet_v1_1.0x_g3" in presets  # the paper's hand design, as a reference point
    again = nas(*args)
    assert again.returncode == 0 and "already has 4 finished trials" in again.stdout
    more = nas(*args[:-4], "--n-trials", "6", *args[-4:])  # raise the target: continue, don't restart
    assert more.returncode == 0
    assert states(load(db, "shufflenet-40M")) == {"COMPLETE": 6}


def test_two_workers_share_one_storage(nas, tmp_path) -> None:
    db = tmp_path / "workers.db"
    result = nas("search", "--budget", "40M", "--n-trials", "6", "--workers", "2", "--storage", str(db), *TINY)
    assert result.returncode == 0, result.stderr
    trials = load(db, "shufflenet-40M").get_trials()
    assert len(trials) == 6 and states(load(db, "shufflenet-40M")) == {"COMPLETE": 6}
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"the search ended early: {process.communicate()}")
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def _completed(db: Path) -> list[int]:
    if not db.exists():
        return []
    try:
        study = load(db, "killed")
    except Exception:  # noqa: BLE001 - study not created yet
        return []
    return [t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_search_resumes_without_losing_trials(tmp_path, sig) -> None:
    db = tmp_path / "killed.db"
    # Enough trials that the signal lands mid-search (a 40M trial on 1500 images takes about
    # a second): a search that already finished cannot be interrupted.
    trials = 10
    args = [sys.executable, "-m", "nas.cli", "search", "--budget", "40M", "--n-trials", str(trials), "--storage", str(db),
            "--study", "killed", "--workers", "1", "--train-size", "1500", "--val-size", "100", "--no-presets",
            "--threads", "1", "--quiet", "--final", "0"]
    # Ctrl-C in a terminal: SIGINT at its default. A suite started in the background by a
    # non-interactive shell has SIGINT ignored, the search would inherit that and run to its end.
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(lambda: len(_completed(db)) >= 1 and states(load(db, "killed")).get("RUNNING"), 240, process)
    before = _completed(db)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "interrupted" in out + err and "Traceback" not in err, (out, err)
        assert states(load(db, "killed")).get("RUNNING") is None  # the running trial was marked
    else:
        assert process.returncode == -signal.SIGKILL
        assert states(load(db, "killed")).get("RUNNING") == 1
    resumed = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    study = load(db, "killed")
    assert set(before) <= set(_completed(db))
    assert states(study) == {"COMPLETE": trials, "FAIL": 1}
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))[0]
    if sig == signal.SIGKILL:
        assert failed.user_attrs["fail_reason"].startswith("interrupted")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_input_is_one_line_and_leaves_the_study_untouched(nas, tmp_path) -> None:
    db = tmp_path / "keep.db"
    assert nas("search", "--budget", "40M", "--n-trials", "2", "--evaluator", "zero-cost", "--storage", str(db)).returncode == 0
    digest = _digest(db)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    cases = [
        (["--budget", "abc"], "is not a number of FLOPs"),
        (["--budget", "0"], "must be positive"),
        (["--budget", "1M"], "below the smallest model of the design space (6.57 MFLOPs"),
        (["--data", "imagefolder:/no/such/dir"], "no data folder at /no/such/dir"),
        (["--data", "cifar10:/no/such/dir"], "cifar-10-batches-py"),
        (["--storage", str(corrupt)], "is not a readable study storage"),
        (["--storage", "ftp://example"], "cannot open the study storage"),
        (["--storage", "notes.txt"], "neither a URL"),
        (["--sampler", "grid"], "unknown sampler"),
        (["--objectives", "mflops"], "list accuracy first"),
        (["--latency-budget", "30ms"], "need --device"),
        (["--space", str(tmp_path / "none.yaml")], "no design-space file"),
        (["--evaluator", "zero-cost", "--budget", "140M"], "already exists with a different budget_macs"),
    ]
    for extra, message in cases:
        args = ["search", "--storage", str(db), "--study", "shufflenet-40M", "--n-trials", "3", *extra]
        result = nas(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (extra, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("nas: error:") and message in lines[0], (extra, lines)
    assert _digest(db) == digest
    assert _digest(corrupt) == hashlib.sha256(b"this is not a database" * 100).hexdigest()


def test_a_resume_that_changes_the_experiment_names_the_field_that_differs(nas, tmp_path) -> None:
    """Regression: the whole evaluator spec, cut to 60 characters, hid which field differed."""
    db = tmp_path / "seeds.db"
    args = ["search", "--budget", "140M", "--n-trials", "1", "--epochs", "1", "--storage", str(db), "--workers", "1", *TINY]
    assert nas(*args, "--seed", "1").returncode == 0
    again = nas(*args, "--seed", "2")
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 2 and len(lines) == 1, again.stderr
    assert "already exists with a different evaluator_spec.seeds ([" in lines[0], lines
    assert len(load(db, "shufflenet-140M").get_trials()) == 1


def test_zero_cost_prescreen_and_single_objective_pruning(nas, tmp_path) -> None:
    db = tmp_path / "pre.db"
    result = nas("search", "--budget", "140M", "--n-trials", "3", "--prescreen", "12", "--storage", str(db),
                 "--workers", "1", *TINY)
    assert result.returncode == 0, result.stderr
    trials = load(db, "shufflenet-140M").get_trials()
    screened = [t for t in trials if "prescreen_synflow" in t.user_attrs]
    assert len(screened) == 1  # n_trials // 2 enqueued, best synflow first
    db2 = tmp_path / "single.db"
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--objectives", "accuracy", "--epochs", "2",
                 "--storage", str(db2), "--workers", "1", *TINY)
    assert result.returncode == 0, result.stderr
    study = load(db2, "shufflenet-40M")
    assert len(study.directions) == 1
    assert all(len(t.intermediate_values) >= 1 for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED"))


def test_help_explains_the_space(nas) -> None:
    result = nas("search", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "groups [1, 2, 3, 4, 8]" in text and "solved to fill the budget" in text
    assert "--start-trials" in text and "space-filling" in text


def test_latency_constraint_and_objective_on_the_local_device(nas, tmp_path) -> None:
    db = tmp_path / "latency.db"
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--evaluator", "zero-cost", "--device", "local",
                 "--latency-budget", "1000ms", "--objectives", "accuracy,mflops,latency", "--storage", str(db),
                 "--no-presets", "--workers", "1")
    assert result.returncode == 0, result.stderr
    study = load(db, "shufflenet-40M")
    assert study.user_attrs["objectives"] == ["synflow", "mflops", "latency_ms"] and len(study.directions) == 3
    for trial in study.get_trials():
        assert trial.user_attrs["latency_source"] == "measured" and trial.user_attrs["latency_ms"] > 0
        assert trial.values[2] == trial.user_attrs["latency_ms"]
        assert trial.constraints["latency_over_budget_ms"] == pytest.approx(trial.user_attrs["latency_ms"] - 1000)
        assert trial.user_attrs["latency_device"]["arch"]
    unreachable = nas("search", "--budget", "40M", "--evaluator", "zero-cost", "--device", "ssh://nobody@127.0.0.1:1",
                      "--storage", str(tmp_path / "never.db"))
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("nas: error: ssh://nobody@127.0.0.1:1")
    assert not (tmp_path / "never.db").exists()


def test_re_proposed_configs_reuse_the_earlier_result(nas, tmp_path) -> None:
    space = tmp_path / "one.yaml"
    space.write_text("groups: [3]\nbottleneck_ratios: [0.25]\nstage_depths: [[1, 1], [1, 1], [1, 1]]\nstem_channels: [24]\n")
    db = tmp_path / "dup.db"
    result = nas("search", "--budget", "40M", "--n-trials", "3", "--space", str(space), "--storage", str(db), "--workers", "1", *TINY)
    assert result.returncode == 0, result.stderr
    first, *others = load(db, "shufflenet-40M").get_trials()
    assert "duplicate_of" not in first.user_attrs
    for trial in others:
        assert trial.user_attrs["duplicate_of"] == 0 and trial.values == first.values
        assert trial.user_attrs["learning_curve"] == first.user_attrs["learning_curve"]
    assert result.stdout.count("g3 c") >= 1 and "│     1 │" not in result.stdout  # the front shows the config once


def test_search_opens_with_the_space_filling_design_once(nas, tmp_path) -> None:
    def search(db: Path, n_trials: int, *extra: str):
        result = nas("search", "--budget", "140M", "--n-trials", str(n_trials), "--evaluator", "zero-cost",
                     "--storage", str(db), "--workers", "1", "--no-presets", *extra)
        assert result.returncode == 0, result.stderr
        return load(db, "shufflenet-140M").get_trials()

    db = tmp_path / "start.db"
    opening = [t for t in search(db, 6) if "start_design" in t.user_attrs]
    assert [t.number for t in opening] == [0, 1, 2, 3]  # tpe's start-up count for 6 trials, run first
    shallowest = min(sum(ShuffleNetConfig.from_dict(t.user_attrs["config"]).stage_depths) for t in opening)
    assert shallowest == 8  # every stage at its minimum depth, width solved to fill 140M
    trials = search(db, 8)  # resuming adds trials, not a second design
    assert len(trials) == 8 and sum("start_design" in t.user_attrs for t in trials) == 4
    trials = search(tmp_path / "off.db", 2, "--start-trials", "0", "--sampler", "random", "--seed", "11")
    assert not any("start_design" in t.user_attrs for t in trials)


def test_runtime_and_precision_mistakes_are_one_line_each(nas, tmp_path) -> None:
    """Bad --runtime/--precision (or a table timed in other terms): exit 2, one line, nothing stored."""
    from nas.latency.lut import LatencyLUT

    fp32_table = tmp_path / "fp32.json"
    LatencyLUT(device={"kind": "local"}, entries={}, settings={"threads": 1}).save(fp32_table)
    db = tmp_path / "never.db"
    cases = [
        (["--runtime", "tflite"], "--runtime must be one of onnxruntime, executorch"),
        (["--precision", "int4"], "--precision must be one of fp32, int8"),
        (["--precision", "int8", "--evaluator", "zero-cost"], "applies to trained accuracy only"),
        (["--runtime", "executorch"], "applies to latency (--device) or int8 accuracy"),
        (["--device", "lut", "--lut", str(fp32_table), "--precision", "int8"],
         "was timed in onnxruntime fp32, 1 thread; this asks for onnxruntime int8"),
    ]
    for extra, message in cases:
        result = nas("search", "--budget", "40M", "--n-trials", "2", "--storage", str(db), *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (extra, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("nas: error:") and message in lines[0], (extra, lines)
    assert not db.exists()


def _table_that_predicts(space_file: Path, budget: str, ms_per_entry: float, path: Path) -> Path:
    """A lookup table for ``space_file`` whose every entry is ``ms_per_entry``: wrong on purpose."""
    from nas.budget import parse_budget
    from nas.latency.lut import LatencyLUT, component_keys
    from nas.latency.space import load_config_space

    space = load_config_space(space_file, parse_budget(budget))
    keys = {key for config in space.covering() for key in component_keys(config)}
    return LatencyLUT(device={"kind": "local"}, entries=dict.fromkeys(keys, ms_per_entry), settings={"threads": 1}).save(path)


def test_the_fronts_predicted_latencies_are_measured_before_they_are_reported(nas, tmp_path) -> None:
    """Regression: with --lut the front was reported with the table's predictions, never
    measured. A table that predicts every config at ~0.1 ms and a 1.2 ms budget: each front
    member is measured on the real device, where those over the budget leave the front."""
    import json

    from nas.records import load_records, study_info
    from nas.results import study_front

    space = tmp_path / "small.yaml"
    space.write_text("groups: [3, 8]\nbottleneck_ratios: [0.25]\nstage_depths: [[1, 2], [1, 3], [1, 2]]\n"
                     "stem_channels: [24]\n")
    table = _table_that_predicts(space, "40M", 0.01, tmp_path / "wrong.json")
    db = tmp_path / "front.db"
    result = nas("search", "--budget", "40M", "--space", str(space), "--n-trials", "6", "--evaluator", "zero-cost",
                 "--device", "local", "--lut", str(table), "--latency-budget", "1000ms", "--storage", str(db),
                 "--study", "loose", "--no-presets", "--workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "measuring the front's" in result.stdout
    study = load(db, "loose")
    records, info = load_records(study), study_info(study)
    front = study_front(records, info)
    assert front and all(r.attrs["latency_source"] == "measured" for r in front)
    for record in front:
        stored = study.user_attrs[f"front_latency:{record.number}"]
        assert record.latency_ms == stored["median_ms"] > 0.3  # the table said ~0.1
        assert record.attrs["latency_predicted_ms"] == stored["predicted_ms"] < 0.3
        assert record.latencies == {"onnxruntime/fp32": stored["median_ms"]}
    assert "*" not in result.stdout.split("Pareto front of")[1].split("trials:")[0]
    # The trial itself still says what the search saw; only the record folds the measurement in.
    assert all(t.user_attrs["latency_source"] == "predicted" for t in study.get_trials())
    # A budget the device shows the front cannot meet: each member measured over it leaves the front.
    tight = min(r.latency_ms for r in front) * 0.5
    result = nas("search", "--budget", "40M", "--space", str(space), "--n-trials", "6", "--evaluator", "zero-cost",
                 "--device", "local", "--lut", str(table), "--latency-budget", f"{tight}ms", "--storage", str(db),
                 "--study", "tight", "--no-presets", "--workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "off the front" in result.stdout
    study = load(db, "tight")
    records = load_records(study)
    measured = [r for r in records if f"front_latency:{r.number}" in study.user_attrs]
    assert measured and all(not r.feasible for r in measured)
    assert study_front(records, study_info(study)) == [] or all(
        r.attrs["latency_source"] == "measured" and r.latency_ms <= tight for r in study_front(records, study_info(study)))
    assert json.loads(json.dumps(study.user_attrs["latency_runtime"])) == "onnxruntime"


def test_a_study_keeps_its_latency_runtime_and_precision_on_resume(nas, tmp_path) -> None:
    """Latencies of one study are in one runtime and precision: resuming it in others is refused."""
    from nas.latency.lut import LatencyLUT

    space = tmp_path / "small.yaml"
    space.write_text("groups: [3]\nbottleneck_ratios: [0.25]\nstage_depths: [[1, 2], [1, 2], [1, 2]]\nstem_channels: [24]\n")
    int8 = _table_that_predicts(space, "40M", 0.05, tmp_path / "int8.json")
    table = LatencyLUT.load(int8)
    table.precision = "int8"
    table.save(int8)
    fp32 = _table_that_predicts(space, "40M", 0.05, tmp_path / "fp32.json")
    db = tmp_path / "resume.db"
    common = ["search", "--budget", "40M", "--space", str(space), "--evaluator", "zero-cost", "--device", "lut",
              "--storage", str(db), "--study", "deploy", "--no-presets", "--workers", "1", "--quiet"]
    first = nas(*common, "--n-trials", "2", "--lut", str(int8), "--precision", "int8")
    assert first.returncode == 0, first.stderr
    study = load(db, "deploy")
    assert (study.user_attrs["latency_runtime"], study.user_attrs["latency_precision"]) == ("onnxruntime", "int8")
    assert all(t.user_attrs["latencies"] == {"onnxruntime/int8": {"median_ms": t.user_attrs["latency_ms"],
                                                                 "source": "predicted"}} for t in study.get_trials())
    again = nas(*common, "--n-trials", "3", "--lut", str(fp32))
    assert again.returncode == 2 and "already exists with a different latency_precision (int8 vs fp32)" in again.stderr
    assert len(load(db, "deploy").get_trials()) == 2

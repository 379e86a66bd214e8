"""The Streamlit page itself, run by Streamlit's AppTest over real SQLite studies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.app import READ_ONLY_NOTE
from dashboard.data import ACTIONS_ENV, STORAGE_ENV, load_study_data
from dashboard.figures import study_front

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def _run(monkeypatch: pytest.MonkeyPatch, storage: Path | str, actions: str | None = None,
         state: dict | None = None) -> AppTest:
    """The page as `nas dashboard` starts it: the storage, and ``actions`` as the command sets
    it ("on", "off"; None leaves the variable unset, as `streamlit run dashboard/app.py` does)."""
    monkeypatch.setenv(STORAGE_ENV, str(storage))
    if actions is None:
        monkeypatch.delenv(ACTIONS_ENV, raising=False)
    else:
        monkeypatch.setenv(ACTIONS_ENV, actions)
    app = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in (state or {}).items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def _chart(app: AppTest, key: str) -> dict:
    (chart,) = [c for c in app.get("plotly_chart") if c.key == key]
    return json.loads(chart.proto.spec)


def _front_traces(spec: dict) -> list[dict]:
    return [t for t in spec["data"] if (t.get("meta") or {}).get("role") == "front"]


def test_search_study_page(monkeypatch, search_storage):
    app = _run(monkeypatch, search_storage.path)
    assert not app.error
    assert app.multiselect(key="studies").value == [search_storage.study]
    data = load_study_data(str(search_storage.path), search_storage.study)
    (front,) = _front_traces(_chart(app, "pareto"))
    assert [tuple(c) for c in front["customdata"]] == [(data.name, r.number) for r in study_front(data)]
    assert len(front["x"]) >= 1
    # Budget line at the study's own budget (40M).
    assert any(shape["x0"] == pytest.approx(data.budget_mflops) for shape in _chart(app, "pareto")["layout"]["shapes"])
    # Every figure has an HTML download.
    html_buttons = {b.key for b in app.get("download_button") if b.proto.label == "HTML"}
    for key in ("pareto", "knobs", "hypervolume", f"importance-{data.name}"):
        _chart(app, key)
        assert f"{key}-html" in html_buttons
    # Zero-cost scores are not errors: the EDF view says so instead of drawing nonsense.
    assert any("error EDF needs trained accuracy" in i.value for i in app.info)
    # The convergence curve ends at the hypervolume of the front the package computes.
    from nas.analysis import hypervolume, reference_point

    reference = reference_point(data.records, ("score", "mflops"), limits={"mflops": data.budget_mflops})
    expected = hypervolume([[r.attrs["score"], r.mflops] for r in study_front(data)], reference, ["maximize", "minimize"])
    assert _chart(app, "hypervolume")["data"][0]["y"][-1] == pytest.approx(expected)


def test_trial_detail_and_export_command(monkeypatch, search_storage):
    app = _run(monkeypatch, search_storage.path)
    data = load_study_data(str(search_storage.path), search_storage.study)
    trial = data.completed[0]
    app.selectbox(key="detail_trial").set_value(trial.number).run()
    assert not app.exception
    commands = [c.value for c in app.code]
    expected = (f"nas export --storage {search_storage.path} --study {data.name} --trial {trial.number} "
                f"--out exports/{data.name}-trial{trial.number}")
    assert any(c.startswith(expected) for c in commands), commands
    app.radio(key=f"weights-{data.name}-{trial.number}").set_value("train").run()
    app.number_input(key=f"epochs-{data.name}-{trial.number}").set_value(3).run()
    assert f"{expected} --train-epochs 3" in [c.value for c in app.code]
    config = app.json[0].value
    assert json.loads(config)["groups"] == trial.config.groups
    assert app.metric[0].label == "score" and app.metric[0].value == f"{trial.attrs['score']:.4g}"


def test_several_studies_side_by_side(monkeypatch, edge_storage):
    app = _run(monkeypatch, edge_storage)
    app.multiselect(key="studies").set_value(["with_presets", "with_latency"]).run()
    assert not app.exception
    spec = _chart(app, "pareto")
    assert sorted(t["meta"]["study"] for t in _front_traces(spec)) == ["with_latency", "with_presets"]
    assert any((t.get("meta") or {}).get("role") == "presets" for t in spec["data"])
    assert any("Search vs hand design" in m.value for m in app.markdown)
    # Latency axis: the study without latency is named in a message, the other is drawn on its device.
    app.radio(key="x_axis").set_value("latency (ms)").run()
    assert not app.exception
    assert any("No latency measured in with_presets" in i.value for i in app.info)
    spec = _chart(app, "pareto")
    assert spec["layout"]["xaxis"]["title"]["text"] == "latency (ms, on loopback-cpu)"
    assert [t["meta"]["study"] for t in _front_traces(spec)] == ["with_latency"]


def test_latency_axis_without_any_latency_falls_back(monkeypatch, edge_storage):
    app = _run(monkeypatch, edge_storage)
    app.multiselect(key="studies").set_value(["with_presets"]).run()
    app.radio(key="x_axis").set_value("latency (ms)").run()
    assert not app.exception
    assert any("Showing MFLOPs instead" in i.value for i in app.info)
    assert _chart(app, "pareto")["layout"]["xaxis"]["title"]["text"].startswith("MFLOPs")


def test_empty_study_gives_a_message(monkeypatch, edge_storage):
    app = _run(monkeypatch, edge_storage)
    app.multiselect(key="studies").set_value(["empty"]).run()
    assert not app.exception and not app.error
    assert any("No completed trial yet in empty" in i.value for i in app.info)
    assert not app.get("plotly_chart")


@pytest.mark.parametrize("problem", ["missing", "corrupted", "no study"])
def test_storage_problems_give_a_message(monkeypatch, tmp_path, problem):
    path = tmp_path / "runs.db"
    if problem == "corrupted":
        path.write_bytes(b"\x00garbage, not SQLite\x00" * 200)
    elif problem == "no study":
        import optuna

        optuna.storages.RDBStorage(f"sqlite:///{path}")  # a valid storage without studies
    app = _run(monkeypatch, path)
    messages = [e.value for e in app.error] + [i.value for i in app.info]
    expected = {"missing": "no study storage at", "corrupted": "not a readable study storage", "no study": "holds no study yet"}
    assert any(expected[problem] in m for m in messages), messages
    if problem == "corrupted":
        assert path.read_bytes().startswith(b"\x00garbage")  # nothing stored was touched


def test_proxy_study_learning_curve_and_edf(monkeypatch, proxy_storage):
    app = _run(monkeypatch, proxy_storage.path)
    assert not app.error
    data = load_study_data(str(proxy_storage.path), proxy_storage.study)
    assert data.quality == "accuracy"
    shown = app.selectbox(key="detail_trial").value
    record = next(r for r in data.records if r.number == shown)
    curve = _chart(app, "learning_curve")["data"][0]
    assert len(record.learning_curve) == 2
    assert curve["y"] == pytest.approx([100 * v for v in record.learning_curve])
    edf = _chart(app, "edf")["data"]
    searched = [r for r in data.completed if not r.preset]
    assert sum(len(t["x"]) for t in edf) == len(searched)


@pytest.mark.parametrize("actions", [None, "off", "yes"])
def test_read_only_page_has_no_export_button_and_a_fixed_storage(monkeypatch, search_storage, edge_storage, actions):
    """Served to the network without --allow-remote-actions (or with the variable unset or
    unknown): the command is shown, nothing runs, and the storage is the one given at start,
    even when the session says otherwise (as a hand-made websocket message could)."""
    app = _run(monkeypatch, search_storage.path, actions=actions, state={"storage": str(edge_storage)})
    field = app.text_input(key="storage")
    assert field.disabled and field.value == str(search_storage.path)
    assert app.multiselect(key="studies").value == [search_storage.study]  # not edge.db's studies
    assert any(READ_ONLY_NOTE in c.value for c in app.sidebar.caption)
    data = load_study_data(str(search_storage.path), search_storage.study)
    trial = study_front(data)[-1]
    app.selectbox(key="detail_trial").set_value(trial.number).run()
    assert not app.exception
    assert any(c.value.startswith(f"nas export --storage {search_storage.path} --study {data.name} --trial {trial.number}")
               for c in app.code)
    assert not [b for b in app.button if b.key and b.key.startswith("export-")]
    assert any("this dashboard is read-only" in c.value for c in app.caption)


def test_actions_on_have_the_export_button_and_an_open_storage(monkeypatch, search_storage, edge_storage):
    app = _run(monkeypatch, search_storage.path, actions="on")
    field = app.text_input(key="storage")
    assert not field.disabled and field.value == str(search_storage.path)
    data = load_study_data(str(search_storage.path), search_storage.study)
    trial = study_front(data)[-1]
    app.selectbox(key="detail_trial").set_value(trial.number).run()
    (button,) = [b for b in app.button if b.key == f"export-{data.name}-{trial.number}"]
    assert button.label == "Run nas export" and not button.disabled
    assert not any(READ_ONLY_NOTE in c.value for c in app.sidebar.caption)
    field.set_value(str(edge_storage)).run()  # the person at the machine may open another storage
    assert not app.exception
    assert set(app.multiselect(key="studies").options) == {"with_presets", "with_latency", "empty"}


@pytest.mark.slow
def test_export_button_runs_nas_export(monkeypatch, tmp_path, search_storage):
    app = _run(monkeypatch, search_storage.path, actions="on")
    data = load_study_data(str(search_storage.path), search_storage.study)
    trial = study_front(data)[-1]
    app.selectbox(key="detail_trial").set_value(trial.number).run()
    out = tmp_path / "exported"
    app.text_input(key=f"out-{data.name}-{trial.number}").set_value(str(out)).run()
    app.radio(key=f"weights-{data.name}-{trial.number}").set_value("untrained").run()
    app.button(key=f"export-{data.name}-{trial.number}").click().run(timeout=600)
    assert not app.exception
    assert app.success, [e.value for e in app.error]
    assert any(p.suffix == ".onnx" for p in out.iterdir()), list(out.iterdir())


def test_dashboard_and_cli_show_the_same_front_when_configs_are_re_proposed(monkeypatch, tmp_path):
    """Regression: the dashboard kept re-proposed duplicates on its front ("front of 11") where
    `nas runs show` left them out (7). A 4-config space makes the sampler re-propose configs."""
    from nas.records import load_records, study_info
    from nas.results import study_front as results_front
    from nas.storage import load_study, open_storage
    from tests.conftest import run_nas

    space = tmp_path / "space.yaml"
    space.write_text("groups: [3, 8]\nbottleneck_ratios: [0.25]\nstage_depths: [[1, 2], [2, 2], [1, 1]]\nstem_channels: [24]\n")
    db = tmp_path / "dups.db"
    searched = run_nas("search", "--budget", "40M", "--n-trials", "12", "--evaluator", "zero-cost", "--no-presets",
                       "--space", str(space), "--seed", "0", "--workers", "0", "--storage", str(db), "--study", "dups", "-q")
    assert searched.returncode == 0, searched.stderr
    shown = run_nas("runs", "show", "dups", "--storage", str(db), "--json")
    assert shown.returncode == 0, shown.stderr
    cli_front = json.loads(shown.stdout)["front"]

    study = load_study(open_storage(str(db), create=False), "dups")
    records, info = load_records(study), study_info(study)
    assert any(r.duplicate for r in records), "the space is small enough that configs are re-proposed"
    assert len(results_front(records, info, with_duplicates=True)) > len(cli_front), "duplicates would change the count"

    app = _run(monkeypatch, db)
    assert any(f"front of {len(cli_front)} ·" in caption.value for caption in app.caption), [c.value for c in app.caption]
    (front,) = _front_traces(_chart(app, "pareto"))
    assert sorted(number for _, number in front["customdata"]) == cli_front


def test_a_raced_study_shows_its_final_stage(monkeypatch, tmp_path, proxy_storage):
    """After `nas final`, the page shows the verdict, its fidelity and each finalist's search
    score against its final accuracy (with the seed spread as error bars)."""
    import shutil

    from nas.records import FINAL_ANSWER, study_info
    from tests.conftest import run_nas

    db = tmp_path / "raced.db"
    shutil.copy(proxy_storage.path, db)
    raced = run_nas("final", "--storage", str(db), "--study", proxy_storage.study, "--epochs", "1", "--train-size", "300",
                    "--batch-size", "50", "--seeds", "2", "-k", "2", "--quiet")
    assert raced.returncode == 0, raced.stderr
    app = _run(monkeypatch, db)
    assert "Final stage" in [h.value for h in app.subheader]
    answer = study_info(load_study_data(str(db), proxy_storage.study).study).attrs[FINAL_ANSWER]
    assert any(answer["verdict"] in m.value for m in app.markdown)
    assert any("selection split (2000 images" in c.value for c in app.caption)
    spec = _chart(app, f"final-{proxy_storage.study}")
    assert len(spec["data"]) == len(answer["finalists"])
    means = sorted(round(t["y"][0], 6) for t in spec["data"])
    assert means == sorted(round(100 * row["mean"], 6) for row in answer["finalists"])
    assert all(t["error_y"]["visible"] for t in spec["data"])


def test_a_study_without_a_final_stage_has_no_such_section(monkeypatch, proxy_storage):
    app = _run(monkeypatch, proxy_storage.path)
    assert "Final stage" not in [h.value for h in app.subheader]



def _int8_study(path: Path) -> None:
    """As `nas search --device local --lut T --precision int8` (proxy evaluator) leaves a study:
    int8 latencies predicted per trial, int8 accuracy beside float32, and trial 0 (a front
    member) measured after the search, in int8 and float32."""
    import optuna

    from nas import records as R
    from shufflenet_core import ShuffleNetConfig, complexity

    study = optuna.create_study(study_name="int8", storage=f"sqlite:///{path}", directions=["maximize", "minimize"])
    study.set_user_attr(R.BUDGET_MACS, 140_000_000)
    study.set_user_attr(R.OBJECTIVES, ["accuracy", "mflops"])
    study.set_user_attr(R.LATENCY_RUNTIME, "onnxruntime")
    study.set_user_attr(R.LATENCY_PRECISION, "int8")
    for number, (groups, width) in enumerate(((3, 0.5), (8, 0.5), (3, 1.0), (8, 1.0))):
        config = ShuffleNetConfig.from_width(groups, width)
        cost = complexity(config)
        accuracy = 0.8 + 0.01 * number
        predicted = cost.mflops / 50
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, cost.mflops], constraints={"flops": cost.mflops - 140},
            user_attrs={R.CONFIG: config.to_dict(), R.MACS: cost.macs, R.PARAMS: cost.params, R.ACCURACY: accuracy,
                        R.ACCURACY_INT8: accuracy - (0.05 if groups == 8 else 0.01), R.INT8_AGREEMENT: 0.97,
                        R.LATENCY_MS: predicted, R.LATENCY_SOURCE: "predicted",
                        R.LATENCIES: {"onnxruntime/int8": {"median_ms": predicted, "source": "predicted"}}}))
    study.set_user_attr(f"{R.FRONT_LATENCY_PREFIX}0", {
        "median_ms": 1.5, "p10_ms": 1.4, "p90_ms": 1.6, "predicted_ms": 0.7, "runtime": "onnxruntime",
        "precision": "int8", "device": {"name": "loopback-cpu"}, "fp32_ms": 1.2})


def test_int8_study_offers_each_latency_form_the_int8_front_and_a_side_by_side_detail(monkeypatch, tmp_path):
    path = tmp_path / "int8.db"
    _int8_study(path)
    app = _run(monkeypatch, path)
    options = app.radio(key="x_axis").options
    assert options == ["MFLOPs", "latency (ms)", "latency, onnxruntime fp32 (ms)", "parameters (M)"]
    # float32 latency is known for trial 0 only (measured after the search): the axis draws just it.
    app.radio(key="x_axis").set_value("latency, onnxruntime fp32 (ms)").run()
    assert not app.exception
    spec = _chart(app, "pareto")
    assert spec["layout"]["xaxis"]["title"]["text"] == "latency (ms, onnxruntime fp32, on loopback-cpu)"
    (front,) = _front_traces(spec)
    assert front["x"] == [1.2] and [tuple(c) for c in front["customdata"]] == [("int8", 0)]
    # The study's own axis: trial 0 at its measured 1.5 ms, the others at their predictions.
    app.radio(key="x_axis").set_value("latency (ms)").run()
    points = {tuple(c)[1]: x for t in _chart(app, "pareto")["data"] if t.get("customdata")
              for c, x in zip(t["customdata"], t["x"], strict=True)}
    assert points[0] == 1.5
    # y: int8 accuracy; the g8 configs lose more, which moves the front.
    app.radio(key="x_axis").set_value("MFLOPs").run()
    app.toggle(key="int8_y").set_value(True).run()
    assert not app.exception
    spec = _chart(app, "pareto")
    assert spec["layout"]["yaxis"]["title"]["text"] == "int8 accuracy (%)"
    data = load_study_data(str(path), "int8")
    (front,) = _front_traces(spec)
    expected = study_front(data, "mflops", "accuracy_int8")
    assert [tuple(c)[1] for c in front["customdata"]] == [r.number for r in expected]
    assert front["y"] == pytest.approx([100 * r.attrs["accuracy_int8"] for r in expected])
    # Trial detail: float32 and int8 side by side, accuracy and latency (with where each came from).
    app.selectbox(key="detail_trial").set_value(0).run()
    assert not app.exception
    (table,) = app.dataframe
    rows = table.value.to_dict("records")
    assert [row["precision"] for row in rows] == ["fp32", "int8"]
    assert rows[0]["accuracy (%)"] == pytest.approx(80.0) and rows[1]["accuracy (%)"] == pytest.approx(79.0)
    assert rows[0]["onnxruntime ms"] == "1.20 (measured)" and rows[1]["onnxruntime ms"] == "1.50 (measured)"
    assert rows[1]["same class as fp32 (%)"] == pytest.approx(97.0)
    assert "int8 79.00% (-1.00)" in app.metric[0].delta

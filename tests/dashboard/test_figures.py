"""The dashboard's figures, built from real stored studies without Streamlit."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from dashboard import actions, figures
from dashboard.data import LoadError, device_name, list_studies, load_study_data
from nas.analysis import front_records, hypervolume, reference_point


def _traces(figure, role):
    return [trace for trace in figure.data if (trace.meta or {}).get("role") == role]


def test_pareto_figure_draws_the_package_front(edge_storage):
    data = load_study_data(str(edge_storage), "with_presets")
    figure = figures.pareto_figure([data])
    expected = front_records(data.records)
    (front,) = _traces(figure, "front")
    assert [list(c) for c in front.customdata] == [[data.name, r.number] for r in expected]
    assert list(front.x) == pytest.approx([r.mflops for r in expected])
    assert list(front.y) == pytest.approx([100 * r.accuracy for r in expected])
    (presets,) = _traces(figure, "presets")
    assert list(presets.text) == ["1.0x_g3"]
    drawn = sum(len(t.x) for t in figure.data)
    # Every trial once, the front again on top; untrained over-budget trials on their strip.
    assert drawn == len(data.completed) + len(expected) + len(data.untrained)
    (untrained,) = _traces(figure, "untrained")
    assert len(untrained.x) == len(data.untrained) == 2 and untrained.yaxis == "y2"
    assert figure.layout.xaxis.anchor == "y2" and "over budget: not trained" in untrained.hovertext[0]
    infeasible = _traces(figure, "infeasible")
    assert sum(len(t.x) for t in infeasible) == sum(not r.feasible for r in data.completed if not r.preset)
    # Hover text carries the config.
    assert "channels" in front.hovertext[0] and "g=" in front.hovertext[0]


def test_zero_cost_study_is_drawn_by_its_score(search_storage):
    data = load_study_data(str(search_storage.path), search_storage.study)
    assert data.quality == "score" and data.info.objectives[0] == "synflow"
    figure = figures.pareto_figure([data])
    assert figure.layout.yaxis.title.text == "synflow (zero-cost score)"
    (front,) = _traces(figure, "front")
    expected = front_records(data.records, ("score", "mflops"))
    assert expected and [c[1] for c in front.customdata] == [r.number for r in expected]
    assert list(front.y) == pytest.approx([r.attrs["score"] for r in expected])
    (presets,) = _traces(figure, "presets")
    assert sorted(presets.text) == ["0.5x_g1", "0.5x_g2", "0.5x_g3", "0.5x_g4"]
    with pytest.raises(ValueError, match="scored differently"):
        trained = dataclasses.replace(data, info=dataclasses.replace(data.info, objectives=("accuracy", "mflops")))
        figures.pareto_figure([data, trained])


def test_pareto_figure_budget_lines(edge_storage):
    data = load_study_data(str(edge_storage), "with_presets")
    figure = figures.pareto_figure([data])
    lines = {shape.x0 for shape in figure.layout.shapes}
    assert 140.0 in lines  # the study's own budget (and the paper's 1x level)
    labels = [a.text for a in figure.layout.annotations]
    assert any("with_presets budget 140M" in text for text in labels)
    shown = [r.mflops for r in data.completed + data.untrained]
    for paper in (40.0, 524.0):
        assert (paper in lines) == (min(shown) / 1.5 <= paper <= max(shown) * 1.5)


def test_pareto_figure_axes_and_bad_axis(edge_storage):
    data = load_study_data(str(edge_storage), "with_latency")
    assert device_name(data) == "loopback-cpu"
    figure = figures.pareto_figure([data], "latency_ms", device="loopback-cpu", log_x=True)
    assert figure.layout.xaxis.title.text == "latency (ms, on loopback-cpu)"
    assert figure.layout.xaxis.type == "log"
    (front,) = _traces(figure, "front")
    assert list(front.x) == pytest.approx([r.latency_ms for r in front_records(data.records, ("accuracy", "latency_ms"))])
    assert figures.pareto_figure([data], "mparams").layout.xaxis.title.text.startswith("parameters")
    with pytest.raises(ValueError, match="x axis"):
        figures.pareto_figure([data], "energy")


def test_design_space_figures(edge_storage):
    studies = [load_study_data(str(edge_storage), name) for name in ("with_presets", "with_latency")]
    knobs = figures.knob_figure(studies)
    assert [a.text for a in knobs.layout.annotations] == list(figures.DESIGN_KNOBS.values())
    searched = [r for d in studies for r in d.completed if not r.preset]
    assert sum(len(t.x) for t in knobs.data) == 4 * len(searched)
    edf = figures.edf_figure(studies)
    assert all(t.name.split(":")[0] in ("with_presets", "with_latency") for t in edf.data)
    assert all(t.y[-1] == 1.0 for t in edf.data)
    assert sum(len(t.x) for t in edf.data) == len(searched)


def test_hypervolume_figure_ends_at_the_front_hypervolume(edge_storage):
    data = load_study_data(str(edge_storage), "with_presets")
    reference = reference_point(data.records, limits={"mflops": 140.0})
    figure = figures.hypervolume_figure([data], reference)
    (curve,) = figure.data
    front = front_records(data.records)
    points = [[r.accuracy, r.mflops] for r in front]
    assert curve.y[-1] == pytest.approx(hypervolume(points, reference, ["maximize", "minimize"]))
    assert list(curve.y) == sorted(curve.y)  # never decreases
    assert list(curve.x) == [r.number for r in data.records]


def test_learning_curve_and_importances(edge_storage):
    data = load_study_data(str(edge_storage), "with_presets")
    record = data.completed[0]
    curve = figures.learning_curve_figure(record)
    assert list(curve.data[0].y) == pytest.approx([100 * v for v in record.learning_curve])
    values, message = actions.param_importances(data.study)
    assert message is None and set(values) == {"groups", "width"}
    assert sum(values.values()) == pytest.approx(1.0)
    empty = load_study_data(str(edge_storage), "empty")
    values, message = actions.param_importances(empty.study)
    assert values is None and "at least 2 evaluated trials" in message


def test_load_errors_are_messages(tmp_path, edge_storage):
    assert list_studies(str(edge_storage)) == ["with_presets", "with_latency", "empty"]
    with pytest.raises(LoadError, match="no study storage"):
        list_studies(str(tmp_path / "missing.db"))
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(LoadError, match="not a readable study storage"):
        list_studies(str(broken))
    with pytest.raises(LoadError, match="no study named"):
        load_study_data(str(edge_storage), "nope")


def test_export_command_is_argv_and_quoted():
    argv = actions.export_command("/tmp/a b.db", "my study", 3, "out dir")
    assert argv == ["nas", "export", "--storage", "/tmp/a b.db", "--study", "my study", "--trial", "3", "--out", "out dir"]
    assert actions.shell_line(argv) == "nas export --storage '/tmp/a b.db' --study 'my study' --trial 3 --out 'out dir'"
    assert actions.export_command("s.db", "x", 1, "o", weights="untrained")[-1] == "--untrained"
    assert actions.export_command("s.db", "x", 1, "o", weights="train", train_epochs=5)[-2:] == ["--train-epochs", "5"]
    with pytest.raises(ValueError, match="weights"):
        actions.export_command("s.db", "x", 1, "o", weights="best")


def test_figure_files(edge_storage):
    figure = figures.pareto_figure([load_study_data(str(edge_storage), "with_presets")])
    html = actions.figure_html(figure)
    assert "<html>" in html[:100] and "Plotly.newPlot" in html and "Pareto front" in html
    assert "<script src=\"https://cdn" not in html and len(html) > 1_000_000  # plotly.js inlined: opens offline
    if not shutil.which("chromium"):
        pytest.skip("PNG export needs Debian's chromium (scripts/system-deps.sh installs it)")
    png = actions.figure_png(figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def _page_not_ready_first(figure, monkeypatch, failures):
    """kaleido's page-not-ready race, forced: its own error class and answer, then the real draw.

    The race itself shows only under load (1 in 15 with six busy processes on 2 cores), too rarely
    for a test to wait on.
    """
    from kaleido.errors import JavascriptError

    real = figure.to_image
    calls = []

    def to_image(*args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise JavascriptError("{'className': 'ReferenceError', 'description': "
                                  "'ReferenceError: kaleido_scopes is not defined'}")
        return real(*args, **kwargs)

    monkeypatch.setattr(figure, "to_image", to_image)
    return calls


def test_figure_png_draws_again_when_kaleidos_page_was_not_ready(edge_storage, monkeypatch):
    if not shutil.which("chromium"):
        pytest.skip("PNG export needs Debian's chromium (scripts/system-deps.sh installs it)")
    figure = figures.pareto_figure([load_study_data(str(edge_storage), "with_presets")])
    calls = _page_not_ready_first(figure, monkeypatch, failures=actions.PNG_ATTEMPTS - 1)
    assert actions.figure_png(figure)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(calls) == actions.PNG_ATTEMPTS


def test_figure_png_gives_up_after_its_attempts_and_on_other_errors(edge_storage, monkeypatch):
    figure = figures.pareto_figure([load_study_data(str(edge_storage), "with_presets")])
    calls = _page_not_ready_first(figure, monkeypatch, failures=actions.PNG_ATTEMPTS)
    with pytest.raises(RuntimeError, match="kaleido_scopes"):
        actions.figure_png(figure)
    assert len(calls) == actions.PNG_ATTEMPTS

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Chromium not found")

    calls.clear()
    monkeypatch.setattr(figure, "to_image", broken)
    with pytest.raises(RuntimeError, match="Chromium"):
        actions.figure_png(figure)
    assert len(calls) == 1

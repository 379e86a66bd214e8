"""The page's sections, each a function that renders study data with Streamlit.

Numbers come from :mod:`nas.analysis`, figures from :mod:`dashboard.figures`; this module only
lays them out and wires the widgets.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import streamlit as st

from nas.analysis import dominates, objective_value, reference_point
from nas.records import (
    ACCELERATOR,
    ACCURACY_INT8,
    INT8_AGREEMENT,
    LATENCIES,
    LATENCY_DEVICE,
    LATENCY_PREDICTED_MS,
    LATENCY_SOURCE,
    SKIPPED,
    WEIGHTS_PATH,
    TrialRecord,
    latency_axis,
    latency_key,
)
from nas.results import final_answer, study_front
from nas.storage import resolve_storage_url

from . import actions, figures
from .data import StudyData, device_name

__all__ = [
    "render_design_space", "render_final_stage", "render_pareto", "render_summary", "render_trial_detail", "show_figure",
]

_X_LABELS = {"MFLOPs": "mflops", "latency (ms)": "latency_ms", "parameters (M)": "mparams"}
_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@st.cache_resource
def _png_possible() -> bool:
    """kaleido needs a Chrome or Chromium on this machine to draw PNGs."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return any(shutil.which(name) for name in _CHROME_NAMES)


def show_figure(figure, name: str, key: str, **chart_kwargs):  # noqa: ANN001, ANN201 - plotly / streamlit types
    """Draw a figure with HTML (always) and PNG (when kaleido can) download buttons."""
    event = st.plotly_chart(figure, key=key, **chart_kwargs)
    left, right, _ = st.columns([1, 1, 6])
    left.download_button("HTML", data=lambda: actions.figure_html(figure), file_name=f"{name}.html",
                         mime="text/html", key=f"{key}-html", on_click="ignore", icon=":material/download:")
    if _png_possible():
        right.download_button("PNG", data=lambda: actions.figure_png(figure), file_name=f"{name}.png",
                              mime="image/png", key=f"{key}-png", on_click="ignore", icon=":material/download:")
    else:
        right.caption("PNG needs Chromium (apt-get install chromium)")
    return event


def _point(record: TrialRecord, axes: Sequence[str]) -> list[float] | None:
    """The record's values on ``axes``; None when it lacks one of them."""
    values = [objective_value(record, name) for name in axes]
    return None if any(v is None for v in values) else [float(v) for v in values if v is not None]


def render_summary(studies: Sequence[StudyData]) -> None:
    columns = st.columns(len(studies))
    for column, data in zip(columns, studies, strict=True):
        complete = data.completed
        front = study_front(data.records, data.info)  # the front `nas search` and `nas runs show` print
        budget = data.info.budget_label or (f"{data.budget_mflops:g}M" if data.budget_mflops else "none")
        column.markdown(f"**{data.name}**")
        untrained = f" · {len(data.untrained)} over budget, not trained" if data.untrained else ""
        column.caption(
            f"{len(complete)} of {len(data.records)} trials complete{untrained} · {sum(r.feasible for r in complete)} "
            f"feasible · front of {len(front)} · budget {budget} · y: {data.quality_label}"
        )


def _remember_selection(event) -> None:  # noqa: ANN001 - streamlit PlotlyState
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else []
    if not points and event is not None and hasattr(event, "selection"):
        points = event.selection.get("points", [])
    chosen = next((p.get("customdata") for p in points if p.get("customdata")), None)
    if chosen and chosen != st.session_state.get("_last_selection"):
        st.session_state["_last_selection"] = chosen
        st.session_state["detail_study"], st.session_state["detail_trial"] = chosen[0], int(chosen[1])


def _x_choices(studies: Sequence[StudyData]) -> dict[str, str]:
    """MFLOPs, latency (each study's own runtime and precision), then every other runtime/precision
    some trial has a latency in (e.g. float32 beside an int8 search's front), parameters."""
    own = {latency_key(d.info.latency_runtime, d.info.latency_precision) for d in studies}
    others = [key for key in dict.fromkeys(key for d in studies for key in d.latency_keys) if key not in own]
    variants = {f"latency, {key.replace('/', ' ')} (ms)": latency_axis(key) for key in others}
    return {"MFLOPs": "mflops", "latency (ms)": "latency_ms", **variants, "parameters (M)": "mparams"}


def render_pareto(studies: Sequence[StudyData]) -> None:
    st.subheader("Pareto front")
    left, middle, right = st.columns([4, 1, 1])
    choices = _x_choices(studies)
    axis_label = left.radio("x axis", list(choices), horizontal=True, key="x_axis")
    int8 = middle.toggle("int8 accuracy", key="int8_y", disabled=not any(d.has_int8_accuracy for d in studies),
                         help="y: each trial's accuracy after int8 post-training quantization "
                              "(nas search --precision int8)")
    log_x = right.toggle("log x", key="log_x")
    x_axis = choices.get(axis_label or "", "mflops")
    shown = list(studies)
    if x_axis.startswith("latency_ms"):
        without = [d.name for d in studies if not any(objective_value(r, x_axis) is not None for r in d.completed)]
        shown = [d for d in studies if d.name not in without]
        if without:
            tail = "Showing MFLOPs instead." if not shown else "They are left out of this view."
            st.info(f"No latency measured in {', '.join(without)} (the search ran without a latency "
                    f"objective; pass a latency device to `nas search`). {tail}")
        if not shown:
            x_axis, shown = "mflops", list(studies)
    device = next((name for name in (device_name(d) for d in shown) if name), None)
    figure = figures.pareto_figure(shown, x_axis, device=device, log_x=log_x, int8=int8)
    event = show_figure(figure, "pareto_front", "pareto", on_select="rerun", selection_mode=("points",))
    st.caption("Diamonds joined by a line: the Pareto front of the feasible trials. x: over budget. "
               "Stars: the paper's presets under the same recipe. Click a point to open that trial below.")
    _remember_selection(event)
    _render_preset_verdicts(shown, x_axis)


def render_final_stage(studies: Sequence[StudyData]) -> None:
    """The final stage's race (``nas final`` / ``nas search --final``), where a study has one."""
    raced = [(data, answer) for data in studies if (answer := final_answer(data.info)) is not None]
    if not raced:
        return
    st.subheader("Final stage")
    for data, answer in raced:
        fidelity = answer["fidelity"]
        images = "all" if fidelity["train_size"] is None else fidelity["train_size"]
        st.markdown(f"**{data.name}**: {answer['verdict']}")
        st.caption(f"Fidelity: {fidelity['epochs']} epoch(s) on {images} training images of {fidelity['data']} at "
                   f"{fidelity['resolution']} px; accuracy on the selection split ({answer['selection_images']} images "
                   f"no search saw), {len(answer['final_seeds'])} fresh seeds; smallest reachable p "
                   f"{answer['smallest_reachable_p']:.2g}. Stars mark the answer, the dotted line the reference.")
        show_figure(figures.finalists_figure(answer), f"final_stage_{data.name}", f"final-{data.name}")


def _render_preset_verdicts(studies: Sequence[StudyData], x_axis: str) -> None:
    lines = []
    for data in studies:
        axes = (data.quality, x_axis)
        searched = [r for r in data.completed if not r.preset and r.feasible and objective_value(r, x_axis) is not None]
        for preset in (r for r in data.completed if r.preset):
            point = _point(preset, axes)
            if point is None:
                continue
            beaters = [r.number for r in searched
                       if (other := _point(r, axes)) is not None and dominates(other, point, ["maximize", "minimize"])]
            shown = ", ".join(f"#{n}" for n in beaters[:5]) + (f" and {len(beaters) - 5} more" if len(beaters) > 5 else "")
            verdict = f"beaten by searched trial(s) {shown}" if beaters else "not beaten by the search"
            lines.append(f"- {data.name}: **{preset.preset}** ({_quality_text(preset)}, "
                         f"{objective_value(preset, x_axis):.2f}): {verdict}")
    if lines:
        st.markdown("**Search vs hand design**\n" + "\n".join(lines))


def _quality_text(record: TrialRecord) -> str:
    if record.accuracy is not None:
        return f"{100 * record.accuracy:.2f}%"
    score = record.score
    return "-" if score is None else f"score {score:.4g}"


def _trial_label(record: TrialRecord) -> str:
    accuracy = "" if record.score is None else f", {_quality_text(record)}"
    mflops = "" if record.mflops is None else f", {record.mflops:.1f}M"
    return f"#{record.number} ({record.state.lower()}{accuracy}{mflops}{', ' + record.preset if record.preset else ''})"


def render_trial_detail(studies: Sequence[StudyData], storage: str | None, *, can_act: bool = False) -> None:
    """The chosen trial's numbers, config, curves and its `nas export` command; the button that
    runs the command is there only when ``can_act`` (the page may act on this machine)."""
    st.subheader("Trial detail")
    by_name = {d.name: d for d in studies}
    if st.session_state.get("detail_study") not in by_name:
        st.session_state["detail_study"] = studies[0].name
    data = by_name[st.selectbox("study", list(by_name), key="detail_study")]
    if not data.records:
        st.info(f"Study {data.name} has no trials yet.")
        return
    numbers = [r.number for r in data.records]
    if st.session_state.get("detail_trial") not in numbers:
        front = figures.study_front(data)
        st.session_state["detail_trial"] = front[-1].number if front else numbers[-1]
    by_number = {r.number: r for r in data.records}
    record = by_number[st.selectbox("trial", numbers, key="detail_trial", format_func=lambda n: _trial_label(by_number[n]))]
    _render_record(record, data, storage, can_act)


def _render_record(record: TrialRecord, data: StudyData, storage: str | None, can_act: bool) -> None:
    metrics = st.columns(5)
    int8 = record.attrs.get(ACCURACY_INT8)
    metrics[0].metric("accuracy" if data.quality == "accuracy" else "score", _quality_text(record).removeprefix("score "),
                      delta=None if int8 is None or record.accuracy is None else
                      f"int8 {100 * float(int8):.2f}% ({100 * (float(int8) - record.accuracy):+.2f})",
                      delta_color="off")
    metrics[1].metric("MFLOPs", "-" if record.mflops is None else f"{record.mflops:.2f}")
    metrics[2].metric("params (M)", "-" if record.params is None else f"{record.params / 1e6:.3f}")
    metrics[3].metric("latency (ms)", "-" if record.latency_ms is None else f"{record.latency_ms:.2f}")
    metrics[4].metric("feasible", "yes" if record.feasible else "no")
    skipped = record.attrs.get(SKIPPED)
    place = record.attrs.get(ACCELERATOR)
    st.caption(f"state {record.state}" + (f" · {skipped}" if skipped else "")
               + (f" · preset {record.preset}" if record.preset else "")
               + f" · {figures.config_summary(record.config)}"
               + (f" · trained on {place.get('device')} ({place.get('device_name')}), {place.get('train_precision')}, "
                  f"{place.get('layers')}" if isinstance(place, dict) else ""))
    left, right = st.columns(2)
    with left:
        st.markdown("**Config**")
        if record.config is None:
            st.info("This trial stored no config.")
        else:
            st.json(record.config.to_dict(), expanded=True)
    with right:
        if record.learning_curve:
            show_figure(figures.learning_curve_figure(record), f"learning_curve_{data.name}_{record.number}", "learning_curve")
        else:
            st.info("No learning curve stored for this trial (zero-cost evaluators do not train).")
        st.markdown("**float32 vs int8**")
        rows = _precision_rows(record)
        if rows:
            st.dataframe(rows, hide_index=True)
        st.markdown("**Latency**")
        if record.latency_ms is None:
            st.info("No latency measured for this trial.")
        else:
            st.write({"latency_ms": record.latency_ms, "source": record.attrs.get(LATENCY_SOURCE),
                      "predicted_ms": record.attrs.get(LATENCY_PREDICTED_MS), "device": record.attrs.get(LATENCY_DEVICE)})
    _render_export(record, data, storage, can_act)


def _precision_rows(record: TrialRecord) -> list[dict[str, object]]:
    """One row per precision: its accuracy (validation images) and latency in each runtime measured."""
    stored = record.attrs.get(LATENCIES) or {}
    accuracy = {"fp32": record.accuracy, "int8": record.attrs.get(ACCURACY_INT8)}
    rows = []
    for precision in ("fp32", "int8"):
        value = accuracy[precision]
        row: dict[str, object] = {"precision": precision,
                                  "accuracy (%)": None if value is None else round(100 * float(value), 2)}
        for key, latency in sorted(stored.items()):
            runtime, _, of = key.partition("/")
            if of == precision and isinstance(latency, dict):
                row[f"{runtime} ms"] = f"{float(latency['median_ms']):.2f} ({latency.get('source', '?')})"
        if len(row) > 2 or row["accuracy (%)"] is not None:
            rows.append(row)
    if precision_agreement := record.attrs.get(INT8_AGREEMENT):
        rows[-1]["same class as fp32 (%)"] = round(100 * float(precision_agreement), 2)
    return rows if any(row["precision"] == "int8" for row in rows) else []


def _render_export(record: TrialRecord, data: StudyData, storage: str | None, can_act: bool) -> None:
    st.markdown("**Export**")
    url = resolve_storage_url(storage)
    storage_arg = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
    key = f"{data.name}-{record.number}"
    kept = bool(record.attrs.get(WEIGHTS_PATH))
    left, middle, right = st.columns([3, 2, 1])
    out_dir = left.text_input("output folder", value=f"exports/{data.name}-trial{record.number}", key=f"out-{key}")
    choices = (["kept"] if kept else []) + ["untrained", "train"]
    labels = {"kept": "kept by the search", "untrained": "untrained (architecture only)", "train": "train now"}
    weights = middle.radio("weights", choices, format_func=labels.get, key=f"weights-{key}", horizontal=True)
    epochs = int(right.number_input("epochs", min_value=1, max_value=1000, value=1, key=f"epochs-{key}",
                                    disabled=weights != "train"))
    command = actions.export_command(storage_arg, data.name, record.number, out_dir, weights=weights, train_epochs=epochs)
    st.code(actions.shell_line(command), language="bash")
    if not can_act:
        st.caption("Run this command on the machine that holds the storage: this dashboard is read-only.")
        return
    if st.button("Run nas export", key=f"export-{key}", disabled=record.state != "COMPLETE"):
        with st.spinner("exporting..."):
            ok, output = actions.run_export(command)
        (st.success if ok else st.error)(output or ("exported" if ok else "nas export failed"))


def render_design_space(studies: Sequence[StudyData]) -> None:
    st.subheader("Design space")
    knobs, edf, importance, convergence = st.tabs(["quality vs knobs", "error EDF", "parameter importances", "convergence"])
    with knobs:
        show_figure(figures.knob_figure(studies), "quality_vs_knobs", "knobs")
    with edf:
        trained = [d for d in studies if d.quality == "accuracy"]
        if trained:
            show_figure(figures.edf_figure(trained), "error_edf", "edf")
        else:
            st.info("The error EDF needs trained accuracy; these studies were scored by a zero-cost proxy "
                    "(run `nas search --evaluator proxy`).")
    with importance:
        for data in studies:
            values, message = actions.param_importances(data.study)
            if values is None:
                st.info(f"{data.name}: {message}")
            else:
                show_figure(figures.importance_figure(values, f"Parameter importances for {data.quality}: {data.name}"),
                            f"importances_{data.name}", f"importance-{data.name}")
    with convergence:
        budgets = [d.budget_mflops for d in studies if d.budget_mflops is not None]
        limits = {"mflops": max(budgets)} if budgets and len(budgets) == len(studies) else None
        records = [r for d in studies for r in d.records]
        reference = reference_point(records, (studies[0].quality, "mflops"), limits=limits)
        show_figure(figures.hypervolume_figure(studies, reference), "hypervolume", "hypervolume")

"""The dashboard's figures: pure functions from study data to plotly figures.

No Streamlit here, so tests (and notebooks) can build every figure the page shows. The numbers
come from :mod:`nas.analysis`; this module only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from nas import results
from nas.analysis import (
    PAPER_BUDGETS_MFLOPS,
    error_edf_by,
    hypervolume_history,
    knob_value,
    objective_value,
)
from nas.records import LATENCY_AXIS_PREFIX, SKIPPED, TrialRecord, latency_axis, latency_key
from shufflenet_core import ShuffleNetConfig

from .data import StudyData

__all__ = [
    "AXES",
    "axis_title",
    "DESIGN_KNOBS",
    "config_summary",
    "edf_figure",
    "empty_figure",
    "finalists_figure",
    "hypervolume_figure",
    "importance_figure",
    "knob_figure",
    "learning_curve_figure",
    "pareto_figure",
    "study_front",
]

AXES: dict[str, str] = {"mflops": "MFLOPs (MACs at deployment size)", "latency_ms": "latency (ms)", "mparams": "parameters (M)"}
DESIGN_KNOBS: dict[str, str] = {
    "groups": "groups g",
    "width": "width (x paper's 1x)",
    "depth": "depth (units)",
    "bottleneck_ratio": "bottleneck ratio",
}
FRONT_ROLE = "front"
_PALETTE = qualitative.Plotly


def _color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


def config_summary(config: ShuffleNetConfig | None) -> str:
    """One line a person can read: g, stage channels, depths, stem, bottleneck ratio."""
    if config is None:
        return "no config"
    channels = "/".join(str(c) for c in config.stage_out_channels)
    depths = "/".join(str(d) for d in config.stage_depths)
    text =(
        f"g={config.groups}, channels {channels}, depths {depths}, stem {config.stem_channels}, ratio "
        f"{config.bottleneck_ratio:g}"
    )
    return text if config.channel_shuffle else text + ", no shuffle"


def _y(record: TrialRecord, quality: str) -> float | None:
    """The y value drawn: accuracy (float32 or int8) in %, or the raw zero-cost score."""
    value = objective_value(record, quality)
    return None if value is None else (100 * value if quality in ("accuracy", "accuracy_int8") else value)


def axis_title(x_axis: str) -> str:
    """``latency_ms:executorch/int8`` -> "latency (ms, executorch int8)"."""
    if x_axis.startswith(LATENCY_AXIS_PREFIX):
        return f"latency (ms, {x_axis[len(LATENCY_AXIS_PREFIX):].replace('/', ' ')})"
    return AXES[x_axis]


def _hover(record: TrialRecord) -> str:
    parts = [f"<b>{record.study} #{record.number}</b>" + (f" ({record.preset})" if record.preset else "")]
    if record.accuracy is not None:
        parts.append(f"accuracy {100 * record.accuracy:.2f}%")
    elif record.score is not None:
        parts.append(f"score {record.score:.4g}")
    else:
        parts.append(str(record.attrs.get(SKIPPED) or "not evaluated"))
    if record.mflops is not None:
        parts.append(f"{record.mflops:.1f} MFLOPs")
    if record.params is not None:
        parts.append(f"{record.params / 1e6:.3f} M params")
    if record.latency_ms is not None:
        parts.append(f"{record.latency_ms:.2f} ms")
    if not record.feasible:
        parts.append("over budget (infeasible)")
    parts.append(config_summary(record.config))
    return "<br>".join(parts)


def study_front(data: StudyData, x_axis: str = "mflops", quality: str = "score") -> list[TrialRecord]:
    """The front the figure joins: :func:`nas.results.study_front` over score and ``x_axis``
    (presets included: whether they sit on the front is the comparison; each architecture
    once). With MFLOPs on x it is the front ``nas search`` and ``nas runs show`` print."""
    return results.study_front(data.records, data.info, x_axis=x_axis, quality=quality)


def _scatter(records: Sequence[TrialRecord], x_axis: str, quality: str, **kwargs: object) -> go.Scatter:
    return go.Scatter(
        x=[objective_value(r, x_axis) for r in records],
        y=[_y(r, quality) for r in records],
        customdata=[[r.study, r.number] for r in records],
        hovertext=[_hover(r) for r in records],
        hoverinfo="text",
        **kwargs,
    )


def _budget_lines(figure: go.Figure, studies: Sequence[StudyData], x_axis: str, shown: Sequence[float]) -> None:
    lines: dict[float, str] = {}
    if x_axis == "mflops":
        low, high = (min(shown), max(shown)) if shown else (0.0, 0.0)
        for budget in PAPER_BUDGETS_MFLOPS:
            if shown and low / 1.5 <= budget <= high * 1.5:
                lines[budget] = f"paper {budget:g}M"
        for data in studies:
            if data.budget_mflops is not None:
                lines[data.budget_mflops] = f"{data.name} budget {data.info.budget_label or f'{data.budget_mflops:g}M'}"
    elif x_axis.startswith("latency_ms"):
        for data in studies:
            own_axis = latency_axis(latency_key(data.info.latency_runtime, data.info.latency_precision))
            if data.info.latency_budget_ms is not None and x_axis in ("latency_ms", own_axis):
                lines[data.info.latency_budget_ms] = f"{data.name} budget {data.info.latency_budget_ms:g} ms"
    for x, label in sorted(lines.items()):
        own = not label.startswith("paper")
        figure.add_vline(
            x=x, line_dash="dash" if own else "dot", line_color="firebrick" if own else "gray",
            annotation_text=label, annotation_position="top", annotation_font_size=10,
        )


def pareto_figure(
    studies: Sequence[StudyData], x_axis: str = "mflops", *, device: str | None = None, log_x: bool = False,
    int8: bool = False,
) -> go.Figure:
    """Quality against cost for every trial: feasible, infeasible (x), presets (stars) and the
    Pareto front joined by a line; over-budget trials the search did not train sit on a strip
    below the plot; dashed lines mark budgets. All studies must share one quality measure."""
    if x_axis not in AXES and not x_axis.startswith(LATENCY_AXIS_PREFIX):
        raise ValueError(f"x axis must be one of {', '.join(AXES)} or {LATENCY_AXIS_PREFIX}RUNTIME/PRECISION, "
                         f"got {x_axis!r}")
    if len({data.quality for data in studies}) > 1:
        raise ValueError("studies scored differently (accuracy vs a zero-cost score) cannot share one y axis")
    figure = go.Figure()
    shown: list[float] = []
    untrained_any = False
    for index, data in enumerate(studies):
        color, quality = _color(index), ("accuracy_int8" if int8 else data.quality)
        usable = [r for r in data.completed if objective_value(r, x_axis) is not None]
        searched = [r for r in usable if not r.preset]
        presets = [r for r in usable if r.preset]
        untrained = [r for r in data.untrained if objective_value(r, x_axis) is not None]
        front = study_front(data, x_axis, "accuracy_int8" if int8 else "score")
        shown += [objective_value(r, x_axis) for r in usable + untrained]  # type: ignore[misc]
        group = dict(legendgroup=data.name)

        def add(records: Sequence[TrialRecord], role: str, label: str, *, quality: str = quality, data: StudyData = data,
                group: dict = group, **style: object) -> None:  # the loop's values bound now, not looked up later
            if records or role == FRONT_ROLE:
                figure.add_trace(_scatter(records, x_axis, quality, name=f"{data.name}: {label}",
                                          meta={"role": role, "study": data.name}, **group, **style))

        add([r for r in searched if r.feasible], "trials", "trials", mode="markers",
            marker=dict(color=color, size=7, opacity=0.55))
        add([r for r in searched if not r.feasible], "infeasible", "over budget", mode="markers",
            marker=dict(color=color, size=8, symbol="x", opacity=0.7))
        add(presets, "presets", "paper presets", mode="markers+text", textposition="top center",
            text=[(r.preset or "").replace("shufflenet_v1_", "") for r in presets],
            marker=dict(color="gold", size=15, symbol="star", line=dict(color=color, width=2)))
        add(front, FRONT_ROLE, "Pareto front", mode="lines+markers", line=dict(color=color, width=2, shape="hv"),
            marker=dict(color=color, size=11, symbol="diamond", line=dict(color="black", width=1)))
        if untrained:
            untrained_any = True
            figure.add_trace(go.Scatter(
                x=[objective_value(r, x_axis) for r in untrained], y=[0] * len(untrained), yaxis="y2", mode="markers",
                name=f"{data.name}: over budget, not trained",
                marker=dict(color=color, size=8, symbol="x-thin-open", line=dict(width=2, color=color)),
                customdata=[[r.study, r.number] for r in untrained], hovertext=[_hover(r) for r in untrained],
                hoverinfo="text", meta={"role": "untrained", "study": data.name}, **group,
            ))
    _budget_lines(figure, studies, x_axis, shown)
    x_title = axis_title(x_axis)
    if x_axis.startswith("latency_ms") and device:
        x_title = x_title[:-1] + f", on {device})" if x_title.endswith(")") else x_title
    y_title = "int8 accuracy (%)" if int8 else (studies[0].quality_label if studies else "accuracy (%)")
    figure.update_layout(
        xaxis_title=x_title, yaxis_title=y_title, hovermode="closest", clickmode="event+select",
        legend=dict(orientation="h", yanchor="top", y=-0.16, x=0), margin=dict(t=60, b=60, l=60, r=20), height=560,
        title=f"{y_title.split(' (')[0].capitalize()} vs " + x_title.split(" (")[0],
    )
    if untrained_any:
        figure.update_layout(
            yaxis=dict(domain=[0.12, 1.0]),
            yaxis2=dict(domain=[0.0, 0.06], range=[-1, 1], showticklabels=False, showgrid=False, zeroline=False,
                        title=dict(text="not<br>trained", font=dict(size=9))),
            xaxis=dict(anchor="y2"),
        )
    if log_x:
        figure.update_xaxes(type="log")
    return figure


def knob_figure(studies: Sequence[StudyData]) -> go.Figure:
    """Quality against each design knob (searched trials; presets are not samples of the space)."""
    figure = make_subplots(rows=1, cols=len(DESIGN_KNOBS), shared_yaxes=True, subplot_titles=list(DESIGN_KNOBS.values()))
    for index, data in enumerate(studies):
        records = [r for r in data.completed if not r.preset]
        for column, knob in enumerate(DESIGN_KNOBS, start=1):
            pairs = [(knob_value(r, knob), r) for r in records]
            pairs = [(value, r) for value, r in pairs if value is not None]
            figure.add_trace(
                go.Scatter(
                    x=[value for value, _ in pairs], y=[_y(r, data.quality) for _, r in pairs],
                    mode="markers", name=data.name, legendgroup=data.name, showlegend=column == 1,
                    marker=dict(color=_color(index), size=7, opacity=0.6,
                                symbol=["circle" if r.feasible else "x" for _, r in pairs]),
                    customdata=[[r.study, r.number] for _, r in pairs],
                    hovertext=[_hover(r) for _, r in pairs], hoverinfo="text",
                ),
                row=1, col=column,
            )
    figure.update_yaxes(title_text=studies[0].quality_label if studies else "accuracy (%)", row=1, col=1)
    figure.update_xaxes(type="category", categoryorder="category ascending", row=1, col=1)
    figure.update_layout(title="Quality against each design knob", margin=dict(t=80, b=40, l=60, r=20))
    return figure


def edf_figure(studies: Sequence[StudyData], key: str = "groups") -> go.Figure:
    """Error EDF per group count (Radosavovic et al., 2020): a curve further left and higher
    means a better design space at this budget."""
    figure = go.Figure()
    dash_styles = ("solid", "dash", "dot", "dashdot")
    for study_index, data in enumerate(studies):
        curves = error_edf_by(data.records, key)
        for group_index, (group, curve) in enumerate(curves.items()):
            label = f"g={group} (n={len(curve.errors)})" if key == "groups" else f"{key}={group} (n={len(curve.errors)})"
            if len(studies) > 1:
                label = f"{data.name}: {label}"
            figure.add_trace(go.Scatter(
                x=list(curve.errors), y=list(curve.fractions), mode="lines+markers", line_shape="hv", name=label,
                line=dict(color=_color(group_index), dash=dash_styles[study_index % len(dash_styles)]),
                marker=dict(size=4),
            ))
    figure.update_layout(title="Error EDF per group count", xaxis_title="top-1 error (%)",
                         yaxis_title="cumulative fraction of models", yaxis_range=[0, 1.02],
                         margin=dict(t=60, b=40, l=60, r=20))
    return figure


def hypervolume_figure(studies: Sequence[StudyData], reference: Sequence[float]) -> go.Figure:
    """Hypervolume (quality x MFLOPs saved under the reference) after each trial: convergence."""
    figure = go.Figure()
    quality = studies[0].quality if studies else "accuracy"
    for index, data in enumerate(studies):
        history = hypervolume_history(data.records, reference, (data.quality, "mflops"))
        figure.add_trace(go.Scatter(
            x=[number for number, _ in history], y=[value for _, value in history], mode="lines+markers",
            line_shape="hv", name=data.name, line=dict(color=_color(index)), marker=dict(size=4),
        ))
    figure.update_layout(
        title=f"Hypervolume vs trial (reference: {quality} {reference[0]:.4g}, {reference[1]:.1f} MFLOPs)",
        xaxis_title="trial number", yaxis_title=f"hypervolume ({quality} x MFLOPs)", margin=dict(t=60, b=40, l=60, r=20),
    )
    return figure


def importance_figure(importances: Mapping[str, float], title: str) -> go.Figure:
    names = list(importances)[::-1]
    figure = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"))
    figure.update_layout(title=title, xaxis_title="importance (PED-ANOVA)", margin=dict(t=60, b=40, l=140, r=20))
    return figure


def learning_curve_figure(record: TrialRecord) -> go.Figure:
    curve = list(record.learning_curve)
    figure = go.Figure(go.Scatter(x=list(range(1, len(curve) + 1)), y=[100 * v for v in curve], mode="lines+markers"))
    figure.update_layout(title=f"Learning curve of {record.study} #{record.number}", xaxis_title="epoch",
                         yaxis_title="validation accuracy (%)", margin=dict(t=60, b=40, l=60, r=20))
    return figure


def finalists_figure(verdict: Mapping[str, Any]) -> go.Figure:
    """The final stage (``nas final``): each finalist's search score (x) against its mean
    accuracy on fresh seeds and the selection split (y, +- sd), the reference as a line."""
    rows = list(verdict["finalists"])
    reference = next(row for row in rows if row["gap"] is None)
    fidelity = verdict["fidelity"]
    figure = go.Figure()
    for row in rows:
        is_answer = row["label"] == verdict["answer_label"]
        x = None if row["proxy_score"] is None else 100 * float(row["proxy_score"])
        figure.add_trace(go.Scatter(
            x=[x], y=[100 * float(row["mean"])], mode="markers+text", name=row["label"], text=[row["label"]],
            textposition="top center",
            error_y=dict(type="data", array=[100 * float(row["sd"])], visible=True),
            marker=dict(size=14 if is_answer else 10, symbol="star" if is_answer else "circle"),
            hovertext=(f"{row['label']}<br>final {100 * row['mean']:.2f}% +- {100 * row['sd']:.2f} over "
                       f"{len(row['scores'])} seeds" + ("" if row["p_value"] is None else f"<br>p = {row['p_value']:.3g}")),
            hoverinfo="text",
        ))
    figure.add_hline(y=100 * float(reference["mean"]), line_dash="dot",
                     annotation_text=f"reference {reference['label']}", annotation_position="bottom right")
    figure.update_layout(
        title=(f"Final stage: {fidelity['epochs']} epoch(s) on "
               f"{'all' if fidelity['train_size'] is None else fidelity['train_size']} training images, "
               f"{len(verdict['final_seeds'])} fresh seeds"),
        xaxis_title="search score (%) (proxy, one run)", yaxis_title="final accuracy (%) on the selection split",
        showlegend=False, margin=dict(t=60, b=40, l=60, r=20),
    )
    return figure


def empty_figure(message: str) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure

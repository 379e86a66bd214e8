"""The front's latencies measured for real before the search reports them.

A search may predict each candidate's latency from a lookup table (lowering a model to
ExecuTorch takes ~20 s here, far too slow per candidate), but a prediction is within +-10% at
best: the configs the user is shown as the answer must have been timed on the device. After
the search, every front member whose latency was predicted is measured (in the study's runtime
and precision, and in float32 too when that is int8, so the dashboard can set them side by
side) and stored as a study attribute (:data:`nas.records.FRONT_LATENCY_PREFIX`);
:func:`nas.records.load_records` then reports the measured value, and a member the device
finds over the latency budget leaves the front, which is computed again, until every member
is measured or :data:`MAX_ROUNDS` is reached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas import records as R
from nas.engine.display import Display
from nas.engine.settings import SearchSettings
from nas.results import study_front

if TYPE_CHECKING:
    import optuna

__all__ = ["MAX_ROUNDS", "measure_front_latency"]

MAX_ROUNDS = 5
"""Rounds of measure-then-recompute; each round can only remove members found over budget."""


def measure_front_latency(study: optuna.Study, settings: SearchSettings, display: Display) -> int:
    """Measure the predicted members of ``study``'s front on the search's device; how many were measured.

    Nothing to do without a lookup table, or when the device is ``lut`` (nothing to measure on:
    then the front stays predicted and says so).
    """
    latency = settings.latency
    if latency is None or latency.lut_path is None:
        return 0
    evaluator = latency.evaluator()
    if evaluator.device is None or not evaluator.device.measures:
        return 0
    measured = 0
    for _ in range(MAX_ROUNDS):
        records = R.load_records(study)
        info = R.study_info(study)
        predicted = [record for record in study_front(records, info)
                     if record.config is not None and record.attrs.get(R.LATENCY_SOURCE) == "predicted"]
        if not predicted:
            break
        if measured == 0:
            display.note(f"measuring the front's {len(predicted)} predicted latencies on {latency.device} "
                         f"({latency.runtime} {latency.precision})")
        for record in predicted:
            assert record.config is not None and record.latency_ms is not None
            entry = _measure(evaluator, record.config, float(record.latency_ms))
            study.set_user_attr(f"{R.FRONT_LATENCY_PREFIX}{record.number}", entry)
            measured += 1
            error = (entry["predicted_ms"] - entry["median_ms"]) / entry["median_ms"]
            over = info.latency_budget_ms is not None and entry["median_ms"] > info.latency_budget_ms
            display.note(f"trial {record.number}: predicted {entry['predicted_ms']:.3f} ms, measured "
                         f"{entry['median_ms']:.3f} ms (table {error:+.0%})"
                         + (f", over the {info.latency_budget_ms:g} ms budget: off the front" if over else ""))
    return measured


def _measure(evaluator: Any, config: Any, predicted_ms: float) -> dict[str, Any]:
    result = evaluator.measure(config)
    entry = {"median_ms": result.median_ms, "p10_ms": result.p10_ms, "p90_ms": result.p90_ms,
             "predicted_ms": predicted_ms, "runtime": result.runtime, "precision": result.precision,
             "device": result.device}
    if evaluator.precision != "fp32":
        entry["fp32_ms"] = evaluator.measure(config, "fp32").median_ms
    return entry

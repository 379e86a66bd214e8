"""The model card of an exported model: one dict (written as JSON) and its Markdown rendering.

A card says what the model costs (MFLOPs, params), how good it is and how that was measured
(data, recipe, epochs), how fast it is and where that number comes from, and where the model
came from (storage, study, trial, seed, version, date). Pure functions: no torch, no storage.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nas import __version__
from nas import records as keys
from nas.records import StudyInfo, TrialRecord
from shufflenet_core import ShuffleNetConfig, complexity

if TYPE_CHECKING:
    from nas.export.bundle import ExportRequest, WeightsSource

__all__ = ["CARD_JSON", "CARD_MARKDOWN", "CARD_SCHEMA", "GENERATOR", "build_card", "files_written", "render_markdown"]

CARD_SCHEMA = "shufflenas.export.model_card/1"
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "model_card.md"
# Marks a card (and so its folder) as written by `nas export`: `nas export --force` replaces only such folders.
GENERATOR = "shufflenas nas export"
# Cards without "generator": release 0.1.0 wrote "shufflenas.model_card/1"; the development
# version after it (same version number) "shufflenas.export.model_card/1". Both say
# "exported_with": "shufflenas <version>" in their provenance.
_UNMARKED_SCHEMAS = ("shufflenas.model_card/1", "shufflenas.export.model_card/1")


def build_card(
    *,
    record: TrialRecord,
    info: StudyInfo,
    storage_url: str,
    config: ShuffleNetConfig,
    weights: WeightsSource,
    onnx: dict[str, Any] | None,
    files: Sequence[str],
    request: ExportRequest,
    onnx_int8: dict[str, Any] | None = None,
    deployed: dict[str, Any] | None = None,
    file_latency: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    executorch: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    from nas.storage import describe_storage

    cost = complexity(config)
    attrs = record.attrs
    return {
        "schema": CARD_SCHEMA,
        "generator": GENERATOR,
        "name": f"{info.name}-trial{record.number}",
        "architecture": {"family": "ShuffleNet v1", "short_name": config.short_name, "config": config.to_dict()},
        "complexity": {
            "mflops": round(cost.mflops, 6),
            "macs": cost.macs,
            "params": cost.params,
            "input_size": config.input_size,
            "convention": f"multiply-accumulates of conv and FC layers at {config.input_size}x{config.input_size}",
            "searched_macs": record.macs,
        },
        "weights": {
            "source": weights.kind,
            "description": weights.description,
            "path": weights.path,
            **({"training": weights.training} if weights.training else {}),
        },
        "accuracy": _accuracy_section(record, info, weights.kind),
        "latency": _latency_section(record),
        "files": {"list": list(files), "onnx": onnx, "onnx_int8": onnx_int8, "executorch": list(executorch),
                  "pytorch": _pytorch_section(files)},
        "deployed_accuracy": deployed,
        "file_latency": file_latency,
        "preprocessing": preprocessing,
        "provenance": {
            "storage": describe_storage(storage_url),
            "study": info.name,
            "trial": record.number,
            "selection": _selection_text(request),
            "final_stage": _final_stage(record, info),
            "seed": info.attrs.get(keys.SEED),
            "study_budget": info.budget_label or (None if info.budget_macs is None else f"{info.budget_macs} MACs"),
            "preset": record.preset,
            "searched_with": info.attrs.get(keys.SHUFFLENAS_VERSION),
            "exported_with": f"shufflenas {__version__}",
            "exported_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        },
        "trial_attrs": {k: v for k, v in attrs.items() if k not in (keys.CONFIG, keys.LEARNING_CURVE)},
    }


def files_written(card: Any) -> frozenset[str] | None:
    """The file names an export wrote into its folder, read from its card (a parsed
    ``model_card.json``): the card's file list plus the two card files. None when the card was
    not written by ``nas export`` (of this release, or of 0.1.0 before cards were marked) or its
    file list is not a list of plain file names.
    """
    if not isinstance(card, dict):
        return None
    if "generator" in card:
        if card["generator"] != GENERATOR:
            return None
    else:
        provenance = card.get("provenance")
        exported_with = provenance.get("exported_with") if isinstance(provenance, dict) else None
        if card.get("schema") not in _UNMARKED_SCHEMAS or not str(exported_with or "").startswith("shufflenas "):
            return None
    files = card.get("files")
    listed = files.get("list") if isinstance(files, dict) else None
    if not isinstance(listed, list) or not all(isinstance(name, str) and _plain_name(name) for name in listed):
        return None
    return frozenset([*listed, CARD_JSON, CARD_MARKDOWN])


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _accuracy_section(record: TrialRecord, info: StudyInfo, weights_kind: str) -> dict[str, Any] | None:
    if record.accuracy is None:
        return None
    attrs, spec = record.attrs, info.attrs.get(keys.EVALUATOR_SPEC)
    spec = spec if isinstance(spec, dict) else {}
    recipe = spec.get("recipe") if isinstance(spec.get("recipe"), dict) else None
    epochs = attrs.get(keys.EPOCHS)
    if epochs is None:
        epochs = (recipe or {}).get("epochs", spec.get("epochs"))
    applies = {
        "search": "the exported weights (one run of the search's proxy training)",
        "untrained": "the architecture only; the exported weights are untrained",
        "trained": "the architecture under the search's proxy training; see weights.training for these weights",
        "final": "the architecture under the search's proxy training; see weights.training for these weights",
    }[weights_kind]
    return {
        "value": record.accuracy,
        "std": record.accuracy_std,
        "per_seed": attrs.get(keys.ACCURACY_SEEDS),
        "metric": "validation accuracy (held out from the training images)",
        "applies_to": applies,
        "data": info.attrs.get(keys.DATA_SPEC) or spec.get("data"),
        "evaluator": attrs.get(keys.EVALUATOR) or spec.get("name"),
        "recipe": recipe or spec or None,
        "seeds": spec.get("seeds"),
        "epochs": epochs,
        "learning_curve": list(record.learning_curve),
        "trained_on": attrs.get(keys.ACCELERATOR),
    }


def _latency_section(record: TrialRecord) -> dict[str, Any] | None:
    if record.latency_ms is None:
        return None
    return {
        "ms": float(record.latency_ms),
        "source": record.attrs.get(keys.LATENCY_SOURCE, "unknown"),
        "device": record.attrs.get(keys.LATENCY_DEVICE),
    }


def _pytorch_section(files: Sequence[str]) -> dict[str, Any] | None:
    if "model.pt" not in files:
        return None
    return {"weights": "model.pt", "config": "config.json", "load": "shufflenet_core.load(folder)"}


def _final_stage(record: TrialRecord, info: StudyInfo) -> str | None:
    """The final stage's verdict when this trial is its answer (``nas final``)."""
    from nas.results import final_answer

    answer = final_answer(info)
    return answer.get("verdict") if answer is not None and answer.get("answer_trial") == record.number else None


def _selection_text(request: ExportRequest) -> str:
    if request.trial is not None:
        return f"--trial {request.trial}"
    limits = []
    if request.budget_macs is not None:
        limits.append(f"--budget {request.budget_label or request.budget_macs}")
    if request.latency_budget_ms is not None:
        limits.append(f"--latency-budget {request.latency_budget_ms:g}ms")
    return " ".join(["--best", *limits])


# --- Markdown ------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_markdown(card: dict[str, Any]) -> str:
    arch, cost, weights = card["architecture"], card["complexity"], card["weights"]
    config, prov = arch["config"], card["provenance"]
    lines = [
        f"# {card['name']}: ShuffleNet v1 `{arch['short_name']}`",
        "",
        f"Exported by {prov['exported_with']} on {prov['exported_at']} from trial {prov['trial']} "
        f"of study `{prov['study']}` ({prov['selection']}).",
        "",
        *([f"Chosen by the study's final stage (`nas final`): {prov['final_stage']}", ""] if prov.get("final_stage") else []),
        "## Architecture and cost",
        "",
        "| | |",
        "|---|---|",
        f"| groups | {config['groups']} |",
        f"| stage output channels | {' / '.join(str(c) for c in config['stage_out_channels'])} |",
        f"| stage depths | {' / '.join(str(d) for d in config['stage_depths'])} |",
        f"| stem channels | {config['stem_channels']} |",
        f"| bottleneck ratio | {config['bottleneck_ratio']:g} |",
        f"| channel shuffle | {'yes' if config['channel_shuffle'] else 'no'} |",
        f"| input | {config['in_channels']} x {config['input_size']} x {config['input_size']} |",
        f"| classes | {config['num_classes']} |",
        f"| **MFLOPs** | **{cost['mflops']:.3f}** ({cost['convention']}) |",
        f"| **parameters** | **{cost['params']:,}** ({cost['params'] / 1e6:.4f} M) |",
    ]
    searched = cost.get("searched_macs")
    if searched is not None and searched != cost["macs"]:
        lines += [
            "",
            f"The search judged this architecture at {searched / 1e6:.3f} MFLOPs with the stored config's "
            "classifier and input channels; the exported weights fit the training data's instead.",
        ]
    lines += ["", "## Weights", "", f"{weights['description']}."]
    training = weights.get("training")
    if training:
        lines += ["", *(f"- {key}: {_plain(value)}" for key, value in training.items())]
    lines += ["", "## Accuracy", ""]
    accuracy = card["accuracy"]
    if accuracy is None:
        lines.append("The trial has no recorded accuracy.")
    else:
        spread = "" if accuracy["std"] is None else f" ± {100 * accuracy['std']:.2f}"
        lines += [
            f"- **{_pct(accuracy['value'])}**{spread} {accuracy['metric']}",
            f"- applies to: {accuracy['applies_to']}",
            f"- data: {accuracy['data'] or 'not recorded'}",
            f"- evaluator: {accuracy['evaluator'] or 'not recorded'}, epochs: {accuracy['epochs'] or 'not recorded'}",
            f"- recipe: {_plain(accuracy['recipe']) if accuracy['recipe'] else 'not recorded'}",
        ]
        if accuracy.get("trained_on"):
            lines.append(f"- trained on: {_plain(accuracy['trained_on'])} (other accelerators agree within seed noise)")
        if accuracy["learning_curve"]:
            lines.append(f"- learning curve: {', '.join(_pct(v) for v in accuracy['learning_curve'])}")
    lines += ["", "## Latency", ""]
    latency = card["latency"]
    if latency is None:
        lines.append("Not measured for this trial.")
    else:
        device = latency["device"]
        where = _plain(device) if device else "device not recorded"
        lines.append(f"- **{latency['ms']:.3f} ms**, {latency['source']}, on {where}")
    lines += ["", "## Files", ""]
    onnx = card["files"]["onnx"]
    if onnx:
        lines.append(
            f"- `{onnx['file']}`: ONNX opset {onnx['opset']} ({onnx['exporter']} exporter), weights inside, input "
            f"`{onnx['input']['name']}` {onnx['input']['shape']} float32 (batch, height and width free; MFLOPs "
            f"counted at {onnx['input']['deployment_size']}); passes onnx.checker; ONNX Runtime vs PyTorch "
            f"max |diff| {onnx['max_abs_diff_vs_pytorch']:.2e}"
        )
    int8 = card["files"].get("onnx_int8")
    if int8:
        calibration = int8["calibration"]
        lines.append(
            f"- `{int8['file']}`: {int8['format']}, {int8['bytes'] / 1e6:.2f} MB; int8 weights per channel, uint8 "
            f"activations, ranges calibrated ({calibration['method']}) on {calibration['images']} "
            f"{'training' if calibration['split'] == 'train' else 'random'} images"
        )
    for program in card["files"].get("executorch") or ():
        share = program["delegation"]
        lines.append(
            f"- `{program['file']}`: {program['format']}, {program['bytes'] / 1e6:.2f} MB, input {program['input_shape']}; "
            f"{100 * share['delegated_share']:.1f}% of its nodes run in XNNPACK ({share['subgraphs']} subgraphs, "
            f"{share['portable_nodes']} nodes in portable kernels)"
        )
    if card["files"]["pytorch"]:
        lines.append("- `model.pt` (state_dict) + `config.json`: `shufflenet_core.load(folder)` returns the model")
    lines.append("- `model_card.md`, `model_card.json`: this card")
    deployed = card.get("deployed_accuracy")
    if deployed:
        lines += ["", f"Accuracy of each file on the held-out test split ({deployed['images']} images of "
                      f"{deployed['data']} at {deployed['resolution']}px, never used to choose or calibrate):", "",
                  "| file | runtime | precision | test accuracy | same top-1 as float32 |", "|---|---|---|---|---|"]
        for row in deployed["files"]:
            agree = row.get("top1_agreement_with_fp32")
            lines.append(f"| `{row['file']}` | {row['runtime']} | {row['precision']} | {_pct(row['test_accuracy'])} | "
                         f"{'' if agree is None else _pct(agree)} |")
    timed = card.get("file_latency")
    if timed:
        device = timed["device"]
        where = ", ".join(str(device[key]) for key in ("spec", "arch", "cpu_model") if device.get(key))
        lines += ["", f"Latency of each file on {where}, {timed['threads']} thread(s), input {timed['input_shape']}, "
                      f"median of {timed['runs']} runs ({timed['clock']} clock):", "",
                  "| file | runtime | precision | median ms | p10 ms | p90 ms |", "|---|---|---|---|---|---|"]
        for row in timed["files"]:
            lines.append(f"| `{row['file']}` | {row['runtime']} | {row['precision']} | {row['median_ms']:.3f} | "
                         f"{row['p10_ms']:.3f} | {row['p90_ms']:.3f} |")
    pre = card.get("preprocessing")
    if pre:
        lines += ["", "## Preprocessing", "",
                  f"Resize to {pre['resize_to'][0]}x{pre['resize_to'][1]}, {pre['channels']}, {pre['layout']}; "
                  f"scale {pre['scale']}, then subtract mean {pre['mean']} and divide by std {pre['std']} per channel."]
    lines += [
        "",
        "## Provenance",
        "",
        f"- storage: `{prov['storage']}`",
        f"- study: `{prov['study']}`, trial {prov['trial']}, seed {prov['seed']}, study budget {prov['study_budget']}",
        f"- searched with: {prov['searched_with'] or 'not recorded'}; exported with: {prov['exported_with']}",
        f"- exported at: {prov['exported_at']}",
    ]
    if prov["preset"]:
        lines.append(f"- preset: `{prov['preset']}`")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_plain(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

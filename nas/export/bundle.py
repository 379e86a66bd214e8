"""``nas export``: turn one trial of a study into files someone can ship.

The output folder holds ``model.onnx`` (one self-contained file), ``model.pt`` + ``config.json``
(read back with ``shufflenet_core.load``) and a model card (``model_card.md`` / ``.json``).
Everything is written into a hidden temporary folder beside the target and renamed into place
at the end, so a failure or Ctrl-C leaves either the old folder or nothing, never half a model.

An existing ``--out`` is only ever replaced with ``--force``, and only when it is empty or holds
exactly a previous export: a ``model_card.json`` written by ``nas export`` and no file that the
card does not list. Anything else is refused and left as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas import records as keys
from nas.errors import UserError
from nas.export.model_card import CARD_JSON, CARD_MARKDOWN, files_written
from nas.records import StudyInfo, TrialRecord
from nas.results import answer_weights
from shufflenet_core import ShuffleNetConfig, complexity

if TYPE_CHECKING:
    from torch import nn

    from shufflenet_core.model import ShuffleNetV1

__all__ = [
    "FORMATS",
    "ExportRequest",
    "ExportResult",
    "WeightsSource",
    "check_output_folder",
    "parse_formats",
    "run_export",
    "select_best",
    "select_trial",
]

FORMATS = ("onnx", "pytorch", "onnx-int8", "executorch", "executorch-int8")
DEFAULT_FORMATS = ("onnx", "pytorch")
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
MAX_CARD_BYTES = 16 * 2**20  # a card is a few KB; anything this big is not one
ONNX_ATOL = 1e-4


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked for, already parsed (budgets in MACs and milliseconds)."""

    out: Path
    storage: str | None = None
    study: str | None = None
    trial: int | None = None
    budget_macs: int | None = None
    budget_label: str | None = None
    latency_budget_ms: float | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    force: bool = False
    untrained: bool = False
    train_epochs: int | None = None
    data: str | None = None
    onnx_exporter: str = "dynamo"
    accelerator: str = "cpu"
    train_precision: str = "auto"
    device: str | None = None
    """Time every exported model file on this latency device (``nas export --device``)."""
    threads: int = 1


@dataclass(frozen=True)
class WeightsSource:
    """Where the exported weights come from, for the model card."""

    kind: str  # "search" (the trial's kept weights), "final" (the final stage's), "untrained", "trained" (by nas export)
    description: str
    path: str | None = None
    training: dict[str, Any] | None = None  # recipe, epochs, data and test accuracy when "trained"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    record: TrialRecord
    files: tuple[str, ...]
    card: dict[str, Any]


# --- choosing the trial --------------------------------------------------------------------


def parse_formats(text: str) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [name for name in wanted if name not in FORMATS]
    if unknown or not wanted:
        raise UserError(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    if any(name.startswith("executorch") for name in wanted):
        from nas.export.executorch import require_executorch

        require_executorch()
    return wanted


def with_recomputed_macs(record: TrialRecord) -> TrialRecord:
    """The record with MACs/params counted from its stored config (the stored numbers may be stale)."""
    if record.config is None:
        return record
    cost = complexity(record.config)
    return dataclasses.replace(record, macs=cost.macs, params=cost.params)


def select_trial(records: Sequence[TrialRecord], number: int) -> TrialRecord:
    """Trial ``number``, if it finished with a config and an accuracy."""
    by_number = {record.number: record for record in records}
    record = by_number.get(number)
    if record is None:
        known = sorted(by_number)
        span = f"0..{known[-1]}" if known else "none"
        raise UserError(f"no trial {number} in this study (trials: {span})")
    if record.state != "COMPLETE" or record.config is None:
        state = {"FAIL": "failed", "PRUNED": "pruned", "RUNNING": "still running"}.get(record.state, record.state.lower())
        raise UserError(f"trial {number} has no result to export ({state}); pick a completed trial")
    return with_recomputed_macs(record)


def select_best(
    records: Sequence[TrialRecord],
    info: StudyInfo,
    *,
    budget_macs: int | None = None,
    latency_budget_ms: float | None = None,
    budget_label: str | None = None,
) -> TrialRecord:
    """The best trial within the budgets (:func:`nas.results.choose_best`, as the search
    summary and the dashboard pick it), with MACs recounted from each stored config; a
    one-line UserError when there is none."""
    from nas.results import choose_best

    recounted = [with_recomputed_macs(r) for r in records if r.config is not None]
    choice = choose_best(
        recounted, info, budget_macs=budget_macs, latency_budget_ms=latency_budget_ms, budget_label=budget_label
    )
    if choice.record is None:
        raise UserError(str(choice.reason))
    return choice.record


def describe_choice(record: TrialRecord, info: StudyInfo) -> str:
    """Why ``--best`` took this trial: the final stage's answer, or the search's ranking."""
    from nas.results import final_answer

    answer = final_answer(info)
    if answer is not None and answer.get("answer_trial") == record.number:
        return f"best trial: #{record.number}, the answer of the study's final stage ({answer.get('verdict', '')})"
    kind = "trained accuracy" if info.trained else "zero-cost score, not a trained accuracy"
    return (f"best trial: #{record.number}, ranked by {info.quality} ({kind}) {record.score:.4f} "
            f"at {record.mflops or 0:.2f} MFLOPs")


# --- the output folder ----------------------------------------------------------------------


def check_output_folder(out: Path, *, force: bool) -> None:
    """Fail early (before any training) when ``out`` cannot be written as asked."""
    if out.exists() or out.is_symlink():
        _check_replaceable(out, force=force)
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot create {out}: {ancestor} is a file; choose another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {ancestor}: permission denied; choose another --out")


def _check_replaceable(out: Path, *, force: bool) -> None:
    """``out`` exists: raise unless it is a folder that ``--force`` may replace and it was given."""
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder; choose another path")
    problem = _why_not_replaceable(out)
    if problem is not None:
        raise UserError(f"--out {out} already exists and {problem}")
    if not force:
        what = "is an empty folder" if not any(out.iterdir()) else "holds a previous export"
        raise UserError(f"--out {out} already exists ({what}); pass --force to replace it or choose another path")


_ONLY_EXPORTS = "--force only replaces a previous export"


def _why_not_replaceable(folder: Path) -> str | None:
    """None when replacing ``folder`` loses nothing but a previous export (or nothing at all);
    else why not and what to do, as the end of a sentence."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        return f"cannot be read ({error.strerror or error}); choose another --out"
    if not entries:
        return None
    if not any(entry.name == CARD_JSON for entry in entries):
        return (f"is not a previous export (no {CARD_JSON}; it holds {_names(entries)}); {_ONLY_EXPORTS}: "
                "choose a new or empty folder")
    written = _files_of_card(folder / CARD_JSON)
    if written is None:
        return f"its {CARD_JSON} was not written by nas export; {_ONLY_EXPORTS}: choose a new or empty folder"
    extra = [e for e in entries if e.name not in written or not e.is_file(follow_symlinks=False)]
    if extra:
        return (f"holds files the previous export did not write ({_names(extra)}); {_ONLY_EXPORTS} as it was "
                "written: move them out or choose another folder")
    return None


def _files_of_card(card: Path) -> frozenset[str] | None:
    """The files the export that wrote ``card`` put beside it, or None if it is not such a card."""
    try:
        if card.is_symlink() or not card.is_file() or card.stat().st_size > MAX_CARD_BYTES:
            return None
        parsed = json.loads(card.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return files_written(parsed)


def _names(entries: Sequence[os.DirEntry]) -> str:
    shown = [entry.name + ("/" if entry.is_dir(follow_symlinks=False) else "") for entry in entries[:3]]
    more = len(entries) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _make_parents(folder: Path) -> list[Path]:
    """Create the missing ancestors of ``folder``; return them (deepest first) for cleanup."""
    created = []
    probe = folder
    while not probe.exists():
        created.append(probe)
        probe = probe.parent
    for path in reversed(created):
        path.mkdir()
    return created


def write_atomically(out: Path, *, force: bool, fill: Callable[[Path], None]) -> None:
    """Call ``fill(tmp)`` on a fresh hidden folder beside ``out``, then rename it to ``out``.

    An existing ``out`` is replaced only as :func:`check_output_folder` allows (checked again
    here, and once more after it is moved aside, since the export may have taken hours).
    """
    created: list[Path] = []
    staging: Path | None = None
    backup: Path | None = None
    replaced = False
    try:
        created = _make_parents(out.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        fill(staging)
        if out.exists() or out.is_symlink():
            _check_replaceable(out, force=force)
            backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, backup / out.name)
            problem = _why_not_replaceable(backup / out.name)  # something may have landed in between
            if problem is not None:
                raise UserError(f"--out {out} changed while exporting and {problem}")
        os.replace(staging, out)
        staging = None
        replaced = True
    except OSError as error:
        _restore(out, backup)
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    except BaseException:
        _restore(out, backup)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if staging is not None or not out.exists():
            for path in created:  # deepest first; only folders this call made, and only if empty
                try:
                    path.rmdir()
                except OSError:
                    break
        if backup is not None:
            if replaced:
                shutil.rmtree(backup, ignore_errors=True)  # the previous export, checked above
            else:
                try:  # empty once the old folder is back; if it could not go back, keep it here
                    backup.rmdir()
                except OSError:
                    pass


def _restore(out: Path, backup: Path | None) -> None:
    if backup is not None and (backup / out.name).exists() and not out.exists():
        os.replace(backup / out.name, out)


# --- weights --------------------------------------------------------------------------------


def resolve_weights_path(record: TrialRecord, storage_url: str) -> Path | None:
    """The trial's kept state_dict file: absolute, else relative to the cwd or the storage file."""
    stored = record.attrs.get(keys.WEIGHTS_PATH)
    if not stored:
        return None
    path = Path(str(stored)).expanduser()
    if path.is_absolute():
        return path
    from nas.storage import storage_file

    bases = [Path.cwd()]
    file = storage_file(storage_url)
    if file is not None:
        bases.append(file.parent)
    for base in bases:
        if (base / path).is_file():
            return base / path
    return bases[-1] / path


def model_with_stored_weights(config: ShuffleNetConfig, path: Path) -> tuple[nn.Module, ShuffleNetConfig]:
    """Build ``config`` and load the trial's state_dict into it.

    Proxy training may change the classifier and input channels to fit its data set (e.g. 10
    classes, 1 channel); those two are read from the weights' shapes, never guessed.
    """
    from shufflenet_core import build_model
    from shufflenet_core.io import load_state_dict

    if not path.is_file():
        raise UserError(f"the trial's weights file {path} is missing; use --train-epochs N or --untrained")
    try:
        state = load_state_dict(path)
    except ValueError as error:
        raise UserError(str(error)) from None
    classifier, stem = state.get("classifier.weight"), state.get("stem.conv.weight")
    if classifier is not None and stem is not None:
        config = config.replace(num_classes=int(classifier.shape[0]), in_channels=int(stem.shape[1]))
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"the weights in {path} do not fit trial's config ({first})") from None
    return model.eval(), config


def fresh_model(config: ShuffleNetConfig, seed: int) -> nn.Module:
    import torch

    from shufflenet_core import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(config).eval()


# --- the export itself ----------------------------------------------------------------------


def load_study_records(storage: str | None, study_name: str | None):  # noqa: ANN201 - optuna lazily
    from nas.records import load_records, study_info
    from nas.storage import load_study, open_storage, resolve_storage_url

    url = resolve_storage_url(storage)
    study = load_study(open_storage(storage, create=False), study_name)
    return url, study_info(study), load_records(study)


def run_export(
    request: ExportRequest, *, train: Callable[..., Any] | None = None, log: Callable[[str], None] = print
) -> ExportResult:
    """Pick the trial, get its weights, write every file; raise UserError on bad input."""
    from nas.export.model_card import build_card, render_markdown

    out = request.out.expanduser().absolute()
    check_output_folder(out, force=request.force)
    device = _latency_device(request)
    url, info, records = load_study_records(request.storage, request.study)
    if request.trial is not None:
        record = select_trial(records, request.trial)
    else:
        record = select_best(
            records, info, budget_macs=request.budget_macs, latency_budget_ms=request.latency_budget_ms,
            budget_label=request.budget_label,
        )
        log(describe_choice(record, info))
    assert record.config is not None
    model, config, weights = _weights_for(record, info, url, request, train, log)
    onnx_info: dict[str, Any] | None = None
    files: list[str] = []
    images = weights_images(record, info, weights, config)

    def fill(folder: Path) -> None:
        nonlocal onnx_info
        if "pytorch" in request.formats:
            from shufflenet_core.io import CONFIG_FILE, WEIGHTS_FILE, save

            save(model, folder, config=config)
            files.extend([WEIGHTS_FILE, CONFIG_FILE])
        if "onnx" in request.formats:
            onnx_info = _write_onnx(model, folder / ONNX_FILE, exporter=request.onnx_exporter)
            files.append(ONNX_FILE)
        int8_info = None
        if "onnx-int8" in request.formats:
            int8_info = _write_onnx_int8(model, folder, images, request.onnx_exporter, keep_fp32="onnx" in request.formats)
            files.append(ONNX_INT8_FILE)
            log(f"int8: {ONNX_INT8_FILE} calibrated on {int8_info['calibration']['images']} "
                f"{int8_info['calibration']['split']} images")
        programs = _write_executorch(model, folder, images, request.formats, files)
        deployed = _deployed_accuracy(model, folder, files, images) if images is not None else None
        timed = None
        if device is not None:
            from nas.export.file_latency import file_latencies

            log(f"timing the exported files on {request.device} ({request.threads} thread(s))")
            size = images.resolution if images is not None else config.input_size
            timed = file_latencies(device, folder, files, (1, config.in_channels, size, size), threads=request.threads)
        card = build_card(
            record=record, info=info, storage_url=url, config=config, weights=weights,
            onnx=onnx_info, files=files, request=request, onnx_int8=int8_info, deployed=deployed,
            preprocessing=None if images is None else images.preprocessing, executorch=programs,
            file_latency=timed,
        )
        _write_json(folder / CARD_JSON, card)
        (folder / CARD_MARKDOWN).write_text(render_markdown(card), encoding="utf-8")
        files.extend([CARD_MARKDOWN, CARD_JSON])
        result_card.update(card)

    result_card: dict[str, Any] = {}
    write_atomically(out, force=request.force, fill=fill)
    return ExportResult(out=out, record=record, files=tuple(files), card=result_card)


def _latency_device(request: ExportRequest) -> Any:
    """The ``--device`` opened and checked for every runtime the formats need, before any work."""
    if request.device is None:
        return None
    from nas.export.file_latency import runtimes_for
    from nas.latency import open_device

    device = open_device(request.device)
    for runtime in sorted(runtimes_for(request.formats)):
        device.require_runtime(runtime)
    return device


def _weights_for(record, info, url, request, train, log):  # noqa: ANN001, ANN202 - internal step
    config = record.config
    seed = int(info.attrs.get(keys.SEED, 0) or 0)
    if request.train_epochs is not None:
        from nas.evaluation.data import DEFAULT_DATA
        from nas.export.training import train_for_export

        spec = info.attrs.get(keys.EVALUATOR_SPEC)
        spec = spec if isinstance(spec, dict) else {}
        data_spec = request.data or info.attrs.get(keys.DATA_SPEC) or spec.get("data") or DEFAULT_DATA
        model, training = (train or train_for_export)(
            config, epochs=request.train_epochs, data_spec=data_spec, seed=seed,
            base_recipe=spec.get("recipe") if isinstance(spec.get("recipe"), dict) else None, log=log,
            accelerator=request.accelerator, train_precision=request.train_precision,
        )
        description = (
            f"trained for {request.train_epochs} epoch(s) on {training['data']} by nas export "
            f"(held-out test accuracy {100 * training['test_accuracy']:.2f}%)"
        )
        return model.eval(), model.config, WeightsSource("trained", description, training=training)
    if request.untrained:
        return fresh_model(config, seed), config, WeightsSource("untrained", f"fresh initialisation (seed {seed}); not trained")
    kept = answer_weights(record, info)
    if kept is not None:
        return _final_stage_weights(config, kept, log)
    path = resolve_weights_path(record, url)
    if path is None:
        raise UserError(
            f"trial {record.number} kept no weights (search without --keep-weights); "
            "pass --train-epochs N to train it, or --untrained for the architecture alone"
        )
    model, config = model_with_stored_weights(config, path)
    epochs = record.attrs.get(keys.EPOCHS)
    return model, config, WeightsSource(
        "search", f"weights kept by the search ({epochs} epoch(s) of proxy training)" if epochs else "weights kept by the search",
        path=str(path),
    )


def _final_stage_weights(config: ShuffleNetConfig, kept: dict[str, Any], log: Callable[[str], None]):  # noqa: ANN202
    """The final stage's run of the answer: the highest-fidelity weights this trial has."""
    from nas.evaluation.comparison import Fidelity

    model, config = model_with_stored_weights(config, Path(kept["path"]))
    fidelity = Fidelity(**kept["fidelity"])
    test = kept.get("test_accuracy")
    description = (
        f"the final stage's most accurate run of this config (seed {kept['seed']}, {fidelity.describe()}; "
        f"selection accuracy {100 * kept['accuracy']:.2f}%"
        + ("" if test is None else f", held-out test accuracy {100 * test:.2f}%") + ")"
    )
    log(f"weights: {description}")
    training = {"by": "nas final", "seed": kept["seed"], **fidelity.to_dict(), "selection_accuracy": kept["accuracy"],
                "test_accuracy": test}
    return model, config, WeightsSource("final", description, path=str(kept["path"]), training=training)


def weights_images(record: TrialRecord, info: StudyInfo, weights: WeightsSource, config: ShuffleNetConfig) -> Any:
    """The data and resolution the exported weights were trained at (where int8 is calibrated
    and every file's accuracy measured); None when the model does not take that data's images
    (an untrained architecture with the search space's channels)."""
    from nas.evaluation.data import DEFAULT_DATA, load_data
    from nas.export.quantize import WeightsData

    spec = info.attrs.get(keys.EVALUATOR_SPEC)
    spec = spec if isinstance(spec, dict) else {}
    recipe: dict[str, Any] = spec["recipe"] if isinstance(spec.get("recipe"), dict) else {}
    training: dict[str, Any] = weights.training or {}
    data_spec = str(training.get("data") or info.attrs.get(keys.DATA_SPEC) or spec.get("data") or DEFAULT_DATA)
    resolution = int((training.get("recipe") or {}).get("resolution") or training.get("resolution")
                     or recipe.get("resolution") or 32)
    if load_data(data_spec).in_channels != config.in_channels:
        return None
    return WeightsData(data_spec, resolution, trained=weights.kind != "untrained")


def _write_onnx_int8(model: ShuffleNetV1, folder: Path, images: Any, exporter: str, *, keep_fp32: bool) -> dict[str, Any]:
    """model.int8.onnx from the float32 ONNX file (written first, and removed again when only
    int8 was asked for: it is ours, in the folder being filled)."""
    from nas.export.quantize import calibration_images, quantize_onnx

    fp32 = folder / ONNX_FILE
    if not keep_fp32:
        _write_onnx(model, fp32, exporter=exporter)
    try:
        return quantize_onnx(fp32, folder / ONNX_INT8_FILE, calibration_images(images, model.config))
    finally:
        if not keep_fp32:
            fp32.unlink(missing_ok=True)


def _write_executorch(model: ShuffleNetV1, folder: Path, images: Any, formats: Sequence[str],
                      files: list[str]) -> list[dict[str, Any]]:
    """model.pte and model.int8.pte (batch 1 at the training resolution; the deployment size
    for an untrained architecture)."""
    wanted = [name for name in ("executorch", "executorch-int8") if name in formats]
    if not wanted:
        return []
    import torch

    from nas.export.executorch import EXECUTORCH_FILE, EXECUTORCH_INT8_FILE, write_executorch
    from nas.export.quantize import calibration_images

    config = model.config
    size = images.resolution if images is not None else config.input_size
    example = torch.randn(1, config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    written = []
    for name in wanted:
        if name == "executorch":
            written.append(write_executorch(model, folder / EXECUTORCH_FILE, example))
            files.append(EXECUTORCH_FILE)
        else:
            calibration = calibration_images(images, config)
            written.append(write_executorch(model, folder / EXECUTORCH_INT8_FILE, example, calibration=calibration.images))
            written[-1]["quantization"]["split"] = calibration.split
            files.append(EXECUTORCH_INT8_FILE)
    return written


def _deployed_accuracy(model: ShuffleNetV1, folder: Path, files: Sequence[str], images: Any) -> dict[str, Any] | None:
    """Each exported model file's top-1 accuracy on the held-out test split, in its runtime."""
    if not images.trained:
        return None
    from nas.export.quantize import file_accuracies

    return file_accuracies(model, folder, files, images)


def _write_onnx(model: ShuffleNetV1, path: Path, *, exporter: str = "dynamo") -> dict[str, Any]:
    """Export (batch, height and width left free), falling back to the legacy exporter; verify."""
    from shufflenet_core.onnx_export import DEFAULT_OPSET, check_onnx, export_onnx

    options: dict[str, Any] = dict(dynamic_batch=True, dynamic_spatial=True, opset=DEFAULT_OPSET)
    try:
        export_onnx(model, path, exporter=exporter, **options)
    except Exception:  # noqa: BLE001 - torch.export raises many kinds; the legacy path is the fallback
        if exporter == "legacy":
            raise
        path.unlink(missing_ok=True)
        exporter = "legacy"
        export_onnx(model, path, exporter="legacy", **options)
    try:
        check = check_onnx(model, path, atol=ONNX_ATOL, batch_sizes=(1, 2))
    except ValueError as error:
        raise UserError(f"the ONNX export failed its check: {error}") from None
    config = model.config
    return {
        "file": ONNX_FILE,
        "opset": check.opset,
        "exporter": exporter,
        "input": {
            "name": "input", "shape": ["batch", config.in_channels, "height", "width"], "dtype": "float32",
            "deployment_size": config.input_size,
        },
        "output": {"name": "output", "shape": ["batch", config.num_classes]},
        "max_abs_diff_vs_pytorch": check.max_abs_diff,
        "checked_batch_sizes": list(check.batch_sizes),
        "bytes": path.stat().st_size,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")

"""``nas export``: write a trial as ONNX, PyTorch weights + config, and a model card."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.commands.accelerator_options import ACCELERATOR, TRAIN_PRECISION
from nas.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create with the exported files."),
    storage: str | None = typer.Option(None, "--storage", help="Study storage (default runs/shufflenas.db)."),
    study: str | None = typer.Option(None, "--study", help="Study name (default: the newest)."),
    trial: int | None = typer.Option(None, "--trial", min=0, help="Export this trial number."),
    best: bool = typer.Option(False, "--best", help="Export the most accurate feasible trial of the front."),
    budget: str | None = typer.Option(None, "--budget", help="With --best: FLOP budget, e.g. 140M."),
    latency_budget: str | None = typer.Option(None, "--latency-budget", help="With --best: e.g. 30ms."),
    formats: str = typer.Option("onnx,pytorch", "--format", help=(
        "Comma-separated: onnx, pytorch, onnx-int8 (static int8, calibrated on 256 training images), executorch, "
        "executorch-int8 (.pte for XNNPACK; need the mobile extra)."
    )),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    untrained: bool = typer.Option(False, "--untrained", help="Export the architecture with fresh weights."),
    train_epochs: int | None = typer.Option(
        None, "--train-epochs", min=1, help="Train the chosen config this many epochs before export."
    ),
    data: str | None = typer.Option(None, "--data", help="With --train-epochs: data set spec (default: the study's)."),
    onnx_exporter: str = typer.Option(
        "dynamo", "--onnx-exporter", help="dynamo (torch's current exporter) or legacy (TorchScript, faster)."
    ),
    accelerator: str = ACCELERATOR,
    train_precision: str = TRAIN_PRECISION,
    device: str | None = typer.Option(None, "--device", help=(
        "Also time every exported model file on this latency device (local, ssh://user@host, ...) for the card."
    )),
    threads: int = typer.Option(1, "--threads", min=1, help="With --device: intra-op threads on the device."),
) -> None:
    """Export one trial: model.onnx, model.pt + config.json, model_card.md/.json.

    Pick it with --trial N, or --best [--budget 140M] [--latency-budget 30ms]. Without --train-epochs or --untrained the weights are those of the final stage's run when the trial is its answer, else those the search kept (--keep-weights).
    """
    request = _request(
        out=out, storage=storage, study=study, trial=trial, best=best, budget=budget,
        latency_budget=latency_budget, formats=formats, force=force, untrained=untrained,
        train_epochs=train_epochs, data=data, onnx_exporter=onnx_exporter, accelerator=accelerator,
        train_precision=train_precision, device=device, threads=threads,
    )
    from nas.export.bundle import run_export

    result = run_export(request, log=_log)
    card = result.card
    accuracy = card["accuracy"]["value"] if card.get("accuracy") else None
    typer.echo(
        f"exported trial {result.record.number} of {card['provenance']['study']} "
        f"({card['complexity']['mflops']:.1f} MFLOPs, {card['complexity']['params'] / 1e6:.3f} M params"
        + ("" if accuracy is None else f", search accuracy {100 * accuracy:.2f}%")
        + f", weights: {card['weights']['source']}) to {result.out}: {', '.join(result.files)}"
    )


def _request(*, out, storage, study, trial, best, budget, latency_budget, formats, force, untrained, train_epochs, data, onnx_exporter,  # noqa: ANN001, ANN202, E501
             accelerator, train_precision, device=None, threads=1):
    from nas.export.bundle import ExportRequest, parse_formats

    if (trial is None) == (not best):
        raise UserError("choose the trial with exactly one of --trial N or --best")
    if trial is not None and (budget or latency_budget):
        raise UserError("--budget and --latency-budget select a trial with --best; drop them with --trial")
    if untrained and train_epochs is not None:
        raise UserError("--untrained and --train-epochs exclude each other; pick one")
    if onnx_exporter not in ("dynamo", "legacy"):
        raise UserError(f"--onnx-exporter {onnx_exporter!r}: choose dynamo or legacy")
    if data is not None and train_epochs is None:
        raise UserError("--data is only used with --train-epochs N")
    if train_epochs is not None:
        from nas.evaluation.accelerator import check_accelerator

        check_accelerator(accelerator, train_precision)
    if data is not None:
        from nas.evaluation.data import validate_data_spec

        data = validate_data_spec(data)
    budget_macs = None
    if budget is not None:
        from nas.budget import parse_budget

        budget_macs = parse_budget(budget)
    return ExportRequest(
        out=out, storage=storage, study=study, trial=trial, budget_macs=budget_macs, budget_label=budget,
        latency_budget_ms=None if latency_budget is None else _parse_latency(latency_budget),
        formats=parse_formats(formats), force=force, untrained=untrained, train_epochs=train_epochs, data=data,
        onnx_exporter=onnx_exporter, accelerator=accelerator, train_precision=train_precision, device=device,
        threads=threads,
    )


def _parse_latency(text: str) -> float:
    from nas.latency.budget import parse_latency

    return parse_latency(text)


def _log(message: str) -> None:
    typer.echo(message, err=True)

"""``nas runs list`` / ``nas runs show NAME``: what the storage holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

runs_app = typer.Typer(help="List and inspect the studies in a storage.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def _storage_option() -> Optional[str]:
    return typer.Option(None, "--storage", help="Study storage (default runs/shufflenas.db).")


@runs_app.command("list")
def list_runs(
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
) -> None:
    """One line per study: budget, objectives, trials by state, best result."""
    import optuna
    from nas.console import output_console
    from rich.table import Table

    from nas.records import load_records, study_info
    from nas.storage import open_storage
    from nas.reporting.summary import best_record, score_of

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage or str(runs_dir / "shufflenas.db"), create=False)
    table = Table(title="studies")
    for column in ("study", "budget", "objectives", "complete", "pruned", "failed", "running", "best"):
        table.add_column(column)
    for summary in store.get_all_studies():
        study = optuna.load_study(study_name=summary.study_name, storage=store)
        records = load_records(study)
        info = study_info(study)
        counts = {state: sum(1 for r in records if r.state == state) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
        best = best_record(records)
        best_text = "" if best is None else f"{score_of(best):.4f} @ {best.mflops:.1f}M (#{best.number})"
        table.add_row(
            info.name, info.budget_label or "", ",".join(info.objectives), str(counts["COMPLETE"]), str(counts["PRUNED"]),
            str(counts["FAIL"]), str(counts["RUNNING"]), best_text,
        )
    output_console().print(table)


@runs_app.command("show")
def show_run(
    name: str = typer.Argument(..., help="Study name (see `nas runs list`)."),
    storage: Optional[str] = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
    as_json: bool = typer.Option(False, "--json", help="Every trial as JSON."),
) -> None:
    """The study's Pareto front and its trials."""
    import optuna
    from nas.console import output_console
    from rich.table import Table

    from nas.records import load_records, study_info
    from nas.storage import load_study, open_storage
    from nas.reporting.summary import front_table, knob_summary, score_of

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage or str(runs_dir / "shufflenas.db"), create=False)
    study = load_study(store, name)
    records = load_records(study)
    if as_json:
        rows = [
            {"number": r.number, "state": r.state, "feasible": r.feasible, "score": score_of(r), "mflops": r.mflops,
             "params": r.params, "accuracy_std": r.accuracy_std, "latency_ms": r.latency_ms, "preset": r.preset,
             "config": r.attrs.get("config"), "learning_curve": list(r.learning_curve)}
            for r in records
        ]
        typer.echo(json.dumps({"study": name, "attrs": study.user_attrs, "trials": rows}, indent=2, default=str))
        return
    console = output_console()
    info = study_info(study)
    console.print(front_table(records, info))
    table = Table(title=f"all trials of {name!r}")
    for column in ("trial", "state", info.objectives[0], "MFLOPs", "architecture", "note"):
        table.add_column(column)
    for record in records:
        score = score_of(record)
        note = record.preset or record.attrs.get("skipped") or record.attrs.get("fail_reason") or ""
        table.add_row(
            str(record.number), record.state.lower(), "" if score is None else f"{score:.4f}",
            "" if record.mflops is None else f"{record.mflops:.2f}", knob_summary(record), note,
        )
    console.print(table)

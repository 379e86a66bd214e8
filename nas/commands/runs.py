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
    from nas.reporting.summary import state_counts
    from nas.results import best_trial
    from nas.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage or str(runs_dir / "shufflenas.db"), create=False)
    table = Table(title="studies")
    for column in ("study", "budget", "objectives", "complete", "pruned", "failed", "lost", "running", "waiting", "best"):
        table.add_column(column)
    for summary in store.get_all_studies():
        study = optuna.load_study(study_name=summary.study_name, storage=store)
        records = load_records(study)
        info = study_info(study)
        counts = state_counts(records)
        best = best_trial(records, info)
        best_text = "" if best is None or best.score is None else f"{best.score:.4f} @ {best.mflops or 0:.1f}M (#{best.number})"
        table.add_row(
            info.name, info.budget_label or "", ",".join(info.objectives),
            *(str(counts.get(state, 0)) for state in ("COMPLETE", "PRUNED", "FAIL", "LOST", "RUNNING", "WAITING")), best_text,
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

    from nas.records import CONFIG, load_records, study_info
    from nas.reporting.summary import front_table, trial_note, trials_table
    from nas.results import best_trial, study_front
    from nas.storage import load_study, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage or str(runs_dir / "shufflenas.db"), create=False)
    study = load_study(store, name)
    records = load_records(study)
    info = study_info(study)
    if as_json:
        front = {r.number for r in study_front(records, info)}
        best = best_trial(records, info)
        rows = [
            {"number": r.number, "state": r.state, "lost": r.lost, "feasible": r.feasible, "score": r.score,
             "mflops": r.mflops, "params": r.params, "accuracy_std": r.accuracy_std, "latency_ms": r.latency_ms,
             "preset": r.preset, "on_front": r.number in front, "note": trial_note(r), "config": r.attrs.get(CONFIG),
             "learning_curve": list(r.learning_curve)}
            for r in records
        ]
        document = {"study": name, "attrs": study.user_attrs, "front": sorted(front),
                    "best": None if best is None else best.number, "ranked_by": info.quality, "trials": rows}
        typer.echo(json.dumps(document, indent=2, default=str))
        return
    console = output_console()
    console.print(front_table(records, info))
    console.print(trials_table(records, info))

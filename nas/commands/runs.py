"""``nas runs list`` / ``show NAME`` / ``copy NAME --to URL``: what a storage holds, and moving
a study to another storage (a laptop's study into a cluster's shared database)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

runs_app = typer.Typer(help="List, inspect and copy the studies in a storage.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def _storage_option() -> str | None:
    return typer.Option(None, "--storage", help="Study storage (default runs/shufflenas.db).")


@runs_app.command("list")
def list_runs(
    storage: str | None = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
) -> None:
    """One line per study: budget, objectives, trials by state, best result."""
    import optuna
    from rich.table import Table

    from nas.console import output_console
    from nas.records import load_records, study_info
    from nas.reporting.summary import state_counts
    from nas.results import best_trial
    from nas.storage import is_comparison_study, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage or str(runs_dir / "shufflenas.db"), create=False)
    table = Table(title="studies")
    for column in ("study", "budget", "objectives", "complete", "pruned", "failed", "lost", "running", "waiting", "best"):
        table.add_column(column)
    comparisons = 0
    for summary in store.get_all_studies():
        if is_comparison_study(summary.user_attrs):
            comparisons += 1
            continue
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
    console = output_console()
    console.print(table)
    if comparisons:
        console.print(f"and {comparisons} result stud{'y' if comparisons == 1 else 'ies'} of `nas compare` / `nas final` "
                      "(one per fidelity; a search's verdict shows in `nas runs show`)", highlight=False)


@runs_app.command("show")
def show_run(
    name: str = typer.Argument(..., help="Study name (see `nas runs list`)."),
    storage: str | None = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
    as_json: bool = typer.Option(False, "--json", help="Every trial as JSON."),
) -> None:
    """The study's Pareto front and its trials."""
    import optuna
    from rich.markup import escape

    from nas.console import output_console
    from nas.records import CONFIG, load_records, study_info
    from nas.reporting.summary import front_table, trial_note, trials_table
    from nas.results import best_trial, final_answer, study_front
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
    answer = final_answer(info)
    if answer is not None:
        console.print(f"final stage: {escape(str(answer.get('verdict', '')))}", highlight=False, soft_wrap=True)


@runs_app.command("copy")
def copy_run(
    name: str = typer.Argument(..., help="Study to copy (see `nas runs list`)."),
    to: str = typer.Option(..., "--to", help=(
        "Storage to copy it into, e.g. postgresql://user@db-host/nas (password from PGPASSWORD or ~/.pgpass)."
    )),
    storage: str | None = _storage_option(),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
    new_name: str | None = typer.Option(None, "--as", help="Name of the copy (default: the same name)."),
) -> None:
    """Copy a study, with every trial and attribute, into another storage (e.g. a laptop's study into the shared database a cluster uses). The source is only read; an existing study of that name in the destination is never overwritten."""
    import optuna

    from nas.console import output_console
    from nas.errors import UserError
    from nas.records import RUNNING, load_records
    from nas.storage import describe_storage, list_study_names, load_study, open_storage, resolve_storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = open_storage(storage or str(runs_dir / "shufflenas.db"), create=False)
    study = load_study(source, name)
    target_name = new_name or name
    running = [r.number for r in load_records(study) if r.state == RUNNING]
    if running:
        raise UserError(
            f"study {name!r} has running trials ({', '.join(f'#{n}' for n in running[:5])}): wait for its search to end, "
            "or run the same `nas search` once to fail the trials of a search that was killed, then copy"
        )
    destination = open_storage(to)
    if target_name in list_study_names(destination):
        raise UserError(
            f"{describe_storage(resolve_storage_url(to))} already has a study named {target_name!r}; pass --as NEW_NAME"
        )
    optuna.copy_study(from_study_name=name, from_storage=source, to_storage=destination, to_study_name=target_name)
    copied = optuna.load_study(study_name=target_name, storage=destination)
    output_console().print(
        f"copied {len(copied.get_trials(deepcopy=False))} trials of {name!r} to {target_name!r} in "
        f"{describe_storage(resolve_storage_url(to))}; `nas search --storage ... --study {target_name}` continues it there",
        highlight=False,
    )

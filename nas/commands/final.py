"""``nas final``: race a study's finalists at a higher fidelity and store the answer
(see nas/engine/final.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from nas.commands.accelerator_options import ACCELERATOR, TRAIN_PRECISION

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from nas.engine.final import FinalSettings
    from nas.engine.outcome import SearchOutcome

HELP = """Race a study's best configs at a higher fidelity than the search and store a confident answer.

The finalists are the top --finalists distinct configs of the study's feasible front within its budgets. The reference is the paper's best preset within the budget (when none fits: g3 at the paper's depths, widened to the budget). All train with fresh seeds on the selection split, images that no search trains or validates on; the field is halved after each round of --round-seeds seeds, and the survivors and the reference get a last comparison on --seeds fresh seeds: a one-sided exact permutation test of each against the reference (4 seeds is the fewest whose p can go below 0.05).

The verdict is stored in the study (user attribute final_answer); nas export --best, the dashboard and nas runs show then take its answer. The answer's test-split accuracy is measured beside it and never used to choose. Every run is stored as it finishes: the same command after Ctrl-C trains only what is missing.

Search cheaply on a laptop, then run nas final on a bigger machine with more --epochs.
"""


def register(app: typer.Typer) -> None:
    app.command("final", help=HELP)(final)


def final(
    study: str | None = typer.Option(None, "--study", help="The search study (default: the storage's newest)."),
    storage: str | None = typer.Option(None, "--storage", help="Storage of the study (default: runs/shufflenas.db)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
    finalists: int = typer.Option(3, "--finalists", "-k", min=1, help="Front configs to race."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs per run [default: 3x the search's]."),
    train_size: str = typer.Option("all", "--train-size", help="Training images per run, or 'all'."),
    seeds: int = typer.Option(4, "--seeds", min=2, help="Fresh seeds of the last comparison."),
    round_seeds: int = typer.Option(2, "--round-seeds", min=1, help="Seeds per halving round."),
    first_seed: int = typer.Option(2000, "--first-seed", min=0, help="First seed (the search uses low seeds)."),
    data: str | None = typer.Option(None, "--data", help="Data set [default: the study's]."),
    resolution: int | None = typer.Option(None, "--resolution", min=32, help="Training resolution [default: the study's]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2, help="Batch size [default: the study's]."),
    workers: int = typer.Option(0, "--workers", min=0, help="Training processes, one thread each (0 = one per core)."),
    accelerator: str = ACCELERATOR,
    train_precision: str = TRAIN_PRECISION,
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    import optuna

    from nas import records as R
    from nas.backends.parallelism import default_workers
    from nas.engine.final import FinalSettings
    from nas.evaluation.accelerator import check_accelerator
    from nas.evaluation.comparison import Fidelity, parse_train_size
    from nas.evaluation.data import validate_data_spec
    from nas.records import study_info
    from nas.storage import load_study, open_storage, resolve_storage_url

    check_accelerator(accelerator, train_precision)
    images = parse_train_size(train_size)
    store_url = storage or str(runs_dir / "shufflenas.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(store_url, create=False)
    search = load_study(opened, study)
    info = study_info(search)
    recipe = dict(info.attrs.get(R.EVALUATOR_SPEC, {}).get("recipe") or {})
    fidelity = Fidelity(
        epochs=epochs or 3 * int(recipe.get("epochs", 1)), train_size=images,
        data=validate_data_spec(data or info.attrs.get(R.DATA_SPEC) or "fashion-mnist"),
        resolution=resolution or int(recipe.get("resolution", 32)),
        batch_size=batch_size or int(recipe.get("batch_size", 128)), split="selection",
    )
    settings = FinalSettings(fidelity=fidelity, finalists=finalists, round_seeds=round_seeds, seeds=seeds,
                             first_seed=first_seed, workers=workers or default_workers(),
                             weights_dir=final_weights_dir(resolve_storage_url(store_url), runs_dir, search.study_name),
                             accelerator=accelerator, train_precision=train_precision)
    verdict = race(opened, search, settings, quiet=quiet or as_json)
    verdict = {**verdict, "study": search.study_name, "storage": store_url}
    if as_json:
        typer.echo(json.dumps(verdict, indent=2))
    else:
        print_verdict(verdict)


def final_weights_dir(storage_url: str, runs_dir: Path, study: str) -> Path:
    """Where a study's final stage keeps its answer's weights: beside a storage file (so the
    default runs/shufflenas.db gets runs/weights, as ``--keep-weights``), else in ``runs_dir``."""
    from nas.storage import storage_file

    file = storage_file(storage_url)
    return (file.parent if file is not None else runs_dir) / "weights" / study / "final"


def race(storage: optuna.storages.BaseStorage, search: optuna.Study, settings: FinalSettings, *,
         quiet: bool) -> dict[str, Any]:
    """Run the final stage on ``search`` and store its verdict there; the verdict, with
    ``trained_now`` (runs this call trained). Ctrl-C keeps every finished run."""
    from nas import records as R
    from nas.engine.final import run_final
    from nas.evaluation.comparison import SeedRunner, open_result_store
    from nas.records import load_records, study_info

    runner = SeedRunner(open_result_store(storage, settings.fidelity), settings.fidelity,
                        accelerator=settings.accelerator, train_precision=settings.train_precision)
    try:
        with _progress(quiet) as progress:
            verdict = run_final(load_records(search), study_info(search), settings, runner, progress=progress)
    except KeyboardInterrupt:
        sys.stderr.write(f"{runner.trained} run(s) of this call are stored; the same command trains only the rest\n")
        raise
    search.set_user_attr(R.FINAL_ANSWER, verdict)
    return {**verdict, "trained_now": runner.trained}


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[int], Callable[[str, int], None]]]:
    """``progress(runs)`` per phase; the bar's total grows as phases start."""
    if quiet:
        yield lambda total: lambda label, seed: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("final stage"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=Console(stderr=True)) as bar:
        task = bar.add_task("runs", total=0, last="")

        def phase(total: int) -> Callable[[str, int], None]:
            bar.update(task, total=(bar.tasks[0].total or 0) + total)
            return lambda label, seed: bar.update(task, advance=1, last=f"{label} seed {seed}")

        yield phase


def print_verdict(verdict: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from nas.console import output_console

    console = output_console()
    for number, round_ in enumerate(verdict["rounds"], 1):
        entries = ", ".join(f"{e['label']} {100 * e['mean']:.1f}%" for e in round_["entries"])
        console.print(f"round {number} (seeds {round_['seeds'][0]}-{round_['seeds'][-1]}): {entries}; kept "
                      f"{', '.join(round_['kept'])}", highlight=False, soft_wrap=True)
    table = Table(title=f"final comparison on the selection split ({verdict['selection_images']} images), "
                        f"{len(verdict['final_seeds'])} fresh seeds")
    for column in ("config", "architecture", "MFLOPs", "search score", "accuracy %", "gap (points)", "p (better)", "test %"):
        table.add_column(column, justify="left" if column in ("config", "architecture") else "right")
    from shufflenet_core import ShuffleNetConfig

    for row in verdict["finalists"]:
        reference = row["gap"] is None
        test = row["test_scores"]
        table.add_row(
            row["label"] + (" (reference)" if reference else ""), ShuffleNetConfig.from_dict(row["config"]).short_name,
            f"{row['mflops']:.1f}", "" if row["proxy_score"] is None else f"{row['proxy_score']:.4f}",
            f"{100 * row['mean']:.2f} +- {100 * row['sd']:.2f}", "" if reference else f"{100 * row['gap']:+.2f}",
            "" if reference else f"{row['p_value']:.3g}", f"{100 * sum(test) / len(test):.2f}" if test else "",
        )
    console.print(table)
    console.print(f"trained now: {verdict['trained_now']}; verdict stored in study {verdict['study']!r} "
                  f"(final_answer)", highlight=False)
    console.print(escape(verdict["verdict"]), highlight=False, soft_wrap=True)
    if verdict["answer_trial"] is not None:
        console.print(f"next: nas export --storage {verdict['storage']} --study {verdict['study']} --best --out model/",
                      highlight=False, soft_wrap=True)


def final_stage_after_search(console: Console, outcome: SearchOutcome, finalists: int, seconds: float, *,
                             quiet: bool, runs_dir: Path, accelerator: str = "cpu",
                             train_precision: str = "auto") -> bool:
    """``nas search --final K``: race each study's finalists at epochs sized to ``seconds``;
    print each verdict (or why there is none). False when a study got no verdict."""
    import optuna
    from rich.markup import escape

    from nas import records as R
    from nas.backends.parallelism import default_workers
    from nas.engine.final import FinalSettings, planned_runs, sized_epochs
    from nas.errors import UserError
    from nas.evaluation.comparison import Fidelity
    from nas.evaluation.data import load_data
    from nas.results import finalists as front_finalists
    from nas.storage import describe_storage, open_storage

    storage = open_storage(outcome.storage_url)
    every_study_answered = True
    for study_outcome in outcome.studies:
        info, records = study_outcome.info, study_outcome.records
        recipe = dict((info.attrs.get(R.EVALUATOR_SPEC) or {}).get("recipe") or {})
        data = str(info.attrs.get(R.DATA_SPEC) or "fashion-mnist")
        base = FinalSettings(fidelity=Fidelity(), finalists=finalists, workers=default_workers())
        runs = planned_runs(max(1, len(front_finalists(records, info, finalists))), base)
        images = len(load_data(data).train_labels)
        epochs = sized_epochs(records, info, runs, seconds, train_images=images, speedup=base.workers)
        rerun = f"nas final --storage {describe_storage(outcome.storage_url)} --study {info.name}"
        if epochs is None:
            console.print(f"final stage of {info.name!r} skipped: {runs} training runs on {images} images do not fit in "
                          f"--final-time {seconds:g}s at one epoch; run `{rerun}` (any time, resumable)",
                          highlight=False, soft_wrap=True)
            every_study_answered = False
            continue
        fidelity = Fidelity(epochs=epochs, train_size=None, data=data, resolution=int(recipe.get("resolution", 32)),
                            batch_size=int(recipe.get("batch_size", 128)), split="selection")
        console.print(f"final stage of {info.name!r}: {runs} training runs at {fidelity.describe()} on fresh seeds "
                      f"(sized to --final-time {seconds:g}s)", highlight=False, soft_wrap=True)
        search = optuna.load_study(study_name=info.name, storage=storage)
        try:
            settings = FinalSettings(fidelity=fidelity, finalists=finalists, workers=base.workers,
                                     weights_dir=final_weights_dir(outcome.storage_url, runs_dir, info.name),
                                     accelerator=accelerator, train_precision=train_precision)
            verdict = race(storage, search, settings, quiet=quiet)
        except UserError as error:
            console.print(f"final stage of {info.name!r}: {error}", highlight=False, soft_wrap=True)
            every_study_answered = False
            continue
        console.print(escape(verdict["verdict"]), highlight=False, soft_wrap=True)
        if verdict["answer_trial"] is not None:
            console.print(f"[dim]next: nas export --storage {escape(describe_storage(outcome.storage_url))} --study "
                          f"{escape(info.name)} --best --out model/ (exports the answer, trial {verdict['answer_trial']})[/dim]",
                          highlight=False, soft_wrap=True)
    return every_study_answered

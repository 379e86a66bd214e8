"""``nas compare CONFIG...``: train configs on the same seeds at a chosen fidelity and test each
gap to a reference (see nas/evaluation/comparison.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from nas.commands.accelerator_options import ACCELERATOR, TRAIN_PRECISION

if TYPE_CHECKING:
    from nas.evaluation.comparison import Contender, Fidelity

HELP = """Train configs on the same seeds at one fidelity and test whether each beats a reference.

CONFIG is a preset name (shufflenet_v1_1.0x_g3), a config JSON file, study:TRIAL (a trial of --study), or a knob spec such as g3,b0.5,d2-4-2[,c24] whose width is solved to fill --budget. Append +noshuffle to turn channel shuffle off (the paper's Table 3), e.g. shufflenet_v1_1.0x_g8+noshuffle.

Accuracy is measured on the data set's test split, which no search uses (--eval-on selection: the images nas final chooses on; val: the search's validation images). Each gap to the reference gets a one-sided exact permutation p-value; with n seeds each, p cannot go below 1 / C(2n, n) (0.17 at 2 seeds, 0.004 at 5), which the verdict prints.

Every (config, seed) result is stored in the storage's comparison study for this fidelity: running the same command again (after Ctrl-C, or with more --seeds) trains only what is missing.
"""


def register(app: typer.Typer) -> None:
    app.command("compare", help=HELP)(compare)


def compare(
    configs: list[str] = typer.Argument(..., help="Configs to compare (see above)."),
    reference: str | None = typer.Option(None, "--reference", help="The config to beat (default: the first CONFIG)."),
    seeds: int = typer.Option(5, "--seeds", min=2, help="Training seeds per config (the same seeds for every config)."),
    first_seed: int = typer.Option(1000, "--first-seed", min=0, help="First seed (the search uses low seeds)."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Training epochs per run."),
    train_size: str = typer.Option("10000", "--train-size", help="Training images per run, or 'all'."),
    data: str = typer.Option("fashion-mnist", "--data", help="Data set, as for nas search."),
    resolution: int = typer.Option(32, "--resolution", min=32, help="Training resolution."),
    batch_size: int = typer.Option(128, "--batch-size", min=2, help="Batch size."),
    eval_on: str = typer.Option("test", "--eval-on", help="test (no search uses it), selection (nas final's) or val."),
    budget: str = typer.Option("140M", "--budget", "-b", help="Budget that knob specs are widened to fill."),
    storage: str | None = typer.Option(None, "--storage", help="Storage for the results (and of --study)."),
    study: str | None = typer.Option(None, "--study", help="Search study that study:TRIAL configs come from."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder of the default storage."),
    workers: int = typer.Option(0, "--workers", min=0, help="Training processes, one thread each (0 = one per core)."),
    accelerator: str = ACCELERATOR,
    train_precision: str = TRAIN_PRECISION,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from nas.budget import parse_budget
    from nas.errors import UserError
    from nas.evaluation.accelerator import check_accelerator
    from nas.evaluation.comparison import Fidelity, parse_contender, parse_train_size
    from nas.evaluation.data import validate_data_spec

    check_accelerator(accelerator, train_precision)
    fidelity = Fidelity(epochs=epochs, train_size=parse_train_size(train_size), data=validate_data_spec(data), resolution=resolution,
                        batch_size=batch_size, split=eval_on)
    budget_macs = parse_budget(budget)
    store_url = storage or str(runs_dir / "shufflenas.db")
    trial_config = _trial_config_reader(store_url, study) if study else None
    contenders = [parse_contender(text, budget_macs, trial_config=trial_config) for text in configs]
    if reference is not None:
        ref = parse_contender(reference, budget_macs, trial_config=trial_config)
        contenders = [ref] + [c for c in contenders if c.label != ref.label]
    if len(contenders) < 2:
        raise UserError("give at least two configs (or one and --reference)")
    from nas.backends.parallelism import default_workers

    document = _run(contenders, fidelity, list(range(first_seed, first_seed + seeds)), store_url, quiet=quiet or as_json,
                    workers=workers or default_workers(), accelerator=accelerator, train_precision=train_precision)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        _print(document)


def _trial_config_reader(store_url: str, study_name: str) -> Callable[[int], dict[str, Any]]:
    from nas import records as R
    from nas.errors import UserError
    from nas.storage import load_study, open_storage

    study = load_study(open_storage(store_url, create=False), study_name)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}

    def read(number: int) -> dict[str, Any]:
        trial = trials.get(number)
        if trial is None or R.CONFIG not in trial.user_attrs:
            raise UserError(f"study {study_name!r} has no trial {number} with a config")
        return dict(trial.user_attrs[R.CONFIG])

    return read


def _run(contenders: list[Contender], fidelity: Fidelity, seeds: list[int], store_url: str, *, quiet: bool,
         workers: int, accelerator: str = "cpu", train_precision: str = "auto") -> dict[str, Any]:
    import optuna

    from nas.evaluation.comparison import SeedRunner, compare, open_result_store, smallest_reachable_p, verdict
    from nas.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_result_store(open_storage(store_url), fidelity)
    runner = SeedRunner(store, fidelity, accelerator=accelerator, train_precision=train_precision)
    todo = runner.missing(contenders, seeds)
    with _progress(len(todo), quiet) as advance:
        try:
            runner.run_all(todo, workers=workers, advance=advance)
        except KeyboardInterrupt:
            sys.stderr.write(f"{runner.trained} run(s) of this call are stored; the same command trains only the rest\n")
            raise
    results = compare(contenders, [runner.scores(c, seeds) for c in contenders], reference=0)
    return {
        "fidelity": fidelity.to_dict(),
        "evaluated_on": {"split": fidelity.split, "images": runner.images_evaluated()},
        "seeds": seeds,
        "trained_now": runner.trained,
        "storage": store_url,
        "study": store.study.study_name,
        "reference": contenders[0].label,
        "rows": [
            {"label": r.contender.label, "short_name": r.contender.config.short_name, "mflops": round(r.contender.mflops, 3),
             "scores": list(r.scores), "mean": r.mean, "sd": r.sd, "gap": r.gap, "p_value": r.p_value}
            for r in results
        ],
        "smallest_reachable_p": smallest_reachable_p(len(seeds), len(seeds)),
        "verdict": verdict(results, 0, fidelity),
    }


def _progress(total: int, quiet: bool):  # noqa: ANN202 - a context manager yielding advance(label, seed)
    from contextlib import contextmanager

    @contextmanager
    def bar():  # noqa: ANN202
        if quiet or total == 0:
            yield lambda label, seed: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[last]}"), console=Console(stderr=True)) as progress:
            task = progress.add_task("runs", total=total, last="")
            yield lambda label, seed: progress.update(task, advance=1, last=f"{label} seed {seed}")

    return bar()


def _print(document: dict[str, Any]) -> None:
    from rich.table import Table

    from nas.console import output_console

    split = document["evaluated_on"]
    table = Table(title=f"accuracy on the {split['split']} split ({split['images']} images), {len(document['seeds'])} seeds")
    for column in ("config", "architecture", "MFLOPs", "accuracy %", "gap (points)", "p (better)"):
        table.add_column(column, justify="left" if column in ("config", "architecture") else "right")
    for row in document["rows"]:
        reference = row["gap"] is None
        table.add_row(
            row["label"] + (" (reference)" if reference else ""), row["short_name"], f"{row['mflops']:.1f}",
            f"{100 * row['mean']:.2f} +- {100 * row['sd']:.2f}",
            "" if reference else f"{100 * row['gap']:+.2f}", "" if reference else f"{row['p_value']:.3g}",
        )
    console = output_console()
    console.print(table)
    console.print(f"results in {document['storage']} (study {document['study']}); trained now: {document['trained_now']}",
                  highlight=False)
    console.print(f"verdict: {document['verdict']}", highlight=False, soft_wrap=True)

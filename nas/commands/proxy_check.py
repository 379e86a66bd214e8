"""``nas proxy-check``: can the proxy be trusted on *your* data, before a night-long search?"""

from __future__ import annotations

import json

import typer

from nas.commands.accelerator_options import ACCELERATOR, TRAIN_PRECISION


def register(app: typer.Typer) -> None:
    app.command("proxy-check")(proxy_check)


def proxy_check(
    configs: int = typer.Option(8, "--configs", min=3, help="How many diverse configs (groups x 10-150 MFLOPs) to compare."),
    data: str = typer.Option("fashion-mnist", "--data", help="Data spec, as for `nas search --data`."),
    evaluator: str = typer.Option("proxy", "--evaluator", help="The proxy to check: proxy (training) or zero-cost[:naswot]."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Proxy training epochs (the search's --epochs)."),
    factor: int = typer.Option(4, "--factor", min=2, help="The reference trains factor x longer."),
    resolution: int = typer.Option(32, "--resolution", min=32, help="Proxy training resolution."),
    train_size: int | None = typer.Option(None, "--train-size", min=10, help="Training images (default: all)."),
    val_size: int | None = typer.Option(None, "--val-size", min=10, help="Validation images (default: all)."),
    seeds: int = typer.Option(2, "--seeds", min=1, help="Proxy runs per config with different seeds (measures the noise)."),
    seed: int = typer.Option(0, "--seed", help="Seed for picking configs and the first training seed."),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads (0 = all cores)."),
    accelerator: str = ACCELERATOR,
    train_precision: str = TRAIN_PRECISION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Rank correlation (Spearman) between the proxy and factor-x-longer training, and seed noise.

    Trains each config with the proxy recipe (several seeds) and with a reference recipe `factor` times longer, then prints how well the proxy ranks configs (Spearman, Kendall) and the seed-to-seed spread, so gaps smaller than the noise are read as ties.
    """
    from dataclasses import replace

    import torch
    from rich.console import Console
    from rich.table import Table

    from nas.console import output_console
    from nas.errors import UserError
    from nas.evaluation.accelerator import check_accelerator, placement
    from nas.evaluation.data import load_data, validate_data_spec
    from nas.evaluation.proxy_trust import check_proxy, diverse_configs
    from nas.evaluation.training import Recipe, prepare_data, train_config
    from nas.evaluation.zero_cost import ZeroCostEvaluator

    if threads:
        torch.set_num_threads(threads)
    check_accelerator(accelerator, train_precision)
    place = placement(accelerator, train_precision)
    spec = validate_data_spec(data)
    try:
        recipe = Recipe(epochs=epochs, resolution=resolution, train_size=train_size, val_size=val_size)
    except ValueError as error:
        raise UserError(str(error)) from None
    reference_recipe = replace(recipe, epochs=epochs * factor)
    dataset = load_data(spec)
    prepared = prepare_data(dataset, recipe)
    console = Console(stderr=True)
    console.print(
        f"[dim]{dataset.describe()}; proxy {epochs} epoch(s) x {seeds} seed(s), reference {epochs * factor} epochs; "
        f"training on {place.describe()}[/dim]"
    )

    kind, _, method = evaluator.partition(":")
    if kind == "proxy":
        def proxy_score(config, run_seed):
            return train_config(config, prepared, recipe, seed=run_seed, place=place).accuracy
        proxy_name = f"proxy training, {epochs} epoch(s)"
        seed_list = list(range(seed, seed + seeds))
    elif kind == "zero-cost":
        scorer = ZeroCostEvaluator(method or "synflow", data_spec=spec, recipe=recipe)

        def proxy_score(config, run_seed):
            return scorer.evaluate(config).score
        proxy_name = f"zero-cost {scorer.method}"
        seed_list = [seed]
    else:
        raise UserError(f"unknown evaluator {evaluator!r}; use proxy or zero-cost[:naswot]")

    def reference_score(config):
        return train_config(config, prepared, reference_recipe, seed=seed, place=place).accuracy

    report = check_proxy(
        diverse_configs(configs, seed=seed),
        proxy_score,
        reference_score,
        seeds=seed_list,
        proxy_name=proxy_name,
        reference_name=f"training, {epochs * factor} epochs",
        on_progress=lambda line: console.print(f"[dim]{line}[/dim]"),
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    table = Table(title=f"{report.proxy} vs {report.reference}")
    for column in ("config", "MFLOPs", "proxy (per seed)", "reference"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for result in report.results:
        table.add_row(
            f"g{result.config['groups']} c{'/'.join(map(str, result.config['stage_out_channels']))} "
            f"d{'-'.join(map(str, result.config['stage_depths']))}",
            f"{result.mflops:.1f}",
            ", ".join(f"{v:.4f}" for v in result.proxy_per_seed),
            f"{result.reference:.4f}",
        )
    out = output_console()
    out.print(table)
    out.print(
        f"Spearman rank correlation: {report.spearman:.3f} (Kendall tau {report.kendall_tau:.3f}) over {len(report.results)} "
        f"configs"
    )
    if report.seed_sd is not None:
        out.print(
            f"seed noise (pooled sd): {report.seed_sd:.4f}; {report.ties_within_noise} config pairs differ by less than "
            "that: read them as ties"
        )
    verdict = "trustworthy ranking" if report.spearman >= 0.8 else "weak ranking: train longer (--epochs) or use more data"
    out.print(f"verdict: {verdict}")

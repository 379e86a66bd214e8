"""``nas search``: the main job. Progress while it runs, a Pareto table when it ends."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.commands.accelerator_options import ACCELERATOR, TRAIN_PRECISION
from search_spaces import DesignSpace

HELP = "\n\n".join([
    "Search ShuffleNet v1 configs on the accuracy-MFLOPs Pareto front under FLOP budgets.",
    "Each --budget gets its own study in the storage (default runs/shufflenas.db); running the same command again "
    "resumes it. Every trial stores its config, MACs, params, accuracy per epoch, timing and evaluator.",
    f"Design space (default; --space FILE for yours, YAML/TOML/JSON): {DesignSpace().describe()}. Width is not "
    "sampled: it is solved so that each sample uses most of the budget. The first trials (--start-trials) are a "
    "space-filling design from shallow-and-wide to deep-and-narrow, so the sampler sees the corners of the space "
    "before it models it.",
    "Accuracy (default --evaluator proxy): one epoch of real training on the embedded Fashion-MNIST subset (10k "
    "train / 2k validation images) at 32x32; see `nas proxy-check` for how well this ranks configs. --evaluator "
    "zero-cost scores configs with synflow, no training.",
    "Then, with the proxy evaluator, a final stage (--final K, sized to --final-time) races the top K front configs "
    "and the paper's best preset in budget on fresh seeds and on images no search saw, and ends with one answer "
    "line; `nas export --best` takes that answer. See `nas final --help`.",
    "--n-trials counts trials that finished: complete, pruned, or failed on their own. A trial lost to a worker "
    "that died, or to Ctrl-C, does not count: it runs again, and a dead worker is replaced (--worker-restarts).",
    "Exit codes: 0 every study reached --n-trials (or --timeout ended the run); 1 every trial of a study failed, "
    "or workers could not be kept alive; 2 bad input (nothing is written); 130 interrupted (run the same command "
    "to resume).",
])


def register(app: typer.Typer) -> None:
    app.command("search", help=HELP)(search)


def search(
    budget: list[str] = typer.Option(["140M"], "--budget", "-b", help=(
        "FLOP (MAC) budget at 224x224: 40M, 140M, 524M, 0.6G, 150e6. Repeat for one study per budget."
    )),
    n_trials: int = typer.Option(48, "--n-trials", "-n", min=1, help=(
        "Trials each study should finish (presets included; lost trials do not count)."
    )),
    timeout: float | None = typer.Option(None, "--timeout", min=1, help=(
        "Stop starting new trials after this many seconds (all budgets together)."
    )),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler and of training."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, nsga2 or random."),
    storage: str | None = typer.Option(None, "--storage", help=(
        "Study storage: a .db file, journal:FILE, or a database URL such as postgresql://user@host/db (password from PGPASSWORD "
        "or ~/.pgpass). Default runs/shufflenas.db."
    )),
    study: str | None = typer.Option(None, "--study", help="Study name (default shufflenet-<budget>); the same name resumes."),
    workers: int = typer.Option(0, "--workers", min=0, help=(
        "Local worker processes sharing the storage (0 = measured default for this machine)."
    )),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads per worker (0 = measured default)."),
    worker_restarts: int = typer.Option(3, "--worker-restarts", min=0, help=(
        "Replace a worker process that dies up to this many times per study (0 = never)."
    )),
    space_file: Path | None = typer.Option(None, "--space", help="Design space file (YAML, TOML or JSON)."),
    data: str = typer.Option("fashion-mnist", "--data", help=(
        "fashion-mnist (embedded), fashion-mnist:full, imagefolder:PATH or cifar10:PATH."
    )),
    evaluator: str = typer.Option("proxy", "--evaluator", help=(
        "proxy (training) or zero-cost (synflow, no training) or zero-cost:naswot."
    )),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Proxy training epochs per trial."),
    resolution: int = typer.Option(32, "--resolution", min=32, help=(
        "Proxy training resolution (budgets are always judged at 224)."
    )),
    train_size: int | None = typer.Option(None, "--train-size", min=10, help=(
        "Use this many training images (class-balanced subset)."
    )),
    val_size: int | None = typer.Option(None, "--val-size", min=10, help="Use this many validation images."),
    batch_size: int = typer.Option(128, "--batch-size", min=2, help="Proxy training batch size."),
    seeds: int = typer.Option(1, "--seeds", min=1, help=(
        "Train each candidate with this many seeds; accuracy is their mean (spread stored)."
    )),
    objectives: str = typer.Option("accuracy,mflops", "--objectives", help=(
        "accuracy,mflops (Pareto), accuracy (single objective), or add latency: accuracy,mflops,latency."
    )),
    presets: bool = typer.Option(True, "--presets/--no-presets", help=(
        "Also evaluate the paper's presets inside the budget, as reference points."
    )),
    start_trials: int | None = typer.Option(None, "--start-trials", min=0, help=(
        "Open with this many space-filling trials, from all stages shallow (width solved wide) to all deep, groups and ratios "
        "balanced. Default: 4-10 for tpe and nsga2 (their random start-up), 0 for random; presets run first and leave room."
    )),
    prescreen: int = typer.Option(0, "--prescreen", min=0, help=(
        "Score this many random candidates with synflow first and start from the best."
    )),
    keep_weights: bool = typer.Option(False, "--keep-weights", help="Save each trained trial's weights (for `nas export`)."),
    accelerator: str = ACCELERATOR,
    train_precision: str = TRAIN_PRECISION,
    early_stopping: bool = typer.Option(True, "--early-stopping/--no-early-stopping", help=(
        "Stop trials that trail their MFLOPs peers (successive halving; needs --epochs >= 2)."
    )),
    final: int | None = typer.Option(None, "--final", min=0, help=(
        "Then race the top K front configs and the paper's best preset at a higher fidelity on fresh seeds and images "
        "no search saw (as `nas final`). Default: 2 with the proxy evaluator, 0 (off) with zero-cost."
    )),
    final_time: float = typer.Option(120.0, "--final-time", min=10.0, help=(
        "Seconds the final stage may take: its epochs (1-3) are sized to fit from the search's own trial times."
    )),
    device: str | None = typer.Option(None, "--device", help="Latency device: local, ssh://user@host[:port], adb[:serial]."),
    latency_budget: str | None = typer.Option(None, "--latency-budget", help="Latency constraint, e.g. 30ms (needs --device)."),
    lut: Path | None = typer.Option(None, "--lut", help=(
        "Predict latency from this lookup table (`nas latency build-lut`) instead of measuring."
    )),
    runtime: str = typer.Option("onnxruntime", "--runtime", help=(
        "What latency is measured or predicted in: onnxruntime or executorch (XNNPACK; the mobile extra)."
    )),
    precision: str = typer.Option("fp32", "--precision", help=(
        "fp32 or int8: latency of the int8 model and, when training, each trial's int8 accuracy too."
    )),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder for the default storage and kept weights."),
    backend: str = typer.Option("local", "--backend", help=(
        "local (this machine) or ray (Ray Tune: a local Ray, or a cluster with --ray-address)."
    )),
    ray_address: str | None = typer.Option(None, "--ray-address", help=(
        "Ray cluster to run on: auto (the one `ray start` set up here) or HOST:PORT; default starts a local Ray."
    )),
    cpus_per_trial: int | None = typer.Option(None, "--cpus-per-trial", min=1, help=(
        "Ray backend: CPUs (and torch threads) per trial (default 1)."
    )),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", min=1, help=(
        "Ray backend: at most this many trials at once (default: cluster CPUs / --cpus-per-trial)."
    )),
    gpus_per_trial: float | None = typer.Option(None, "--gpus-per-trial", help=(
        "Ray backend: GPUs per trial; trials go to nodes that have them (fractions share a GPU, e.g. 0.25)."
    )),
    num_gpus: int | None = typer.Option(None, "--num-gpus", min=0, help=(
        "Ray backend, local Ray only: GPUs it may hand out (default: those it detects)."
    )),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress display (a line per trial instead)."),
) -> None:
    arguments = dict(locals())
    from nas.commands.search_settings import SearchRequest

    code = run_search_command(SearchRequest(**arguments))
    if code:
        raise typer.Exit(code)


def run_search_command(request: object) -> int:
    """Check the request, run the engine, print the summary; return the exit code."""
    import optuna

    from nas.backends import create_backend
    from nas.commands.search_settings import SearchRequest, backend_options, build_settings
    from nas.console import output_console
    from nas.engine.outcome import exit_code
    from nas.engine.run import run_search
    from nas.errors import UserError
    from nas.reporting.progress import RichDisplay
    from nas.reporting.summary import print_search_summary
    from nas.storage import describe_storage

    assert isinstance(request, SearchRequest)
    backend_name, options = backend_options(request)
    settings = build_settings(request)
    console = output_console()
    # Failed trials are reported by the display with their stored one-line reason.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.latency is not None:
        _probe_device(console, settings.latency)
    display = RichDisplay(console, quiet=request.quiet)
    outcome = run_search(settings, create_backend(backend_name, options), display)
    print_search_summary(console, outcome, describe_storage(outcome.storage_url))
    if outcome.stopped_reason:
        raise UserError(f"search stopped: {outcome.stopped_reason}")
    if outcome.interrupted:
        console.print("[yellow]interrupted: finished trials are kept; run the same command to resume[/yellow]")
    code = exit_code(outcome)
    finalists = request.final if request.final is not None else (2 if settings.evaluator.name == "proxy" else 0)
    if code == 0 and finalists > 0:
        from nas.commands.final import final_stage_after_search

        if not final_stage_after_search(console, outcome, finalists, request.final_time, quiet=request.quiet,
                                        runs_dir=request.runs_dir, accelerator=request.accelerator,
                                        train_precision=request.train_precision):
            return 1 if request.final is not None else code  # asked for explicitly: not having one is a failure
    return code


def _probe_device(console, latency) -> None:  # noqa: ANN001 - rich Console, LatencySettings
    """Fail fast, with the device's own reason, before any trial is started."""
    from nas.latency import open_device

    if latency.lut_path and latency.device in ("", "lut"):
        return
    info = open_device(latency.device, **latency.options).require_runtime(latency.runtime)
    described = ", ".join(f"{key} {info[key]}" for key in ("arch", "cpu_model", "cores", latency.runtime) if info.get(key))
    described += f", {latency.precision}"
    console.print(f"[dim]latency device {latency.device}: {described}[/dim]")

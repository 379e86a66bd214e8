"""``nas latency``: probe a device, measure a config on it, build and validate a lookup table.

Devices: ``local``, ``ssh://[user@]host[:port]`` (or an ssh config alias), ``adb[:serial]``.
Every device fault ends as one line ``nas: error: ...`` and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from nas.errors import UserError

latency_app = typer.Typer(help="On-device latency: measure, lookup tables, validation.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(latency_app, name="latency")


DEVICE = typer.Option(..., "--device", "-d", help="local, ssh://[user@]host[:port] (or an ssh alias), adb[:serial].")
THREADS = typer.Option(1, "--threads", min=1, help="Intra-op threads on the device.")
RUNS = typer.Option(50, "--runs", min=1, help="Timed runs per model.")
WARMUP = typer.Option(10, "--warmup", min=0, help="Untimed warm-up runs per model.")
CLOCK = typer.Option("auto", "--clock", help="auto (CPU time of the one runner thread when --threads 1, else "
                     "wall), wall or cpu.")
KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="SSH: known_hosts file to verify the host key against.")
IDENTITY = typer.Option(None, "--identity-file", "-i", help="SSH: private key to log in with.")
SSH_CONFIG = typer.Option(None, "--ssh-config", help="SSH: an ssh_config file instead of ~/.ssh/config.")
ACCEPT_NEW = typer.Option(False, "--accept-new-host-key", help="SSH: trust and record a host key seen for the "
                          "first time (never a changed one).")
REMOTE_PYTHON = typer.Option(None, "--remote-python", help="SSH: the device's Python with onnxruntime "
                             "(default python3; e.g. ~/venv/bin/python).")
BENCHMARK = typer.Option(None, "--benchmark-binary", help="adb: path ON the phone of onnxruntime_perf_test.")
RUNNER = typer.Option(None, "--executor-runner", help="adb: path ON the phone of ExecuTorch's executor_runner "
                      "(XNNPACK build), for --runtime executorch.")
TIMEOUT = typer.Option(600.0, "--timeout", min=1.0, help="Seconds to wait for the device per call.")
RUNTIME = typer.Option("onnxruntime", "--runtime", help=(
    "onnxruntime (an ONNX file) or executorch (a .pte lowered to XNNPACK; needs the mobile extra)."
))
PRECISION = typer.Option("fp32", "--precision", help="fp32, or int8 (static quantization).")


def _device(spec: str, known_hosts: Path | None, identity: Path | None, ssh_config: Path | None,
            accept_new: bool, remote_python: str | None, benchmark: str | None, runner: str | None = None):
    from nas.latency import open_device

    return open_device(spec, known_hosts=known_hosts, identity_file=identity, ssh_config=ssh_config,
                       accept_new_host_key=accept_new or None, remote_python=remote_python,
                       benchmark_binary=benchmark, executor_runner=runner)


def _settings(threads: int, runs: int, warmup: int, clock: str, timeout: float, rounds: int = 1):
    from nas.latency import RunSettings

    return RunSettings(threads=threads, runs=runs, warmup=warmup, clock=clock, timeout_s=timeout, rounds=rounds)


def _budget(text: str | None) -> int | None:
    if text is None:
        return None
    from nas.budget import parse_budget

    return parse_budget(text)


def _load_config(preset: str | None, config_file: Path | None):
    from shufflenet_core import ShuffleNetConfig, get_preset

    if (preset is None) == (config_file is None):
        raise UserError("give exactly one of --preset NAME or --config FILE")
    if preset is not None:
        try:
            return get_preset(preset)
        except (KeyError, ValueError) as error:
            raise UserError(str(error).strip("'\"")) from None
    try:
        text = Path(config_file).read_text()  # type: ignore[arg-type]
    except OSError as error:
        raise UserError(f"cannot read config {config_file}: {error.strerror}") from None
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "config" in data and isinstance(data["config"], dict):
            data = data["config"]  # a trial record or model card that wraps the config
        return ShuffleNetConfig.from_dict(data)
    except (ValueError, TypeError) as error:
        raise UserError(f"{config_file}: {error}") from None


@latency_app.command("probe")
def probe(
    device: str = DEVICE, known_hosts: Path | None = KNOWN_HOSTS, identity_file: Path | None = IDENTITY,
    ssh_config: Path | None = SSH_CONFIG, accept_new_host_key: bool = ACCEPT_NEW,
    remote_python: str | None = REMOTE_PYTHON, benchmark_binary: str | None = BENCHMARK,
    executor_runner: str | None = RUNNER,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the device's architecture, CPU, cores and runtime; fail if the runtime is missing."""
    target = _device(device, known_hosts, identity_file, ssh_config, accept_new_host_key, remote_python, benchmark_binary,
                     executor_runner)
    info = target.probe()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            typer.echo(f"{key:>14}: {value}")
    target.require_runtime()


@latency_app.command("measure")
def measure(
    device: str = DEVICE,
    preset: str | None = typer.Option(None, "--preset", help="A preset name (see 'nas presets')."),
    config: Path | None = typer.Option(None, "--config", help="A config JSON file."),
    threads: int = THREADS, runs: int = RUNS, warmup: int = WARMUP, clock: str = CLOCK, timeout: float = TIMEOUT,
    cache_path: Path | None = typer.Option(None, "--cache", help="Latency cache file "
                                              "(default ~/.cache/shufflenas/latency.json)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure again even if a result is cached."),
    runtime: str = RUNTIME, precision: str = PRECISION,
    known_hosts: Path | None = KNOWN_HOSTS, identity_file: Path | None = IDENTITY,
    ssh_config: Path | None = SSH_CONFIG, accept_new_host_key: bool = ACCEPT_NEW,
    remote_python: str | None = REMOTE_PYTHON, benchmark_binary: str | None = BENCHMARK,
    executor_runner: str | None = RUNNER,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Export a config (batch 1, deployment resolution) for a runtime and precision and time it on the device."""
    from nas.latency import LatencyCache, measure_config
    from nas.latency.measure import check_runtime

    check_runtime(runtime, precision)
    network = _load_config(preset, config)
    target = _device(device, known_hosts, identity_file, ssh_config, accept_new_host_key, remote_python, benchmark_binary,
                     executor_runner)
    settings = _settings(threads, runs, warmup, clock, timeout)
    cache = None if no_cache else LatencyCache(cache_path)
    result = measure_config(target, network, settings, cache=cache, runtime=runtime, precision=precision)
    payload: dict[str, Any] = {"config": network.short_name, **result.to_dict(), "clock": settings.effective_clock,
                               "warmup": warmup, "runtime": runtime, "precision": precision}
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    info = result.device
    version = info.get("executorch") if runtime == "executorch" else info.get("onnxruntime")
    typer.echo(f"{network.short_name} on {device} ({info.get('arch')}, {info.get('cpu_model')}, "
               f"{runtime} {version}, {precision}, {threads} thread(s)){' [cached]' if result.cached else ''}")
    typer.echo(f"median {result.median_ms:.3f} ms  p10 {result.p10_ms:.3f}  p90 {result.p90_ms:.3f}  "
               f"spread {100 * result.spread:.1f}%  ({result.runs} runs, {settings.effective_clock} clock)")


@latency_app.command("build-lut")
def build_lut(
    device: str = DEVICE,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the lookup table JSON."),
    space: Path | None = typer.Option(None, "--space", help="Design space file (default: groups 1-8 x widths)."),
    budget: str | None = typer.Option(None, "--budget", help="With --space: the FLOP budget the search will use "
                                         "(widths are solved for it), e.g. 140M."),
    calibration: int = typer.Option(32, "--calibration", min=1, help="Whole networks measured to fit the overhead."),
    max_components: int = typer.Option(2000, "--max-components", min=1, help="Refuse spaces with more unit shapes."),
    threads: int = THREADS, runs: int = RUNS, warmup: int = WARMUP, clock: str = CLOCK, timeout: float = TIMEOUT,
    seed: int = typer.Option(0, "--seed"), runtime: str = RUNTIME, precision: str = PRECISION,
    known_hosts: Path | None = KNOWN_HOSTS, identity_file: Path | None = IDENTITY,
    ssh_config: Path | None = SSH_CONFIG, accept_new_host_key: bool = ACCEPT_NEW,
    remote_python: str | None = REMOTE_PYTHON, benchmark_binary: str | None = BENCHMARK,
    executor_runner: str | None = RUNNER,
    estimator: str = typer.Option("p10", "--estimator", help="Each model's figure: p10 of its runs (the "
                                  "undisturbed speed: load only slows runs), best_round_median or median."),
    sessions: int = typer.Option(2, "--sessions", min=1, max=10, help="Time everything this many times and keep "
                                 "each model's fastest (more, up to 3, while the fit is poor)."),
) -> None:
    """Time every unit shape of the space (plus stem and head) on the device, in one runtime and
    precision; save the table (which names them, with the threads)."""
    from nas.latency.lut import build_lut as build
    from nas.latency.lut import sample_distinct
    from nas.latency.measure import check_runtime
    from nas.latency.space import load_config_space

    check_runtime(runtime, precision)
    config_space = load_config_space(space, _budget(budget))
    target = _device(device, known_hosts, identity_file, ssh_config, accept_new_host_key, remote_python, benchmark_binary,
                     executor_runner)
    settings = _settings(threads, runs, warmup, clock, timeout, rounds=5)
    calibration_configs = sample_distinct(config_space.sample, calibration, seed=seed + 1)
    lut = build(target, config_space.covering(), calibration_configs, settings=settings, space_name=config_space.name,
                max_components=max_components, progress=lambda message: typer.echo(message, err=True),
                runtime=runtime, precision=precision, estimator=estimator, sessions=sessions)
    lut.save(out)
    typer.echo(f"wrote {out}: {len(lut.entries)} entries for {device} ({lut.device.get('arch')}, "
               f"{lut.device.get('cpu_model')}) in {lut.describe()}; overhead {lut.describe_overhead()}")


@latency_app.command("validate")
def validate(
    device: str = DEVICE,
    lut_path: Path = typer.Option(..., "--lut", help="A table from 'nas latency build-lut'."),
    n: int = typer.Option(50, "--n", min=1, help="Random configs to measure."),
    space: Path | None = typer.Option(None, "--space", help="Design space file to sample from."),
    budget: str | None = typer.Option(None, "--budget", help="With --space: the FLOP budget, e.g. 140M."),
    tolerance: float = typer.Option(0.10, "--tolerance", min=0.0, help="Relative error counted as a hit."),
    seed: int = typer.Option(1000, "--seed"),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                       help="Default: the table's (another count is refused)."),
    runs: int = RUNS, warmup: int = WARMUP, clock: str | None = typer.Option(None, "--clock"),
    timeout: float = TIMEOUT,
    known_hosts: Path | None = KNOWN_HOSTS, identity_file: Path | None = IDENTITY,
    ssh_config: Path | None = SSH_CONFIG, accept_new_host_key: bool = ACCEPT_NEW,
    remote_python: str | None = REMOTE_PYTHON, benchmark_binary: str | None = BENCHMARK,
    executor_runner: str | None = RUNNER,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure random configs (in the table's runtime and precision) and print the share the
    table predicts within the tolerance."""
    from nas.latency.lut import LatencyLUT, sample_distinct, validate_lut
    from nas.latency.space import load_config_space

    lut = LatencyLUT.load(lut_path)
    if threads is not None:  # runs at another thread count would report that count's effect as the table's error
        lut.check_matches(lut.runtime, lut.precision, threads, path=lut_path)
    config_space = load_config_space(space, _budget(budget))
    target = _device(device, known_hosts, identity_file, ssh_config, accept_new_host_key, remote_python, benchmark_binary,
                     executor_runner)
    settings = _settings(threads or int(lut.settings.get("threads", 1)), runs, warmup,
                         clock or str(lut.settings.get("clock", "auto")), timeout, rounds=5)
    # Disjoint from the table's calibration networks by construction: a fitted network would flatter the table.
    configs = sample_distinct(config_space.sample, n, seed=seed, exclude=lut.calibration_configs())
    if not configs:
        raise UserError(f"every config of the space is one of the table's {len(lut.calibration)} calibration "
                        "networks, so none is left to judge it by; validate on a larger --space")
    report = validate_lut(target, lut, configs, settings=settings, tolerance=tolerance)
    summary = {"runtime": lut.runtime, "precision": lut.precision, "threads": lut.threads, **report.to_dict()}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for row in report.rows:
        typer.echo(f"{row['config']:<40} measured {row['measured_ms']:8.3f} ms  predicted {row['predicted_ms']:8.3f} ms"
                   f"  {100 * row['error']:+6.1f}%")
    typer.echo(f"{lut.describe()} on {device}, each config timed {settings.runs} times and taken as "
               f"{lut.describe_estimator()}:")
    typer.echo(f"{100 * report.within_share:.1f}% of {len(report.rows)} configs predicted within "
               f"+-{100 * tolerance:g}% (median |error| {100 * summary['median_abs_error']:.1f}%); none of them is one of "
               f"the table's {len(lut.calibration)} calibration networks")
    if report.session_factor is not None:
        corrected = report.corrected()
        typer.echo(f"this session ran the table's calibration networks x{report.session_factor:.3f} the time they took "
                   f"when it was built; with the predictions scaled by that, {100 * corrected.within_share:.1f}% "
                   f"are within +-{100 * tolerance:g}% (a table cannot foresee a device's change of speed)")

"""The local device, budgets, statistics and the on-disk cache (real ONNX Runtime runs)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from nas.errors import UserError
from nas.latency import LatencyCache, RunSettings, measure_config, open_device, parse_latency, summarize
from nas.latency.cache import cache_key
from nas.latency.runner import round_sizes
from nas.latency.timing import Stats, Timing, estimate_ms


@pytest.mark.parametrize("text, expected", [("30ms", 30.0), ("30", 30.0), ("0.03s", 30.0), ("2.5 ms", 2.5),
                                            ("500us", 0.5), (12, 12.0)])
def test_parse_latency(text, expected):
    assert parse_latency(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "fast", "30 min", "-5ms", "0", "nan", "1e999s"])
def test_parse_latency_rejects(text):
    with pytest.raises(UserError):
        parse_latency(text)


def test_summarize_matches_numpy_percentiles():
    values = list(np.random.default_rng(3).gamma(2.0, 1.5, size=57))
    stats = summarize(values)
    assert stats.median_ms == pytest.approx(np.median(values))
    assert (stats.p10_ms, stats.p90_ms) == pytest.approx(tuple(np.percentile(values, [10, 90])))
    assert stats.spread == pytest.approx((stats.p90_ms - stats.p10_ms) / stats.median_ms) and stats.runs == 57


def test_best_round_median_keeps_the_fastest_rounds_median():
    assert round_sizes(50, 5) == [10] * 5 and round_sizes(7, 3) == [3, 2, 2] and round_sizes(2, 5) == [1, 1]
    # 7 runs in 3 rounds of 3, 2, 2 (the runner's split): the second round ran undisturbed.
    times = (2.0, 2.2, 9.0, 1.0, 1.1, 3.0, 3.0)
    timing = Timing("m", times)
    assert estimate_ms(timing, "best_round_median", 3) == pytest.approx(1.05)
    assert estimate_ms(timing, "median", 3) == pytest.approx(2.2) == timing.stats.median_ms
    assert estimate_ms(timing, "best_round_median", 1) == pytest.approx(2.2)  # one round: the median
    assert estimate_ms(timing, "p10", 3) == pytest.approx(1.06)  # numpy's default interpolation
    reported = Timing("m", (), stats_override=Stats(4.0, 3.0, 5.0, 0.5, 50))  # a tool that gives percentiles only
    assert estimate_ms(reported, "best_round_median", 5) == 4.0 and estimate_ms(reported, "p10", 5) == 3.0
    with pytest.raises(UserError, match="estimator"):
        estimate_ms(timing, "mean", 3)


def test_local_measure_and_cache(tiny_config, tmp_path):
    device = open_device("local")
    info = device.probe()
    assert info["kind"] == "local" and info["cores"] >= 1 and info["onnxruntime"] and info["python"]
    cache = LatencyCache(tmp_path / "latency.json")
    first = measure_config(device, tiny_config, RunSettings(runs=50), cache=cache)
    assert not first.cached and first.runs == 50 and 0 < first.p10_ms <= first.median_ms <= first.p90_ms
    assert measure_config(device, tiny_config, RunSettings(runs=50), cache=cache).cached
    assert not measure_config(device, tiny_config, RunSettings(runs=80), cache=cache).cached  # more runs asked
    wall = measure_config(device, tiny_config, RunSettings(runs=20, threads=2), cache=cache)
    assert not wall.cached and wall.threads == 2
    stored = json.loads((tmp_path / "latency.json").read_text())
    assert stored["format"] == "shufflenas-latency-cache" and len(stored["entries"]) == 2


def test_cache_key_separates_device_runtime_threads_and_config(tiny_config):
    info = {"spec": "local", "arch": "x86_64", "onnxruntime": "1.0"}
    base = cache_key(info, tiny_config.to_dict(), 1)
    assert base != cache_key({**info, "onnxruntime": "2.0"}, tiny_config.to_dict(), 1)
    assert base != cache_key({**info, "spec": "ssh://pi"}, tiny_config.to_dict(), 1)
    assert base != cache_key(info, tiny_config.to_dict(), 2)
    assert base != cache_key(info, tiny_config.replace(num_classes=11).to_dict(), 1)


def test_damaged_cache_is_set_aside_not_lost(tmp_path):
    path = tmp_path / "latency.json"
    path.write_text("{not json")
    cache = LatencyCache(path)
    assert cache.get("anything") is None
    cache.put("k", {"runs": 5, "median_ms": 1.0})
    assert cache.get("k", min_runs=5)["median_ms"] == 1.0
    assert [p.name for p in tmp_path.glob("latency.json.damaged-*")]


def test_device_specs_and_settings_errors():
    for spec in ("", "ssh://a b", "adb:bad serial!"):
        with pytest.raises(UserError):
            open_device(spec)
    with pytest.raises(UserError, match="--threads 1"):
        RunSettings(threads=2, clock="cpu")
    assert RunSettings(threads=1).effective_clock == "cpu" and RunSettings(threads=4).effective_clock == "wall"


def test_cli_measure_local(nas, tmp_path):
    config = tmp_path / "net.json"
    config.write_text(json.dumps({"groups": 8, "stage_out_channels": [96, 192, 384], "stage_depths": [1, 2, 1]}))
    done = nas("latency", "measure", "--device", "local", "--config", str(config), "--runs", "50",
               "--cache", str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stderr
    assert "median" in done.stdout and "p10" in done.stdout and "50 runs" in done.stdout
    both = nas("latency", "measure", "--device", "local", "--config", str(config), "--preset", "x")
    assert both.returncode == 2 and "exactly one of" in both.stderr
    bad = nas("latency", "measure", "--device", "local", "--preset", "shufflenet_v9")
    assert bad.returncode == 2 and "unknown preset" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("runtime", "precision", "suffix"), [
    ("onnxruntime", "int8", "model.int8.onnx"), ("executorch", "fp32", "model.pte"), ("executorch", "int8", "model.int8.pte"),
])
def test_measure_in_each_runtime_and_precision(tiny_config, tmp_path, runtime, precision, suffix):
    from nas.latency.measure import export_for_runtime

    path = export_for_runtime(tiny_config, tmp_path, runtime, precision)
    assert path.name == suffix and path.stat().st_size > 0
    cache = LatencyCache(tmp_path / "c.json")
    device = open_device("local")
    result = measure_config(device, tiny_config, RunSettings(runs=5, warmup=1), cache=cache, runtime=runtime,
                            precision=precision)
    assert result.median_ms > 0 and result.runs == 5 and not result.cached
    fp32 = measure_config(device, tiny_config, RunSettings(runs=5, warmup=1), cache=cache)
    assert not fp32.cached  # another runtime or precision is another cache entry
    again = measure_config(device, tiny_config, RunSettings(runs=5, warmup=1), cache=cache, runtime=runtime,
                           precision=precision)
    assert again.cached and again.median_ms == result.median_ms


def test_cli_measure_runtime_and_precision(nas, tmp_path):
    done = nas("latency", "measure", "--device", "local", "--preset", "shufflenet_v1_0.25x_g3", "--runtime", "executorch",
               "--precision", "int8", "--runs", "5", "--warmup", "1", "--no-cache", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert (payload["runtime"], payload["precision"]) == ("executorch", "int8") and payload["median_ms"] > 0
    for args, says in ((["--runtime", "tflite"], "--runtime must be one of onnxruntime, executorch"),
                       (["--precision", "int4"], "--precision must be one of fp32, int8")):
        bad = nas("latency", "measure", "--device", "local", "--preset", "shufflenet_v1_0.25x_g3", *args)
        assert bad.returncode == 2 and bad.stderr.strip() == f"nas: error: {says}, got {args[1]!r}", bad.stderr


def _unit_onnx(folder, groups: int, width: float) -> tuple[Path, int, int]:
    """A stage-3 unit exported as the table times it, its pointwise and its total conv weights."""
    import torch

    from nas.latency.measure import export_module
    from shufflenet_core import ShuffleNetConfig
    from shufflenet_core.model import ShuffleUnit
    from shufflenet_core.structure import unit_specs

    spec = next(spec for spec in unit_specs(ShuffleNetConfig.from_width(groups, width)) if (spec.stage, spec.unit) == (1, 1))
    unit = ShuffleUnit(spec).eval()
    convs = [module for module in unit.modules() if isinstance(module, torch.nn.Conv2d)]
    pointwise = sum(conv.weight.numel() for conv in convs if conv.kernel_size == (1, 1))
    path = export_module(unit, folder / f"unit-g{groups}-{width}.onnx", input_size=spec.input_size,
                         in_channels=spec.in_channels)
    return path, pointwise, sum(conv.weight.numel() for conv in convs)


def test_the_runner_reports_the_weights_of_convolutions_outside_the_blocked_layout(tmp_path):
    """g3 at 0.25x has 20 or 10 channels per group, which no vector width divides: ONNX Runtime runs
    its pointwise convolutions unblocked on every CPU. 1x g1 has no groups: blocked on x86."""
    odd, odd_pointwise, odd_total = _unit_onnx(tmp_path, 3, 0.25)
    plain, plain_pointwise, _ = _unit_onnx(tmp_path, 1, 1.0)
    device = open_device("local")
    timings = device.measure([odd, plain], RunSettings(runs=2, layout=True))
    assert odd_pointwise <= timings[0].unblocked_params <= odd_total
    assert 0 <= timings[1].unblocked_params <= plain_pointwise
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert timings[1].unblocked_params < plain_pointwise  # NCHWc: MLAS blocks them on x86
    assert all(timing.unblocked_params is None for timing in device.measure([odd], RunSettings(runs=2)))

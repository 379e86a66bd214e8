"""The lookup table's structure, independent of this machine's speed: what it covers, the form
of its overhead model, its JSON file, and the fit, on a synthetic device whose latencies are
made-up numbers with a known overhead. How well a table predicts real measurements (the share
within +-10%) depends on the load of the machine and is reported by benchmarks/latency_lut.py;
no test here compares a timing with a threshold."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pytest

import nas.latency.lut as lut_module
from nas.errors import UserError
from nas.latency import (Device, DeviceError, DeviceUnavailableError, LatencyEvaluator, LatencyLUT, RunSettings, Timing,
                         open_device)
from nas.latency.lut import CACHE_GRID_MPARAMS, build_lut, component_keys, sample_distinct, unit_mparams, validate_lut
from nas.latency.runner import round_sizes
from nas.latency.space import default_space
from shufflenet_core import ShuffleNetConfig
from shufflenet_core.structure import unit_specs

SMALL_SPACE = default_space(groups=(3, 8), widths=(0.25, 0.5), depth_ranges=((1, 3), (1, 4), (1, 3)))
CALIBRATION = sample_distinct(SMALL_SPACE.sample, 12, seed=1)
HOLDOUT = sample_distinct(SMALL_SPACE.sample, 20, seed=1000, exclude=CALIBRATION)
SCALE, PER_COMPONENT_MS = 1.1, -0.008
"""The synthetic device's overhead: a network takes 1.1 x the sum of its parts - 8 us each."""


def entry_ms(key: str) -> float:
    """A made-up latency per table entry: 0.05-1.05 ms, fixed by the key, varied across keys."""
    return 0.05 + (zlib.crc32(key.encode()) % 1000) / 1000


def entry_unblocked_params(key: str) -> int:
    """Made-up weights outside the runtime's blocked layout: a third of the entries have some."""
    return 20_000 + zlib.crc32(key.encode()) % 50_000 if zlib.crc32(key.encode()) % 3 == 0 else 0


def network_ms(config: ShuffleNetConfig) -> float:
    keys = component_keys(config)
    return SCALE * sum(entry_ms(key) for key in keys) + PER_COMPONENT_MS * len(keys)


class SyntheticDevice(Device):
    """Answers every model with its made-up latency, identified by the file's name (see the
    ``synthetic_build`` fixture); in the first ``noisy_sessions`` sessions every other network
    runs 30% slower, as under a burst of load (which only ever slows a run)."""

    kind = "synthetic"

    def __init__(self, identities: dict[str, Any], noisy_sessions: int = 0) -> None:
        super().__init__("synthetic")
        self.identities = identities
        self.noisy_sessions = noisy_sessions
        self.sessions = 0
        self.speed = 1.0
        """Every time is multiplied by this (a machine or phone that became slower)."""
        self.session_speeds: list[float] = []
        """The speed of each session in turn (then :attr:`speed`)."""
        self.layouts_asked: list[bool] = []
        """Per session, whether the settings asked for each model's layout."""
        self.unblocked_cost = 0.0
        """ms per M weights outside the blocked layout added to every network (and each entry's
        such weights reported where the settings ask for the layout)."""
        self.cache_cost: tuple[float, float] | None = None
        """(cache_mparams, ms per M weights beyond it) added to every network: weights that
        outgrow a cache cost a network more than its units timed alone."""
        self.bursts = 0
        """In every session, the first this many interleaved rounds run each network 30% slower
        (a shared machine's neighbours busy for a while): the last rounds show the device's speed."""

    def _probe(self) -> dict[str, Any]:
        return {"arch": "synthetic", "cpu_model": "made-up numbers", "cores": 1, "onnxruntime": "none",
                "executorch": "none"}

    def measure(self, models: Sequence[Path], settings: RunSettings, *, input_file: Path | None = None) -> list[Timing]:
        self.sessions += 1
        self.layouts_asked.append(settings.layout)
        speed = self.session_speeds[self.sessions - 1] if self.sessions <= len(self.session_speeds) else self.speed
        timings = []
        for index, model in enumerate(models):
            identity = self.identities[Path(model).name]
            if isinstance(identity, str):
                value = entry_ms(identity)
            else:
                value = network_ms(identity)
                value += self.unblocked_cost * sum(entry_unblocked_params(key) for key in component_keys(identity)) / 1e6
                if self.cache_cost:
                    cache, cost = self.cache_cost
                    value += cost * max(0.0, unit_mparams(identity) - cache)
                if self.sessions <= self.noisy_sessions and index % 2:
                    value *= 1.3
            times = [value * speed] * settings.runs
            if self.bursts and not isinstance(identity, str):
                slow = sum(round_sizes(settings.runs, settings.rounds)[: self.bursts])
                times[:slow] = [time * 1.3 for time in times[:slow]]
            layout = entry_unblocked_params(identity) if settings.layout and isinstance(identity, str) else None
            timings.append(Timing(model=Path(model).name, times_ms=tuple(times), unblocked_params=layout))
        return timings


@pytest.fixture(scope="module")
def synthetic_build():
    """build_lut with its exports replaced by empty files whose identity (table key or config)
    is recorded for the synthetic device: the real build path, no ONNX, no timing."""
    identities: dict[str, Any] = {}
    keys_by_module: dict[int, str] = {}
    real_components = lut_module._components

    def components(configs, *, fast=True):
        found = real_components(configs, fast=fast)
        keys_by_module.update({id(component.module): component.key for component in found})
        return found

    def export_module_for_runtime(module, folder, name, *, input_size, in_channels, runtime, precision):
        path = Path(folder) / f"{name}.onnx"
        identities[path.name] = keys_by_module[id(module)]
        path.write_bytes(b"")
        return path

    def export_for_runtime(config, folder, runtime, precision, *, name):
        path = Path(folder) / f"{name}.onnx"
        identities[path.name] = config
        path.write_bytes(b"")
        return path

    def build(**options):
        device = SyntheticDevice(identities, noisy_sessions=options.pop("noisy_sessions", 0))
        device.bursts = options.pop("bursts", 0)
        device.cache_cost = options.pop("cache_cost", None)
        device.unblocked_cost = options.pop("unblocked_cost", 0.0)
        device.session_speeds = options.pop("session_speeds", [])
        settings = options.pop("settings", RunSettings(runs=5))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(lut_module, "_components", components)
            patch.setattr(lut_module, "export_module_for_runtime", export_module_for_runtime)
            patch.setattr(lut_module, "export_for_runtime", export_for_runtime)
            table = build_lut(device, SMALL_SPACE.covering(), CALIBRATION, holdout_configs=HOLDOUT,
                              settings=settings, space_name=SMALL_SPACE.name, **options)
        return table, device

    return build


@pytest.fixture(scope="module")
def synthetic_lut(synthetic_build, tmp_path_factory):
    table, device = synthetic_build()
    assert device.sessions == 2 and table.settings["sessions"] == 2  # two by default
    return table, table.save(tmp_path_factory.mktemp("lut") / "synthetic.json")


def test_holdout_configs_are_not_calibration_configs():
    fitted = {config.to_json() for config in CALIBRATION}
    assert len(HOLDOUT) == 20 and len(fitted) == 12 and not {config.to_json() for config in HOLDOUT} & fitted
    # Without the exclusion these seeds draw 4 of the calibration networks again.
    assert {config.to_json() for config in sample_distinct(SMALL_SPACE.sample, 20, seed=1000)} & fitted


def test_a_saved_table_knows_its_calibration_networks_so_validation_can_avoid_them(synthetic_lut):
    """Regression: `nas latency validate` sampled with its own seed and could re-measure the
    networks the table was fitted on (seed 1000 draws 4 of them here)."""
    _, path = synthetic_lut
    lut = LatencyLUT.load(path)
    fitted = {config.to_json() for config in lut.calibration_configs()}
    assert fitted == {config.to_json() for config in CALIBRATION}
    drawn = sample_distinct(SMALL_SPACE.sample, 20, seed=1000, exclude=lut.calibration_configs())
    assert len(drawn) == 20 and not {config.to_json() for config in drawn} & fitted


def test_table_covers_every_unit_shape_stem_and_head_of_the_space(synthetic_lut):
    lut, _ = synthetic_lut
    covering = list(SMALL_SPACE.covering())
    shapes = {f"unit:{'-'.join(map(str, spec.shape_key()))}" for config in covering for spec in unit_specs(config)}
    wanted = {key for config in covering for key in component_keys(config)}
    assert shapes <= wanted and set(lut.entries) == wanted
    assert {key.split(":")[0] for key in lut.entries} == {"stem", "unit", "head"}
    assert lut.entries == {key: entry_ms(key) for key in wanted}  # each entry is its component's timing
    # Every config of the space, at any depth, is made of entries of the table.
    assert all(lut.covers(config) for config in SMALL_SPACE.samples(200, seed=5))


def test_fit_recovers_the_synthetic_overhead_exactly(synthetic_lut):
    lut, _ = synthetic_lut
    assert lut.scale == pytest.approx(SCALE, rel=1e-9)
    assert lut.per_component_ms == pytest.approx(PER_COMPONENT_MS, rel=1e-6)
    assert lut.constant_ms == 0.0
    assert lut.describe_overhead() == "x1.100 -8.0 us per component (from 12 networks)"
    # Calibration rows are the networks' parts and timings; held-out rows are predicted exactly.
    for row, config in zip(lut.calibration, CALIBRATION):
        assert ShuffleNetConfig.from_dict(row["config"]) == config and row["components"] == len(component_keys(config))
        assert row["sum_ms"] == lut.sum_ms(config) and row["measured_ms"] == pytest.approx(network_ms(config))
    assert [row["config"] for row in lut.holdout] == [config.short_name for config in HOLDOUT]
    for row, config in zip(lut.holdout, HOLDOUT):
        assert row["predicted_ms"] == lut.predict(config) and row["measured_ms"] == pytest.approx(network_ms(config))
        assert row["error"] == pytest.approx(0.0, abs=1e-9)
    report = lut.holdout_report()
    assert report.within_share == 1.0 and report.to_dict()["n"] == 20


def test_each_model_keeps_its_fastest_session_and_a_bad_fit_is_timed_again(synthetic_build):
    said: list[str] = []
    lut, device = synthetic_build(noisy_sessions=1, progress=said.append)  # the second session is clean
    assert device.sessions == 2 and lut.scale == pytest.approx(SCALE, rel=1e-9)
    assert not any("timing again" in line for line in said)
    lut, device = synthetic_build(noisy_sessions=1, sessions=1, progress=said.append)
    assert device.sessions == 2 and lut.scale == pytest.approx(SCALE, rel=1e-9)
    assert any("timing again" in line for line in said) and not any("warning" in line for line in said)
    said.clear()
    worst, device = synthetic_build(noisy_sessions=5, attempts=2, progress=said.append)
    assert device.sessions == 2 and worst.calibration and len(worst.holdout) == 20  # gave up, kept one
    assert said[-1].startswith("warning: the runs of 2 sessions fit the calibration networks only within")


def test_a_session_slowed_as_a_whole_fits_well_and_still_gives_way_to_a_faster_one(synthetic_build):
    # The whole first session ran 20% slower (a busy host): its fit is perfect, so only a
    # second session can tell; each entry keeps the faster session's figure.
    lut, device = synthetic_build(session_speeds=[1.2, 1.0])
    assert device.sessions == 2
    assert all(value == pytest.approx(entry_ms(key)) for key, value in lut.entries.items())
    assert lut.scale == pytest.approx(SCALE) and all(abs(row["error"]) < 1e-9 for row in lut.holdout)
    alone, _ = synthetic_build(session_speeds=[1.2, 1.0], sessions=1)  # one session: slowed throughout
    assert all(value == pytest.approx(1.2 * entry_ms(key)) for key, value in alone.entries.items())


def test_sessions_at_about_the_same_speed_are_averaged(synthetic_build):
    """Regression: the fastest of two sessions alone sat below what a later session measures
    for the networks whose speed moves most (a build of 09:00 missed 3.5% of them by >10%)."""
    lut, _ = synthetic_build(session_speeds=[1.04, 1.0])  # within 5%: the machine's own spread
    assert all(value == pytest.approx(1.02 * entry_ms(key)) for key, value in lut.entries.items())
    assert all(abs(row["error"]) < 1e-9 for row in lut.holdout)
    lut, _ = synthetic_build(session_speeds=[1.0, 1.06])  # beyond it: a disturbed session, left out
    assert all(value == pytest.approx(entry_ms(key)) for key, value in lut.entries.items())


def test_fit_finds_a_cost_of_weights_beyond_a_cache(synthetic_build, tmp_path):
    """Networks whose units' weights outgrow 0.11 M pay 30 ms per M beyond it (CALIBRATION spans
    0.01-0.15 M): the fit finds the size and cost and predicts the held-out networks exactly;
    without the term the same table misses them."""
    cache = CACHE_GRID_MPARAMS[3]
    lut, _ = synthetic_build(cache_cost=(cache, 30.0))
    assert (lut.cache_mparams, lut.beyond_cache_ms) == (cache, pytest.approx(30.0, rel=1e-6))
    assert lut.scale == pytest.approx(SCALE, rel=1e-6) and lut.per_component_ms == pytest.approx(PER_COMPONENT_MS, rel=1e-4)
    assert all(abs(row["error"]) < 1e-9 for row in lut.holdout)
    assert "+30.000 ms per M unit weights beyond 0.11 M" in lut.describe_overhead()
    loaded = LatencyLUT.load(lut.save(tmp_path / "cache.json"))
    assert all(loaded.predict(config) == lut.predict(config) for config in HOLDOUT)
    without = LatencyLUT.load(lut.save(tmp_path / "plain.json"))
    without.beyond_cache_ms = 0.0
    without.scale, without.per_component_ms = lut_module._fit_overhead(
        [(row["sum_ms"], row["components"], row["measured_ms"]) for row in lut.calibration])
    errors = [abs(without.predict(config) / row["measured_ms"] - 1) for config, row in zip(HOLDOUT, lut.holdout, strict=True)]
    assert max(errors) > 0.02


def test_fit_finds_the_cost_of_weights_outside_the_blocked_layout(synthetic_build, tmp_path):
    """Networks pay 40 ms per M weights of their entries' unblocked convolutions (a third of the
    entries have some, as the device reports when the build asks for the layout): the fit finds
    the cost, the table keeps each entry's weights and predicts the held-out networks exactly;
    the same table without the term misses them."""
    lut, device = synthetic_build(unblocked_cost=40.0)
    assert device.layouts_asked == [True, False]  # the layout is the model's: asked in one session
    assert lut.unblocked_ms == pytest.approx(40.0, rel=1e-6) and lut.beyond_cache_ms == 0.0
    assert lut.unblocked_mparams == {key: entry_unblocked_params(key) / 1e6 for key in lut.entries}
    assert all(abs(row["error"]) < 1e-9 for row in lut.holdout)
    assert "+40.000 ms per uncached M unblocked weights" in lut.describe_overhead()
    loaded = LatencyLUT.load(lut.save(tmp_path / "unblocked.json"))
    assert all(loaded.predict(config) == lut.predict(config) for config in HOLDOUT)
    loaded.unblocked_ms = 0.0
    loaded.scale, loaded.per_component_ms = lut_module._fit_overhead(
        [(row["sum_ms"], row["components"], row["measured_ms"]) for row in lut.calibration])
    assert max(abs(loaded.predict(config) / row["measured_ms"] - 1) for config, row in zip(HOLDOUT, lut.holdout,
                                                                                          strict=True)) > 0.02


def test_a_device_that_does_not_report_the_layout_gives_a_table_without_the_unblocked_term(synthetic_build):
    lut, _ = synthetic_build(settings=RunSettings(runs=5), runtime="executorch")  # asks no layout
    assert lut.unblocked_mparams == {} and lut.unblocked_ms == 0.0


ROWS = [(0.6, 8, 0.5, 0.0), (1.2, 14, 1.0, 0.3), (3.0, 10, 2.0, 0.0), (5.5, 20, 3.5, 1.5), (9.0, 16, 5.0, 0.0),
        (17.0, 24, 8.0, 2.0), (4.0, 12, 2.5, 1.0), (7.0, 18, 4.0, 0.5)]
"""(sum ms, components, M unit weights, M unblocked weights) of eight made-up networks."""


def fitted(rows: list[tuple[float, int, float, float, float]]) -> tuple[float, ...]:
    from nas.latency.lut import _fit_terms

    fit = _fit_terms(rows)
    return fit.scale, fit.per_component_ms, fit.beyond_cache_ms, fit.cache_mparams, fit.unblocked_ms


def test_overhead_terms_are_found_jointly_and_left_out_where_they_do_not_help():
    cache = CACHE_GRID_MPARAMS[12]  # 1 M
    both = [(t, c, w, u, 1.1 * t - 0.008 * c + 0.2 * max(0.0, w - cache) + 0.5 * u * max(0.0, 1 - cache / w))
            for t, c, w, u in ROWS]
    assert fitted(both) == pytest.approx((1.1, -0.008, 0.2, cache, 0.5), rel=1e-6)
    # The uncached share of a network's unblocked weights is all of them where there is no cache term.
    unblocked = [(t, c, w, u, 1.1 * t - 0.008 * c + 0.5 * u) for t, c, w, u in ROWS]
    assert fitted(unblocked) == pytest.approx((1.1, -0.008, 0.0, 0.0, 0.5), rel=1e-6)
    cached = [(t, c, w, u, 1.1 * t - 0.008 * c + 0.2 * max(0.0, w - cache)) for t, c, w, u in ROWS]
    assert fitted(cached) == pytest.approx((1.1, -0.008, 0.2, cache, 0.0), rel=1e-6)
    # No such costs: two terms.
    exact = [(t, c, w, u, 1.1 * t - 0.008 * c) for t, c, w, u in ROWS]
    assert fitted(exact) == pytest.approx((1.1, -0.008, 0.0, 0.0, 0.0), rel=1e-9)
    # Noise a third term fits no better out of sample than two terms do: left out. (Not every
    # noise: out of 40 draws of 24 networks with +-3% noise, 10-13 kept a term, improving the
    # leave-one-out error by up to 19%; on this machine's builds the two terms improve it by 21-39%.)
    noisy = [(t, c, w, 0.0, (1.1 * t - 0.008 * c) * (1.03 if index % 2 else 0.97))
             for index, (t, c, w, _) in enumerate(ROWS[:6])]
    assert fitted(noisy)[2:] == (0.0, 0.0, 0.0)
    assert fitted(cached[:5])[2:] == (0.0, 0.0, 0.0)  # five networks: too few for three terms


def test_prediction_is_scale_times_sum_plus_per_component_cost():
    config = ShuffleNetConfig.from_width(3, 0.5, stage_depths=(2, 3, 2))
    keys = component_keys(config)
    lut = LatencyLUT(device={}, entries={key: entry_ms(key) for key in keys}, settings={}, scale=1.25,
                     per_component_ms=-0.01, constant_ms=0.3)
    total = sum(entry_ms(key) for key in keys)
    assert lut.sum_ms(config) == pytest.approx(total, rel=1e-12)
    assert lut.predict(config) == pytest.approx(1.25 * total - 0.01 * len(keys) + 0.3, rel=1e-12)
    assert lut.to_dict()["overhead"] == {"scale": 1.25, "per_component_ms": -0.01, "beyond_cache_ms_per_mparam": 0.0,
                                         "cache_mparams": 0.0, "unblocked_ms_per_mparam": 0.0, "constant_ms": 0.3}
    assert LatencyLUT(device={}, entries=lut.entries, settings={}).predict(config) == pytest.approx(total, rel=1e-12)


def test_predictions_are_positive_and_grow_with_depth(synthetic_lut):
    lut, _ = synthetic_lut
    for config in SMALL_SPACE.samples(50, seed=7):
        assert lut.predict(config) > 0
        for stage in range(config.num_stages):
            depths = list(config.stage_depths)
            depths[stage] += 1
            deeper = config.replace(stage_depths=tuple(depths))
            added = list((Counter(component_keys(deeper)) - Counter(component_keys(config))).elements())
            assert len(added) == 1 and added[0].startswith("unit:")
            # One more unit adds exactly its entry (scaled) and one component's cost, a positive amount.
            step = lut.predict(deeper) - lut.predict(config)
            assert step == pytest.approx(lut.scale * lut.entries[added[0]] + lut.per_component_ms, rel=1e-9)
            assert step > 0 and lut.sum_ms(deeper) > lut.sum_ms(config)


def test_table_round_trips_through_its_json_file(synthetic_lut):
    lut, path = synthetic_lut
    data = json.loads(path.read_text())
    assert data["format"] == "shufflenas-latency-lut" and data["version"] == 4
    assert (data["runtime"], data["precision"], data["settings"]["threads"]) == ("onnxruntime", "fp32", 1)
    assert set(data["overhead"]) == {"scale", "per_component_ms", "beyond_cache_ms_per_mparam", "cache_mparams",
                                     "unblocked_ms_per_mparam", "constant_ms"}
    assert data["unblocked_mparams"] == {key: entry_unblocked_params(key) / 1e6 for key in data["entries"]}
    assert data["device"]["kind"] == "synthetic" and data["settings"]["runs"] == 5
    loaded = LatencyLUT.load(path)
    assert loaded.to_dict() == lut.to_dict()
    assert loaded.save(path.with_name("again.json")).read_text() == path.read_text()
    for config in HOLDOUT:
        assert loaded.predict(config) == lut.predict(config)


def test_a_table_names_its_runtime_and_precision_and_is_refused_for_others(synthetic_build, tmp_path):
    table, _ = synthetic_build(runtime="executorch", precision="int8")
    path = table.save(tmp_path / "et-int8.json")
    loaded = LatencyLUT.load(path)
    assert (loaded.runtime, loaded.precision, loaded.threads) == ("executorch", "int8", 1)
    assert loaded.describe() == "executorch int8, 1 thread"
    LatencyEvaluator(None, lut=path, runtime="executorch", precision="int8")  # the terms it was timed in
    for runtime, precision, threads in (("onnxruntime", "int8", 1), ("executorch", "fp32", 1), ("executorch", "int8", 2)):
        with pytest.raises(UserError, match=r"was timed in executorch int8, 1 thread; this asks for"):
            LatencyEvaluator(None, lut=path, runtime=runtime, precision=precision, threads=threads)


def test_a_version_1_table_reads_as_onnxruntime_fp32(synthetic_lut, tmp_path):
    _, path = synthetic_lut
    data = json.loads(path.read_text())
    data["version"] = 1
    del data["runtime"], data["precision"]
    old = tmp_path / "v1.json"
    old.write_text(json.dumps(data))
    loaded = LatencyLUT.load(old)
    assert (loaded.runtime, loaded.precision) == ("onnxruntime", "fp32")
    with pytest.raises(UserError, match="was timed in onnxruntime fp32"):
        loaded.check_matches("onnxruntime", "int8", 1)
    data["version"] = 5
    old.write_text(json.dumps(data))
    with pytest.raises(UserError, match="has version 5"):
        LatencyLUT.load(old)


def test_overhead_fit_recovers_scale_and_per_component_cost():
    """measured = 1.1 * sum - 8 us per component: the fit finds both terms; degenerate or tiny
    calibrations fall back to one scale."""
    from nas.latency.lut import _fit_overhead

    networks = [(0.6, 8), (1.2, 14), (3.0, 10), (5.5, 20), (9.0, 16), (17.0, 24)]
    points = [(total, count, 1.1 * total - 0.008 * count) for total, count in networks]
    scale, per_component = _fit_overhead(points)
    assert scale == pytest.approx(1.1, rel=1e-9) and per_component == pytest.approx(-0.008, rel=1e-6)
    # A positive per-component cost and a scale under 1 come out as exactly.
    other = [(total, count, 0.9 * total + 0.02 * count) for total, count in networks]
    assert _fit_overhead(other) == pytest.approx((0.9, 0.02), rel=1e-9)
    # Three networks are too few for two terms; the same components-to-sum ratio cannot separate them.
    assert _fit_overhead(points[:3])[1] == 0.0
    assert _fit_overhead([(1.0, 10, 1.2), (2.0, 20, 2.4), (3.0, 30, 3.6), (4.0, 40, 4.8)]) == pytest.approx((1.2, 0.0))
    # A two-term fit that would predict a network at under half its sum falls back to one scale.
    steep = [(1.0, 40, 0.2), (2.0, 10, 2.0), (3.0, 12, 3.0), (4.0, 60, 0.8)]
    assert _fit_overhead(steep) == pytest.approx((12 / 52, 0.0))  # sum(s/m) / sum((s/m)**2), s/m = 5, 1, 1, 5
    assert _fit_overhead([]) == (1.0, 0.0)


def test_evaluator_predicts_from_the_table_and_refuses_uncovered_shapes(synthetic_lut):
    lut, path = synthetic_lut
    config = ShuffleNetConfig.from_width(8, 0.5, stage_depths=(2, 3, 1))
    uncovered = ShuffleNetConfig.from_width(2, 1.0)
    assert lut.covers(config) and not lut.covers(uncovered)
    for device in (None, open_device("lut")):  # no device, or the table-only "lut" device
        evaluator = LatencyEvaluator(device, lut=path)
        result = evaluator.latency(config)
        assert result.source == "predicted" and result.median_ms == pytest.approx(lut.predict(config))
        assert result.device == lut.device and evaluator.device_info() == lut.device
        with pytest.raises(DeviceError, match="no entry for") as refused:
            evaluator.latency(uncovered)
        assert not isinstance(refused.value, DeviceUnavailableError)  # that trial fails, the search goes on
    with pytest.raises(DeviceUnavailableError, match="--lut"):
        LatencyEvaluator(open_device("lut"), lut=None).latency(config)


def test_build_and_validate_on_this_host_end_to_end(tmp_path):
    """The real path (ONNX export, the local runner, interleaved rounds) on a tiny space; what
    the numbers are is not asserted, only what the table is made of."""
    space = default_space(groups=(3,), widths=(0.25,), depth_ranges=((1, 2), (1, 2), (1, 2)), input_size=64)
    calibration = sample_distinct(space.sample, 4, seed=1)
    holdout = sample_distinct(space.sample, 2, seed=2, exclude=calibration)
    device = open_device("local")
    lut = build_lut(device, space.covering(), calibration, holdout_configs=holdout,
                    settings=RunSettings(runs=3, warmup=1, rounds=1), space_name=space.name, attempts=1, sessions=1)
    assert set(lut.entries) == {key for config in space.covering() for key in component_keys(config)}
    assert all(value > 0 for value in lut.entries.values()) and len(lut.calibration) == 4
    assert lut.device["kind"] == "local" and lut.device["onnxruntime"]
    # The runner read each entry's layout from the runtime's optimized graph: g3 at 0.25x has 10-20
    # channels per group, which no vector width divides, so every unit has unblocked weights.
    assert set(lut.unblocked_mparams) == set(lut.entries)
    assert all(lut.unblocked_mparams[key] > 0 for key in lut.entries if key.startswith("unit:"))
    loaded = LatencyLUT.load(lut.save(tmp_path / "local.json"))
    for row, config in zip(loaded.holdout, holdout):
        assert row["config"] == config.short_name and row["predicted_ms"] == pytest.approx(loaded.predict(config))
    report = validate_lut(device, loaded, holdout, settings=RunSettings(runs=3, warmup=1))
    assert len(report.rows) == 2 and all(row["measured_ms"] > 0 for row in report.rows)


@pytest.fixture
def validation_device(monkeypatch) -> SyntheticDevice:
    """A synthetic device for validate_lut, which exports whole networks only (recorded, not written)."""
    identities: dict[str, Any] = {}

    def export_for_runtime(config, folder, runtime, precision, *, name):
        identities[f"{name}.onnx"] = config
        return Path(folder) / f"{name}.onnx"

    monkeypatch.setattr(lut_module, "export_for_runtime", export_for_runtime)
    return SyntheticDevice(identities)


def test_validation_retimes_the_calibration_networks_to_tell_a_slower_session_from_a_bad_table(
        synthetic_lut, validation_device):
    table, _ = synthetic_lut
    device = validation_device
    device.speed = 1.25  # the whole device runs 25% slower than when the table was built
    report = validate_lut(device, table, HOLDOUT, settings=RunSettings(runs=3))
    assert report.session_factor == pytest.approx(1.25)
    assert report.within_share == 0  # every prediction 20% short: no table could have known
    corrected = report.corrected()
    assert corrected.within_share == 1 and max(abs(row["error"]) for row in corrected.rows) < 1e-9
    assert report.to_dict()["corrected"]["within_share"] == 1
    assert len(report.rows) == len(HOLDOUT)  # the re-timed calibration networks are not scored
    plain = validate_lut(device, table, HOLDOUT, settings=RunSettings(runs=3), anchors=False)
    assert plain.session_factor is None and plain.corrected().rows == plain.rows


@pytest.mark.parametrize("estimator", ["p10", "best_round_median"])
def test_a_burst_of_load_in_some_rounds_is_left_out_of_the_table_and_its_validation(synthetic_build,
                                                                                     validation_device, estimator):
    # 3 of 5 interleaved rounds run every network 30% slower: more than half of all runs, so a
    # median of all runs is 30% off; the undisturbed runs' 10th percentile and the fastest
    # round's median are the device's speed.
    settings = RunSettings(runs=10, rounds=5)
    robust, device = synthetic_build(bursts=3, settings=settings, estimator=estimator)
    assert robust.estimator == estimator and device.sessions == 2
    assert robust.scale == pytest.approx(SCALE) and robust.per_component_ms == pytest.approx(PER_COMPONENT_MS)
    naive, device = synthetic_build(bursts=3, settings=settings, estimator="median", attempts=1)
    assert naive.estimator == "median" and naive.scale == pytest.approx(1.3 * SCALE)
    bursty = validation_device
    bursty.bursts = 3
    report = validate_lut(bursty, robust, HOLDOUT, settings=settings)  # measured as the table was built
    assert report.within_share == 1 and report.session_factor == pytest.approx(1.0)
    assert all(row["measured_ms"] == pytest.approx(network_ms(config)) for row, config in zip(report.rows, HOLDOUT))


def test_the_estimator_is_stored_with_the_table_and_old_tables_read_as_median(synthetic_lut, tmp_path):
    table, path = synthetic_lut
    assert table.estimator == LatencyLUT.load(path).estimator == "p10"  # the default
    data = json.loads(path.read_text())
    del data["settings"]["estimator"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert LatencyLUT.load(old).estimator == "median"
    assert LatencyLUT.load(old).describe_estimator() == "the median of its runs"
    data["settings"]["estimator"] = "mean"  # a newer or hand-edited table: one clear line, not a KeyError later
    old.write_text(json.dumps(data))
    with pytest.raises(UserError, match="names estimator 'mean', which this shufflenas does not know"):
        LatencyLUT.load(old)
    with pytest.raises(UserError, match="--estimator must be one of p10, best_round_median, median, got 'mean'"):
        build_lut(SyntheticDevice({}), SMALL_SPACE.covering(), CALIBRATION, estimator="mean")


def test_component_keys_follow_the_network():
    config = ShuffleNetConfig.from_width(3, 1.0, stage_depths=(4, 8, 4))
    keys = component_keys(config)
    assert len(keys) == 1 + 16 + 1 and keys[0].startswith("stem:") and keys[-1].startswith("head:")
    assert len(set(keys)) == 1 + 6 + 1  # three stride-2 and three stride-1 shapes


def test_cli_build_validate_and_bad_table(nas, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    done = nas("latency", "validate", "--device", "local", "--lut", str(bad), "--n", "2")
    assert done.returncode == 2 and "not a shufflenas latency lookup table" in done.stderr
    missing = nas("latency", "validate", "--device", "local", "--lut", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_cli_validate_refuses_other_threads_than_the_tables(nas, tmp_path):
    """A table timed at 1 thread judged by runs at 2 would report the thread count's effect as its error."""
    table = LatencyLUT(device={"kind": "local"}, entries={}, settings={"threads": 1}).save(tmp_path / "lut.json")
    done = nas("latency", "validate", "--device", "local", "--lut", str(table), "--threads", "2", "--clock", "wall",
               "--n", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "was timed in onnxruntime fp32, 1 thread; this asks for onnxruntime fp32, 2 threads" in done.stderr


def test_cli_validate_says_so_when_the_calibration_networks_are_the_whole_space(nas, tmp_path):
    from nas.latency.space import load_config_space

    space_file = tmp_path / "space.yaml"
    space_file.write_text("groups: [3]\nbottleneck_ratios: [0.25]\nstage_depths: [[1, 1], [1, 1], [1, 1]]\n"
                          "stem_channels: [24]\n")
    (only,) = {config.to_json(): config for config in load_config_space(space_file, 40_000_000).samples(5, seed=0)}.values()
    table = LatencyLUT(device={"kind": "local"}, entries={}, settings={"threads": 1},
                       calibration=[{"config": only.to_dict(), "measured_ms": 1.0}]).save(tmp_path / "lut.json")
    done = nas("latency", "validate", "--device", "local", "--lut", str(table), "--space", str(space_file),
               "--budget", "40M", "--n", "3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "every config of the space is one of the table's 1 calibration networks" in done.stderr


def test_a_design_space_file_plugs_in(tmp_path, nas):
    from nas.latency.space import load_config_space

    space_file = tmp_path / "space.yaml"
    space_file.write_text("groups: [3, 8]\nbottleneck_ratios: [0.25]\nstage_depths: [[1, 3], [2, 4], [1, 2]]\n"
                          "stem_channels: [24]\n")
    space = load_config_space(space_file, 40_000_000)
    covered = {key for config in space.covering() for key in component_keys(config)}
    samples = list(space.samples(30, seed=3))
    assert all(set(component_keys(config)) <= covered for config in samples)
    bogus = nas("latency", "build-lut", "--device", "local", "--estimator", "mean", "--out", str(tmp_path / "lut.json"))
    assert bogus.returncode == 2 and "--estimator must be one of p10, best_round_median, median" in bogus.stderr
    assert "Traceback" not in bogus.stderr and not (tmp_path / "lut.json").exists()
    too_big = nas("latency", "build-lut", "--device", "local", "--space", str(space_file), "--budget", "40M",
                  "--max-components", "5", "--out", str(tmp_path / "lut.json"))
    assert too_big.returncode == 2 and "distinct unit shapes" in too_big.stderr
    assert not (tmp_path / "lut.json").exists()
    missing = nas("latency", "build-lut", "--device", "local", "--space", str(tmp_path / "none.yaml"),
                  "--out", str(tmp_path / "lut.json"))
    assert missing.returncode == 2 and "none.yaml" in missing.stderr

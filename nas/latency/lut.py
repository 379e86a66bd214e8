"""A latency lookup table per (device, runtime, precision, threads): every distinct unit shape
(plus stem and head) timed on the device in that runtime and precision; a config's latency is
the sum of its entries plus a calibrated overhead. The file names its runtime, precision and
threads, and a search that asks for other ones is refused (:meth:`LatencyLUT.check_matches`).

The overhead is calibrated on whole networks measured in the same session:
``predicted = scale * sum(entries) + per_component_ms * components
+ beyond_cache_ms * max(0, unit_mparams - cache_mparams)
+ unblocked_ms * unblocked_mparams * max(0, 1 - cache_mparams / unit_mparams) + constant_ms``
(the last factor is 1 where there is no beyond-cache term), fitted for the least
squared relative error (``constant_ms`` is 0 today and kept in the file format). Each component
timed alone pays the runtime's fixed cost of one run (binding, dispatch), which a network pays
once, not once per unit: ``per_component_ms`` comes out negative. One scale alone left small
networks over- and large ones under-predicted (80-88% within +-10% here); both terms gave
92-98%. A unit timed alone runs again and again on weights its core's cache keeps; inside a
network whose units' weights together outgrow that cache, they come from further out: the
beyond-cache term.

The unblocked term: ONNX Runtime runs a convolution in its blocked (NCHWc) layout where the
channels allow (for a grouped one on x86, each group's channels a multiple of the vector
width) and as a plain GEMM otherwise. Inside a network that outgrows the cache, units with
plain convs slow down far more (profiled: 1.5x g3's last-stage units 1.26-1.28x their time
alone; the blocked ones of 1.0x g3 and 2.0x g8 0.95-1.02x, their time alone including layout
conversions at their edges that a network mostly skips), by the share of the network's
weights the cache cannot hold, ``1 - cache_mparams / unit_mparams``.
``unblocked_mparams`` comes from the device (:func:`nas.latency.runner.unblocked_conv_params`:
its runtime's own optimized graph), per entry. The cache size (from a grid) and which terms to
keep are chosen together, by leave-one-out error on the calibration networks: a term stays
only where it predicts them better out of sample (README "On-device latency").
"""

from __future__ import annotations

import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.latency.devices import Device
from nas.latency.measure import export_for_runtime, export_module_for_runtime
from nas.latency.timing import ESTIMATORS, RunSettings, Timing, check_estimator, estimate_ms
from shufflenet_core.complexity import complexity
from shufflenet_core.config import ShuffleNetConfig
from shufflenet_core.structure import stem_output_size, unit_specs

__all__ = ["LatencyLUT", "component_keys", "build_lut", "validate_lut", "ValidationReport", "LUT_FORMAT",
           "sample_distinct"]

LUT_FORMAT = "shufflenas-latency-lut"
LUT_VERSION = 4
"""2 added the runtime and precision the table was timed in; a version-1 table was timed in
ONNX Runtime at float32 and is read as such. 3 added the beyond-cache term, 4 the unblocked
term (older tables were fitted without them and are read with none)."""
READABLE_VERSIONS = (1, 2, 3, 4)
CACHE_GRID_MPARAMS = tuple(0.0625 * 2 ** (step / 4) for step in range(33))
"""Cache sizes the beyond-cache term tries, in millions of weights: 0.0625-16 M (0.25-64 MiB
at float32), a quarter octave apart."""


def unit_mparams(config: ShuffleNetConfig) -> float:
    """Millions of weights of the stem and units: what the beyond-cache term counts (the
    classifier, timed alone, already streams its weights once per run, as in a network)."""
    counted = complexity(config)
    return (counted.params - counted.classifier_macs) / 1e6


def _unit_key(spec: Any) -> str:
    return "unit:" + "-".join(str(value) for value in spec.shape_key())


def _stem_key(config: ShuffleNetConfig) -> str:
    return f"stem:{config.in_channels}-{config.stem_channels}-{config.input_size}"


def _head_key(config: ShuffleNetConfig, feature_size: int) -> str:
    return f"head:{config.stage_out_channels[-1]}-{feature_size}-{config.num_classes}"


def component_keys(config: ShuffleNetConfig) -> list[str]:
    """The table entries a config is made of, in network order (units repeat)."""
    specs = list(unit_specs(config))
    feature_size = specs[-1].output_size if specs else stem_output_size(config.input_size)[1]
    return [_stem_key(config), *(_unit_key(spec) for spec in specs), _head_key(config, feature_size)]


@dataclass
class _Component:
    key: str
    module: Any
    input_size: int
    in_channels: int


def _components(configs: Iterable[ShuffleNetConfig], *, fast: bool = True) -> list[_Component]:
    """One module per distinct key; a model is built only for configs that add a new key
    (``fast=False``: the plain build, which torch.export traces for ExecuTorch)."""
    import torch
    from torch import nn

    from shufflenet_core import build_model
    from shufflenet_core.model import ShuffleUnit

    class Head(nn.Module):
        def __init__(self, pool: nn.Module, classifier: nn.Module) -> None:
            super().__init__()
            self.pool, self.classifier = pool, classifier

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.pool(x), 1))

    found: dict[str, _Component] = {}
    for config in configs:
        keys = component_keys(config)
        if all(key in found for key in keys):
            continue
        torch.manual_seed(0)
        specs = list(unit_specs(config))
        for spec, key in zip(specs, keys[1:-1], strict=True):
            if key not in found:  # a unit alone: no need to build the whole network
                found[key] = _Component(key, ShuffleUnit(spec, fast=fast), spec.input_size, spec.in_channels)
        if keys[0] in found and keys[-1] in found:
            continue
        shallow = build_model(config.replace(stage_depths=(1,) * config.num_stages), fast=fast)
        if keys[0] not in found:
            found[keys[0]] = _Component(keys[0], shallow.stem, config.input_size, config.in_channels)
        if keys[-1] not in found:
            size = specs[-1].output_size if specs else stem_output_size(config.input_size)[1]
            found[keys[-1]] = _Component(keys[-1], Head(shallow.pool, shallow.classifier), size,
                                         config.stage_out_channels[-1])
    return list(found.values())


@dataclass
class LatencyLUT:
    device: dict[str, Any]
    entries: dict[str, float]
    settings: dict[str, Any]
    scale: float = 1.0
    constant_ms: float = 0.0
    per_component_ms: float = 0.0
    beyond_cache_ms: float = 0.0
    """ms per million unit weights beyond :attr:`cache_mparams` (0: no such term)."""
    cache_mparams: float = 0.0
    unblocked_ms: float = 0.0
    """ms per million weights of convolutions outside the blocked layout, times the share of
    the network's weights beyond :attr:`cache_mparams` (0: no such term)."""
    unblocked_mparams: dict[str, float] = field(default_factory=dict)
    """Per entry, millions of weights its convolutions have outside the runtime's blocked layout
    on the device (entries the device did not say are left out)."""
    calibration: list[dict[str, Any]] = field(default_factory=list)
    holdout: list[dict[str, Any]] = field(default_factory=list)
    """Networks measured in the build session but kept out of the fit: a check of the table
    that a later change of load on a shared machine cannot skew (see :func:`build_lut`)."""
    space: str = ""
    created: str = ""
    runtime: str = "onnxruntime"
    precision: str = "fp32"

    @property
    def threads(self) -> int:
        return int(self.settings.get("threads", 1))

    @property
    def estimator(self) -> str:
        """How its timings were reduced to one figure (:data:`nas.latency.timing.ESTIMATORS`);
        tables written before there was a choice used the median."""
        return str(self.settings.get("estimator", "median"))

    def describe_estimator(self) -> str:
        """Each figure's meaning, after "each model's": ``the 10th percentile of its runs``."""
        return check_estimator(self.estimator).description

    def latency_ms(self, timing: Timing, rounds: int) -> float:
        """A timing of this table's device in this table's terms (a validation must compare like with like)."""
        return estimate_ms(timing, self.estimator, rounds)

    def describe(self) -> str:
        """What the table was timed in: ``onnxruntime int8, 1 thread``."""
        return f"{self.runtime} {self.precision}, {self.threads} thread{'s' if self.threads != 1 else ''}"

    def check_matches(self, runtime: str, precision: str, threads: int, *, path: object = "the lookup table") -> None:
        """One clear line when the table was timed in other terms than a search asks for: a
        float32 table says nothing about int8 latency, nor one thread about four."""
        if (self.runtime, self.precision, self.threads) != (runtime, precision, threads):
            raise UserError(
                f"{path} was timed in {self.describe()}; this asks for {runtime} {precision}, {threads} "
                f"thread{'s' if threads != 1 else ''} (build one with nas latency build-lut --runtime {runtime} "
                f"--precision {precision} --threads {threads})"
            )

    def missing(self, config: ShuffleNetConfig) -> list[str]:
        return sorted({key for key in component_keys(config) if key not in self.entries})

    def covers(self, config: ShuffleNetConfig) -> bool:
        return not self.missing(config)

    def sum_ms(self, config: ShuffleNetConfig) -> float:
        missing = self.missing(config)
        if missing:
            raise UserError(f"the lookup table has no entry for {missing[0]} (+{len(missing) - 1} more) of "
                            f"{config.short_name}; rebuild it with a --space that contains this config")
        return sum(self.entries[key] for key in component_keys(config))

    def predict(self, config: ShuffleNetConfig) -> float:
        """Predicted latency (ms, the table's :attr:`estimator` of its runs): sum of entries + calibrated overhead."""
        components = len(component_keys(config))
        predicted = self.sum_ms(config) * self.scale + self.per_component_ms * components + self.constant_ms
        if self.beyond_cache_ms:
            predicted += self.beyond_cache_ms * max(0.0, unit_mparams(config) - self.cache_mparams)
        if self.unblocked_ms:
            predicted += self.unblocked_ms * self.exposed_unblocked_mparams(config)
        return predicted

    def exposed_unblocked_mparams(self, config: ShuffleNetConfig) -> float:
        """Millions of a config's unblocked weights the cache cannot hold: its entries'
        :attr:`unblocked_mparams` times the share of its weights beyond the cache (all of
        them where the table has no beyond-cache term)."""
        return self.unblocked_weights(config) * _uncached_share(unit_mparams(config),
                                                                self.cache_mparams if self.beyond_cache_ms else 0.0)

    def unblocked_weights(self, config: ShuffleNetConfig) -> float:
        """Millions of weights a config's entries run outside the runtime's blocked layout."""
        return sum(self.unblocked_mparams.get(key, 0.0) for key in component_keys(config))

    def describe_overhead(self) -> str:
        constant = f" {self.constant_ms:+.3f} ms" if self.constant_ms else ""
        cache = (f" +{self.beyond_cache_ms:.3f} ms per M unit weights beyond {self.cache_mparams:.2f} M"
                 if self.beyond_cache_ms else "")
        if self.unblocked_ms:
            cache += f" +{self.unblocked_ms:.3f} ms per uncached M unblocked weights"
        return (f"x{self.scale:.3f} {1000 * self.per_component_ms:+.1f} us per component{cache}{constant} "
                f"(from {len(self.calibration)} networks)")

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LUT_FORMAT, "version": LUT_VERSION, "created": self.created, "space": self.space,
            "device": self.device, "runtime": self.runtime, "precision": self.precision, "settings": self.settings,
            "overhead": {"scale": self.scale, "per_component_ms": self.per_component_ms,
                         "beyond_cache_ms_per_mparam": self.beyond_cache_ms, "cache_mparams": self.cache_mparams,
                         "unblocked_ms_per_mparam": self.unblocked_ms, "constant_ms": self.constant_ms},
            "calibration": self.calibration, "holdout": self.holdout, "entries": dict(sorted(self.entries.items())),
            "unblocked_mparams": dict(sorted(self.unblocked_mparams.items())),
        }

    def calibration_configs(self) -> list[ShuffleNetConfig]:
        """The networks the overhead was fitted on (a validation must not reuse them)."""
        return [config for _, config in self.calibration_rows()]

    def calibration_rows(self) -> list[tuple[dict[str, Any], ShuffleNetConfig]]:
        """Each calibration row with its config (rows of old tables that stored no config are left out)."""
        return [(row, ShuffleNetConfig.from_dict(row["config"])) for row in self.calibration
                if isinstance(row.get("config"), dict)]

    def holdout_report(self, tolerance: float = 0.10) -> ValidationReport:
        """The held-out networks of the build session, as a validation report."""
        return ValidationReport(tolerance, list(self.holdout))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyLUT:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"lookup table {path} does not exist (make one with 'nas latency build-lut')") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"lookup table {path} is not readable JSON: {error}") from None
        if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
            raise UserError(f"{path} is not a shufflenas latency lookup table")
        if data.get("version") not in READABLE_VERSIONS:
            raise UserError(f"lookup table {path} has version {data.get('version')}; this shufflenas reads "
                            f"version {LUT_VERSION} (rebuild it with 'nas latency build-lut')")
        settings = data.get("settings", {})
        estimator = settings.get("estimator", "median") if isinstance(settings, dict) else None
        if estimator not in ESTIMATORS:
            raise UserError(f"lookup table {path} names estimator {estimator!r}, which this shufflenas does not know "
                            f"({', '.join(ESTIMATORS)}); rebuild it with 'nas latency build-lut'")
        overhead = data.get("overhead", {})
        return cls(device=data.get("device", {}), entries={k: float(v) for k, v in data["entries"].items()},
                   settings=settings, scale=float(overhead.get("scale", 1.0)),
                   constant_ms=float(overhead.get("constant_ms", 0)),
                   per_component_ms=float(overhead.get("per_component_ms", 0)),
                   beyond_cache_ms=float(overhead.get("beyond_cache_ms_per_mparam", 0)),
                   cache_mparams=float(overhead.get("cache_mparams", 0)),
                   unblocked_ms=float(overhead.get("unblocked_ms_per_mparam", 0)),
                   unblocked_mparams={k: float(v) for k, v in data.get("unblocked_mparams", {}).items()},
                   calibration=data.get("calibration", []),
                   holdout=data.get("holdout", []),
                   space=data.get("space", ""), created=data.get("created", ""),
                   runtime=str(data.get("runtime", "onnxruntime")), precision=str(data.get("precision", "fp32")))


def _fit_overhead(points: Sequence[tuple[float, int, float]]) -> tuple[float, float]:
    """(scale, per_component_ms) from (sum, components, measured) triples, minimizing the
    squared *relative* error (the metric the table is judged by).

    Falls back to the scale alone (``sum(s/m) / sum((s/m)**2)``) with fewer than 4 networks or
    when the two-term fit would predict a calibration network at under half its sum.
    """
    usable = [(total, count, measured) for total, count, measured in points if total > 0 and measured > 0]
    if not usable:
        return 1.0, 0.0
    xs = [total / measured for total, _, measured in usable]
    zs = [count / measured for _, count, measured in usable]
    scale_only = sum(xs) / sum(x * x for x in xs)
    if len(usable) < 4:
        return scale_only, 0.0
    xx, xz, zz = sum(x * x for x in xs), sum(x * z for x, z in zip(xs, zs, strict=True)), sum(z * z for z in zs)
    determinant = xx * zz - xz * xz
    if determinant <= 1e-12 * xx * zz:  # every network has the same components-to-sum ratio
        return scale_only, 0.0
    scale = (sum(xs) * zz - sum(zs) * xz) / determinant
    per_component = (sum(zs) * xx - sum(xs) * xz) / determinant
    if any(scale * total + per_component * count < 0.5 * total for total, count, _ in usable):
        return scale_only, 0.0
    return scale, per_component


def _relative_fit(columns: Sequence[Sequence[float]], measured: Sequence[float]) -> tuple[list[float], float]:
    """Coefficients minimizing the squared relative error of ``sum(coef * column)`` against
    ``measured``, and the fit's leave-one-out RMS relative error (each network predicted by the
    fit of the others: the hat matrix's closed form)."""
    import numpy as np

    targets = np.asarray(measured, dtype=float)
    design = np.asarray(columns, dtype=float).T / targets[:, None]
    coef, *_ = np.linalg.lstsq(design, np.ones(len(targets)), rcond=None)
    leverage = np.einsum("ij,ij->i", design @ np.linalg.pinv(design.T @ design), design)
    residuals = (design @ coef - 1) / np.maximum(1 - leverage, 1e-9)
    return [float(value) for value in coef], float(np.sqrt(np.mean(residuals**2)))


def _uncached_share(weights: float, cache: float) -> float:
    """The share of ``weights`` a cache of ``cache`` cannot hold (all of them with no cache)."""
    return max(0.0, 1.0 - cache / weights) if weights > 0 else 0.0


@dataclass(frozen=True)
class _Overhead:
    scale: float
    per_component_ms: float
    beyond_cache_ms: float = 0.0
    cache_mparams: float = 0.0
    unblocked_ms: float = 0.0


def _fit_terms(points: Sequence[tuple[float, int, float, float, float]]) -> _Overhead:
    """The overhead from (sum, components, unit_mparams, unblocked_mparams, measured) rows:
    :func:`_fit_overhead`'s two terms, plus the beyond-cache term (at each grid size), the
    unblocked term, or both, whichever has the least leave-one-out error, where that beats the
    two terms' (an added term fits any points better in sample, not out of it). An added term
    must slow networks down, and no fit may predict a network under half its sum. Chosen
    jointly: the cache size sets the unblocked weights' uncached share."""
    scale, per_component = _fit_overhead([(total, count, measured) for total, count, _, _, measured in points])
    usable = [point for point in points if point[0] > 0 and point[4] > 0]
    if len(usable) < 6 or per_component == 0.0:
        return _Overhead(scale, per_component)
    totals, counts, weights, unblocked, measured = (list(column) for column in zip(*usable, strict=True))
    _, best_error = _relative_fit([totals, counts], measured)
    best = _Overhead(scale, per_component)
    for cache in (None, *CACHE_GRID_MPARAMS):
        extra: list[list[float]] = []
        if cache is not None:
            beyond = [max(0.0, weight - cache) for weight in weights]
            if sum(1 for value in beyond if value > 0) < 3:
                continue  # too few networks outgrow this cache to fit a term on
            extra.append(beyond)
        exposed = [amount * _uncached_share(weight, cache or 0.0) for amount, weight in zip(unblocked, weights, strict=True)]
        choices = [extra] if extra else []
        if sum(1 for value in exposed if value > 0) >= 3 and len(usable) >= 4 + len(extra):
            choices.append([*extra, exposed])
        for columns in choices:
            coef, error = _relative_fit([totals, counts, *columns], measured)
            predictions = [sum(c * column[index] for c, column in zip(coef, [totals, counts, *columns], strict=True))
                           for index in range(len(usable))]
            if min(coef[2:]) <= 0 or any(value < 0.5 * total for value, total in zip(predictions, totals, strict=True)):
                continue
            if error < best_error - 1e-9:  # (exact data: nothing to gain)
                best_error = error
                best = _Overhead(coef[0], coef[1], coef[2] if cache is not None else 0.0, cache or 0.0,
                                 coef[-1] if columns[-1] is exposed else 0.0)
    return best


def build_lut(
    device: Device,
    covering: Iterable[ShuffleNetConfig],
    calibration_configs: Sequence[ShuffleNetConfig],
    *,
    holdout_configs: Sequence[ShuffleNetConfig] = (),
    settings: RunSettings = RunSettings(rounds=5),
    space_name: str = "",
    max_components: int = 2000,
    progress: Callable[[str], None] = lambda message: None,
    max_fit_error: float = 0.05,
    attempts: int = 3,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
    estimator: str = "p10",
    sessions: int = 2,
) -> LatencyLUT:
    """Time every component the covering configs contain, then fit the overhead on whole nets.

    Every timing becomes one figure by ``estimator`` (:func:`nas.latency.timing.estimate_ms`;
    stored in the table, and a validation measures the same way). Everything is timed in
    ``sessions`` sessions, more (up to ``attempts`` in all) while the calibration networks fit
    worse than ``max_fit_error``, and each model's figure is the mean of its sessions within
    :data:`SAME_SPEED` of its fastest (:func:`_combined`): load from other tenants only ever
    slows a run, and a session slowed as a whole still fits well, so one session alone cannot
    tell it (measured: a table from the per-model fastest of two sessions validated at 98.5%
    where the better-fitting of the two gave 92.0%).

    ``holdout_configs`` are timed in the same interleaved session but left out of the fit;
    their errors (``lut.holdout``) judge the table without the drift a shared machine shows
    between sessions (the same networks measured minutes apart moved by up to 20% under CI
    load, all in one direction).
    """
    check_estimator(estimator)  # before anything is exported or timed
    configs = list(covering)
    shapes = len({key for config in configs for key in component_keys(config)})
    if shapes > max_components:
        raise UserError(f"the space has {shapes} distinct unit shapes (more than {max_components}); narrow it "
                        f"(fewer widths, ratios or stems) or raise the limit with --max-components")
    info = device.require_runtime(runtime)
    components = _components(configs, fast=runtime == "onnxruntime")
    held_out = f" and {len(holdout_configs)} held-out" if holdout_configs else ""
    total = len(components) + len(calibration_configs) + len(holdout_configs)
    progress(f"exporting {len(components)} components, {len(calibration_configs)} calibration{held_out} networks "
             f"for {runtime} {precision}")
    with tempfile.TemporaryDirectory(prefix="shufflenas-lut-") as scratch:
        folder = Path(scratch)
        every = max(1, total // 10)

        def exported(index: int, path: Path) -> Path:
            if (index + 1) % every == 0 and index + 1 < total:
                progress(f"exported {index + 1} of {total}")
            return path

        paths = [exported(index, export_module_for_runtime(
                     component.module, folder, f"c{index:05d}", input_size=component.input_size,
                     in_channels=component.in_channels, runtime=runtime, precision=precision))
                 for index, component in enumerate(components)]
        offset = len(components)
        calibration_paths = [exported(offset + index, export_for_runtime(config, folder, runtime, precision,
                                                                         name=f"n{index:03d}"))
                             for index, config in enumerate(calibration_configs)]
        offset += len(calibration_configs)
        holdout_paths = [exported(offset + index, export_for_runtime(config, folder, runtime, precision,
                                                                     name=f"h{index:03d}"))
                         for index, config in enumerate(holdout_configs)]
        table_settings = {**_settings_dict(settings, estimator), "sessions": 0}
        timed: list[list[Timing]] = []
        most = max(1, sessions, attempts)
        while True:
            progress(f"timing them on {device.spec}" + (f" (session {len(timed) + 1})" if timed else ""))
            # The layout is the model's, not the session's: asked once, in the session whose answer is read.
            measured_with = replace(settings, layout=runtime == "onnxruntime" and not timed)
            timed.append(device.measure(paths + calibration_paths + holdout_paths, measured_with))
            table_settings["sessions"] = len(timed)
            lut = _table_from(_combined(timed, estimator, settings.rounds), components, calibration_configs,
                              holdout_configs, info, dict(table_settings), space_name,
                              [timing.unblocked_params for timing in timed[0][: len(components)]])
            lut.runtime, lut.precision = runtime, precision
            error = _fit_error(lut)
            if len(timed) >= most or (len(timed) >= sessions and error <= max_fit_error):
                break
            if len(timed) >= sessions:
                progress(f"the calibration networks fit only within {error:.1%} rms: the device was busy, timing again")
    if error > max_fit_error:
        progress(f"warning: the runs of {len(timed)} sessions fit the calibration networks only within "
                 f"{error:.1%} rms; predictions will be off about as much (build it again when the device is idle)")
    return lut


SAME_SPEED = 0.05
"""Sessions whose figures for a model lie within this share of its fastest ran at the
machine's own speed and are averaged; a slower one was disturbed and is left out."""


def _combined(sessions: list[list[Timing]], estimator: str, rounds: int) -> list[float]:
    """Per model, the mean of its ``estimator`` figures (ms) over the sessions within
    :data:`SAME_SPEED` of its fastest. The fastest alone is biased low for the networks
    whose speed moves most from session to session (those whose weights outgrow the cache:
    3-7% here), since a later session is as likely slower as faster; a session more than 5%
    slower was disturbed (a burst of load, a slowed machine) and says nothing of either. Four
    builds replayed: 98.0-100% within +-10% in all eight validations, against 96.5-100% for
    the fastest alone."""
    combined = []
    for timings in zip(*sessions, strict=True):
        figures = [estimate_ms(timing, estimator, rounds) for timing in timings]
        fastest = min(figures)
        combined.append(statistics.fmean(figure for figure in figures if figure <= fastest * (1 + SAME_SPEED)))
    return combined


def _fit_error(lut: LatencyLUT) -> float:
    """RMS relative error of the fit on its own calibration networks. Large when the session's
    component and network timings disagree (a burst of load on a shared machine); then every
    prediction of that table is off by about as much, so the session is timed again."""
    errors = [(lut.predict(ShuffleNetConfig.from_dict(row["config"])) - row["measured_ms"]) / row["measured_ms"]
              for row in lut.calibration if row["measured_ms"] > 0]
    return math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else 0.0


def _table_from(figures: list[float], components, calibration_configs, holdout_configs, info, settings,
                space_name, unblocked: Sequence[int | None] = ()) -> LatencyLUT:
    """The table from each timed model's figure (ms, in the order timed: components,
    calibration networks, held-out networks) and each component's unblocked weights, where the
    device said (:attr:`Timing.unblocked_params`)."""
    lut = LatencyLUT(device=info, entries={}, settings=settings, space=space_name,
                     created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    lut.entries = {component.key: figure for component, figure in zip(components, figures[: len(components)], strict=True)}
    lut.unblocked_mparams = {component.key: params / 1e6 for component, params in zip(components, unblocked, strict=False)
                             if params is not None}  # () where nothing was said
    points = []
    network_figures = figures[len(components):]
    for config, measured in zip(calibration_configs, network_figures[: len(calibration_configs)], strict=True):
        keys = component_keys(config)
        points.append((lut.sum_ms(config), len(keys), unit_mparams(config), lut.unblocked_weights(config), measured))
        lut.calibration.append({"config": config.to_dict(), "measured_ms": measured,
                                "sum_ms": points[-1][0], "components": len(keys)})
    if points:
        fit = _fit_terms(points)
        lut.scale, lut.per_component_ms, lut.beyond_cache_ms, lut.cache_mparams, lut.unblocked_ms = (
            fit.scale, fit.per_component_ms, fit.beyond_cache_ms, fit.cache_mparams, fit.unblocked_ms)
    for config, measured in zip(holdout_configs, network_figures[len(calibration_configs):], strict=True):
        predicted = lut.predict(config)
        lut.holdout.append({"config": config.short_name, "measured_ms": measured, "predicted_ms": predicted,
                            "error": (predicted - measured) / measured})
    return lut


def _settings_dict(settings: RunSettings, estimator: str) -> dict[str, Any]:
    return {"threads": settings.threads, "warmup": settings.warmup, "runs": settings.runs, "rounds": settings.rounds,
            "clock": settings.effective_clock, "estimator": estimator}


@dataclass(frozen=True)
class ValidationReport:
    tolerance: float
    rows: list[dict[str, Any]]
    session_factor: float | None = None
    """How much slower (> 1) or faster this session ran the table's calibration networks than
    the build session did (median ratio): a shared machine, a phone's thermal state or another
    governor moves every network alike, and no table can foresee that."""

    @property
    def within_share(self) -> float:
        hits = sum(1 for row in self.rows if abs(row["error"]) <= self.tolerance)
        return hits / len(self.rows) if self.rows else 0.0

    def corrected(self) -> ValidationReport:
        """The same rows judged after scaling every prediction by the session factor: what is
        left is the table's own error in this session's speed."""
        factor = self.session_factor or 1.0
        rows = [{**row, "predicted_ms": row["predicted_ms"] * factor,
                 "error": (row["predicted_ms"] * factor - row["measured_ms"]) / row["measured_ms"]} for row in self.rows]
        return ValidationReport(self.tolerance, rows)

    def to_dict(self) -> dict[str, Any]:
        errors = [abs(row["error"]) for row in self.rows]
        summary: dict[str, Any] = {
            "n": len(self.rows), "tolerance": self.tolerance, "within_share": self.within_share,
            "median_abs_error": statistics.median(errors) if errors else None,
            "max_abs_error": max(errors) if errors else None, "session_factor": self.session_factor,
        }
        if self.session_factor is not None:
            corrected = self.corrected()
            summary["corrected"] = {key: value for key, value in corrected.to_dict().items() if key != "rows"}
        return {**summary, "rows": self.rows}


def validate_lut(
    device: Device,
    lut: LatencyLUT,
    configs: Sequence[ShuffleNetConfig],
    *,
    settings: RunSettings = RunSettings(rounds=5),
    tolerance: float = 0.10,
    anchors: bool = True,
) -> ValidationReport:
    """Measure ``configs`` (one session, interleaved rounds) and compare with the table.

    With ``anchors`` the table's calibration networks are timed again in the same session (not
    scored): their median ratio to the build session's timings is the report's session factor.
    """
    for config in configs:
        lut.sum_ms(config)  # fail before measuring anything if the table cannot predict one
    device.require_runtime(lut.runtime)
    anchor_rows = lut.calibration_rows() if anchors else []
    anchor_configs = [config for _, config in anchor_rows]
    with tempfile.TemporaryDirectory(prefix="shufflenas-validate-") as folder:
        paths = [export_for_runtime(config, Path(folder), lut.runtime, lut.precision, name=f"v{index:03d}")
                 for index, config in enumerate(configs)]
        paths += [export_for_runtime(config, Path(folder), lut.runtime, lut.precision, name=f"a{index:03d}")
                  for index, config in enumerate(anchor_configs)]
        timings = device.measure(paths, settings)
    rows = []
    for config, timing in zip(configs, timings[: len(configs)], strict=True):
        measured, predicted = lut.latency_ms(timing, settings.rounds), lut.predict(config)
        rows.append({"config": config.short_name, "measured_ms": measured, "predicted_ms": predicted,
                     "error": (predicted - measured) / measured})
    ratios = [lut.latency_ms(timing, settings.rounds) / row["measured_ms"]
              for (row, _), timing in zip(anchor_rows, timings[len(configs):], strict=True) if row["measured_ms"] > 0]
    return ValidationReport(tolerance, rows, statistics.median(ratios) if ratios else None)


def sample_distinct(sample: Callable[[random.Random], ShuffleNetConfig], count: int, seed: int, *,
                    exclude: Iterable[ShuffleNetConfig] = ()) -> list[ShuffleNetConfig]:
    """``count`` random configs, distinct where the space allows (bounded attempts), none of
    them in ``exclude`` (e.g. the calibration networks, when sampling configs to judge a fit)."""
    rng = random.Random(seed)
    excluded = {config.to_json() for config in exclude}
    chosen: dict[str, ShuffleNetConfig] = {}
    for _ in range(count * 20):
        config = sample(rng)
        if config.to_json() not in excluded:
            chosen.setdefault(config.to_json(), config)
        if len(chosen) == count:
            break
    return list(chosen.values())

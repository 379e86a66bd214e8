"""What the search calls: a config's latency on a device, predicted from a lookup table when
one is given (and covers the config), measured on the device otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.latency.cache import LatencyCache
from nas.latency.devices import Device
from nas.latency.errors import DeviceError
from nas.latency.lut import LatencyLUT
from nas.latency.measure import measure_config
from nas.latency.timing import RunSettings
from shufflenet_core.config import ShuffleNetConfig

__all__ = ["LatencyEvaluator", "LatencyResult"]


@dataclass(frozen=True)
class LatencyResult:
    median_ms: float
    p10_ms: float
    p90_ms: float
    source: str
    """"measured" or "predicted" (from the lookup table)."""
    device: dict[str, Any] = field(default_factory=dict)
    runtime: str = "onnxruntime"
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "source": self.source,
                "device": self.device, "runtime": self.runtime, "precision": self.precision}


class LatencyEvaluator:
    """``LatencyEvaluator(open_device("ssh://pi"), lut=None, threads=1).latency(config)``.

    Latency is in ``runtime`` (onnxruntime, executorch) at ``precision`` (fp32, int8); a table
    timed in other terms is refused. With a table, a covered config is predicted without
    touching the device, in the table's estimator (p10 of the runs for tables built since
    there was a choice: the undisturbed latency; p10/p90 equal the prediction: it has no spread); an uncovered
    one is measured if a device that measures was given (not None, not ``lut``), and fails
    otherwise. Device faults raise
    :class:`DeviceError` with a one-line reason.
    """

    def __init__(
        self,
        device: Device | None,
        lut: LatencyLUT | str | Path | None = None,
        threads: int = 1,
        *,
        runs: int = 50,
        warmup: int = 10,
        cache: LatencyCache | None = None,
        runtime: str = "onnxruntime",
        precision: str = "fp32",
    ) -> None:
        if device is None and lut is None:
            raise DeviceError("latency needs a device, a lookup table, or both")
        self.device = device
        self.lut = LatencyLUT.load(lut) if isinstance(lut, (str, Path)) else lut
        if self.lut is not None:
            self.lut.check_matches(runtime, precision, threads, path=lut if isinstance(lut, (str, Path)) else "the lookup table")
        self.runtime, self.precision = runtime, precision
        self.settings = RunSettings(threads=threads, runs=runs, warmup=warmup)
        self.cache = cache if cache is not None else LatencyCache()

    def device_info(self) -> dict[str, Any]:
        if self.device is not None and (self.device.measures or self.lut is None):
            return self.device.probe()
        return dict(self.lut.device) if self.lut else {}

    def latency(self, config: ShuffleNetConfig) -> LatencyResult:
        predict_only = self.device is None or not self.device.measures
        if self.lut is not None and (predict_only or self.lut.covers(config)):
            try:
                predicted = self.lut.predict(config)
            except UserError as error:  # uncovered and no device to measure on: this trial fails
                raise DeviceError(str(error)) from None
            return LatencyResult(predicted, predicted, predicted, "predicted", dict(self.lut.device), self.runtime,
                                 self.precision)
        return self.measure(config)

    def measure(self, config: ShuffleNetConfig, precision: str | None = None) -> LatencyResult:
        """Time ``config`` on the device, never from the table (``precision``: another than the
        evaluator's, in the same runtime)."""
        if self.device is None:
            raise DeviceError("no device to measure on (a lookup table alone only predicts)")
        precision = precision or self.precision
        measured = measure_config(self.device, config, self.settings, cache=self.cache, runtime=self.runtime,
                                  precision=precision)
        return LatencyResult(measured.median_ms, measured.p10_ms, measured.p90_ms, "measured", measured.device,
                             self.runtime, precision)

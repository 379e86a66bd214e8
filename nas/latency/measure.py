"""Measure a whole config on a device: export to ONNX at batch 1 and deployment resolution,
upload, warm up, time, summarize; results are cached by (device, config, runtime, threads)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.latency.cache import LatencyCache, cache_key
from nas.latency.devices import Device
from nas.latency.timing import RunSettings, Stats, summarize
from shufflenet_core.config import ShuffleNetConfig

__all__ = ["PRECISIONS", "RUNTIMES", "Measurement", "check_runtime", "export_config", "export_for_runtime",
           "measure_config", "export_module"]

RUNTIMES = ("onnxruntime", "executorch")
PRECISIONS = ("fp32", "int8")
INT8_CALIBRATION_IMAGES = 16
"""Random inputs that set int8 ranges for timing: the values do not change the work done."""


def check_runtime(runtime: str, precision: str) -> None:
    """One clear line for an unknown runtime or precision (before anything runs)."""
    from nas.errors import UserError

    if runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime == "executorch":
        from nas.export.executorch import require_executorch

        require_executorch()


@dataclass(frozen=True)
class Measurement:
    median_ms: float
    p10_ms: float
    p90_ms: float
    spread: float
    runs: int
    threads: int
    device: dict[str, Any]
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_module(module: Any, path: Path, *, input_size: int, in_channels: int) -> Path:
    """One ONNX file for a module at batch 1. The legacy exporter: ~0.3 s instead of ~3 s,
    and its graph (BN folded by ONNX Runtime, grouped Conv nodes) is what a board runs."""
    from shufflenet_core.onnx_export import export_onnx

    try:
        return export_onnx(module, path, input_size=input_size, in_channels=in_channels, batch_size=1,
                           exporter="legacy")
    except Exception:  # a torch without the legacy exporter: the current one gives the same graph
        return export_onnx(module, path, input_size=input_size, in_channels=in_channels, batch_size=1)


def export_config(config: ShuffleNetConfig, path: Path) -> Path:
    import torch

    from shufflenet_core import build_model

    torch.manual_seed(0)
    model = build_model(config)
    return export_module(model, path, input_size=config.input_size, in_channels=config.in_channels)


def export_for_runtime(config: ShuffleNetConfig, folder: Path, runtime: str = "onnxruntime", precision: str = "fp32") -> Path:
    """The file ``runtime`` runs for ``config`` at batch 1 and deployment resolution (fixed
    seed); int8 ranges come from random inputs, since timing does not depend on them."""
    import numpy as np

    if runtime == "onnxruntime":
        path = export_config(config, folder / "model.onnx")
        if precision == "fp32":
            return path
        from nas.export.quantize import EvaluationImages, quantize_onnx

        shape = (INT8_CALIBRATION_IMAGES, config.in_channels, config.input_size, config.input_size)
        random = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        quantize_onnx(path, folder / "model.int8.onnx", EvaluationImages(random, None, "random"))
        return folder / "model.int8.onnx"
    import torch

    from nas.export.executorch import write_executorch
    from shufflenet_core import build_model

    torch.manual_seed(0)
    model = build_model(config).eval()
    example = torch.randn(1, config.in_channels, config.input_size, config.input_size)
    calibration = None
    if precision == "int8":
        shape = (INT8_CALIBRATION_IMAGES, config.in_channels, config.input_size, config.input_size)
        calibration = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    path = folder / ("model.int8.pte" if precision == "int8" else "model.pte")
    write_executorch(model, path, example, calibration=calibration)
    return path


def measure_config(
    device: Device,
    config: ShuffleNetConfig,
    settings: RunSettings = RunSettings(),
    *,
    cache: LatencyCache | None = None,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
) -> Measurement:
    """Median/p10/p90 of ``settings.runs`` timed runs of ``config`` on ``device``, in
    ``runtime`` at ``precision``."""
    info = device.require_runtime(runtime)
    keyed = config.to_dict() if (runtime, precision) == ("onnxruntime", "fp32") else {
        **config.to_dict(), "runtime": runtime, "precision": precision, "executorch": info.get("executorch")}
    key = cache_key(info, keyed, settings.threads)
    if cache is not None:
        hit = cache.get(key, min_runs=settings.runs)
        if hit is not None:
            return Measurement(hit["median_ms"], hit["p10_ms"], hit["p90_ms"], hit["spread"], hit["runs"],
                               hit["threads"], info, cached=True)
    with tempfile.TemporaryDirectory(prefix="shufflenas-latency-") as folder:
        model_path = export_for_runtime(config, Path(folder), runtime, precision)
        (timing,) = device.measure([model_path], settings)
    stats: Stats = timing.stats
    result = Measurement(stats.median_ms, stats.p10_ms, stats.p90_ms, stats.spread, stats.runs, settings.threads, info)
    if cache is not None:
        entry = {k: v for k, v in result.to_dict().items() if k not in ("device", "cached")}
        cache.put(key, {**entry, "device_spec": device.spec, "runtime": info.get("onnxruntime")})
    return result


__all__ += ["summarize"]

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
           "export_module_for_runtime", "measure_config", "export_module"]

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


def export_module_for_runtime(module: Any, folder: Path, name: str, *, input_size: int, in_channels: int,
                              runtime: str = "onnxruntime", precision: str = "fp32") -> Path:
    """The file ``runtime`` runs for ``module`` at batch 1 (``folder/name.onnx`` or ``.pte``,
    ``.int8`` before the suffix for int8). int8 ranges come from seeded random inputs: timing
    does not depend on them."""
    import numpy as np

    shape = (INT8_CALIBRATION_IMAGES, in_channels, input_size, input_size)
    calibration = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) if precision == "int8" else None
    if runtime == "onnxruntime":
        path = export_module(module, folder / f"{name}.onnx", input_size=input_size, in_channels=in_channels)
        if calibration is None:
            return path
        from nas.export.quantize import EvaluationImages, quantize_onnx

        quantize_onnx(path, folder / f"{name}.int8.onnx", EvaluationImages(calibration, None, "random"))
        path.unlink()
        return folder / f"{name}.int8.onnx"
    import torch

    from nas.export.executorch import write_executorch

    path = folder / (f"{name}.int8.pte" if calibration is not None else f"{name}.pte")
    example = torch.randn(1, in_channels, input_size, input_size)
    write_executorch(module.eval(), path, example, calibration=calibration)
    return path


def export_for_runtime(config: ShuffleNetConfig, folder: Path, runtime: str = "onnxruntime", precision: str = "fp32",
                       *, name: str = "model") -> Path:
    """The file ``runtime`` runs for ``config`` at batch 1 and deployment resolution (fixed seed)."""
    import torch

    from shufflenet_core import build_model

    torch.manual_seed(0)
    model = build_model(config).eval()
    return export_module_for_runtime(model, folder, name, input_size=config.input_size,
                                     in_channels=config.in_channels, runtime=runtime, precision=precision)


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

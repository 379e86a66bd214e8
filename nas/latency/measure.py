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

__all__ = ["Measurement", "export_config", "measure_config", "export_module"]


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


def measure_config(
    device: Device,
    config: ShuffleNetConfig,
    settings: RunSettings = RunSettings(),
    *,
    cache: LatencyCache | None = None,
) -> Measurement:
    """Median/p10/p90 of ``settings.runs`` timed runs of ``config`` on ``device``."""
    info = device.require_runtime()
    key = cache_key(info, config.to_dict(), settings.threads)
    if cache is not None:
        hit = cache.get(key, min_runs=settings.runs)
        if hit is not None:
            return Measurement(hit["median_ms"], hit["p10_ms"], hit["p90_ms"], hit["spread"], hit["runs"],
                               hit["threads"], info, cached=True)
    with tempfile.TemporaryDirectory(prefix="shufflenas-latency-") as folder:
        model_path = export_config(config, Path(folder) / "model.onnx")
        (timing,) = device.measure([model_path], settings)
    stats: Stats = timing.stats
    result = Measurement(stats.median_ms, stats.p10_ms, stats.p90_ms, stats.spread, stats.runs, settings.threads, info)
    if cache is not None:
        entry = {k: v for k, v in result.to_dict().items() if k not in ("device", "cached")}
        cache.put(key, {**entry, "device_spec": device.spec, "runtime": info.get("onnxruntime")})
    return result


__all__ += ["summarize"]

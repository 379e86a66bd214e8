"""On-device latency: devices (local, SSH, adb), measurement, lookup tables, budgets.

For the search::

    from nas.latency import LatencyEvaluator, open_device, parse_latency
    evaluator = LatencyEvaluator(open_device("ssh://pi@board"), lut=None, threads=1)
    result = evaluator.latency(config)   # LatencyResult(median_ms, p10_ms, p90_ms, source, device)
    budget_ms = parse_latency("30ms")

Device faults raise :class:`DeviceError` (a ``UserError``) with a one-line reason; its
subclass :class:`DeviceUnavailableError` means no config can be measured (unreachable, refused,
unknown host key, missing runtime), so a search should stop instead of failing every trial.
"""

from __future__ import annotations

from nas.latency.budget import parse_latency
from nas.latency.cache import LatencyCache
from nas.latency.devices import Device, DeviceError, DeviceUnavailableError, RunSettings, Timing, open_device, summarize
from nas.latency.evaluator import LatencyEvaluator, LatencyResult
from nas.latency.lut import LatencyLUT
from nas.latency.measure import Measurement, measure_config

__all__ = [
    "Device",
    "DeviceError",
    "DeviceUnavailableError",
    "LatencyCache",
    "LatencyEvaluator",
    "LatencyLUT",
    "LatencyResult",
    "Measurement",
    "RunSettings",
    "Timing",
    "measure_config",
    "open_device",
    "parse_latency",
    "summarize",
]

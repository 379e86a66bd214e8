"""On-device latency: devices (local, SSH, adb, lut), measurement, lookup tables, budgets.

For the search::

    from nas.latency import LatencyEvaluator, open_device, parse_latency
    evaluator = LatencyEvaluator(open_device("ssh://pi@board"), lut=None, threads=1)
    result = evaluator.latency(config)   # LatencyResult(median_ms, p10_ms, p90_ms, source, device)
    budget_ms = parse_latency("30ms")

Device faults raise :class:`DeviceError` (a ``UserError``) with a one-line reason; its
subclass :class:`DeviceUnavailableError` means no config can be measured (unreachable, refused,
unknown host key, missing runtime), so a search should stop instead of failing every trial.

Layout: errors.py and timing.py (what a device raises, is asked, answers) < devices.py (the
Device interface and the registry: ``register_device``, ``open_device``) < runner_device.py
(runner.py driven over a Python on the device) < kinds/ (one module per kind, each registering
itself; imported here, so every kind is known once nas.latency is). measure.py, lut.py and
evaluator.py use a Device and never import a kind.
"""

from __future__ import annotations

import nas.latency.kinds as _kinds  # noqa: F401  (registers local, ssh, adb, lut: see kinds/__init__.py)
from nas.latency.budget import parse_latency
from nas.latency.cache import LatencyCache
from nas.latency.devices import Device, device_kinds, open_device, register_device
from nas.latency.errors import DeviceError, DeviceUnavailableError
from nas.latency.evaluator import LatencyEvaluator, LatencyResult
from nas.latency.lut import LatencyLUT
from nas.latency.measure import Measurement, measure_config
from nas.latency.timing import RunSettings, Timing, summarize

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
    "device_kinds",
    "measure_config",
    "open_device",
    "parse_latency",
    "register_device",
    "summarize",
]

"""The adb device kind lives in nas/latency/kinds/adb.py; this module keeps its old import path."""

from __future__ import annotations

from nas.latency.kinds.adb import AdbDevice, parse_perf_test_output

__all__ = ["AdbDevice", "parse_perf_test_output"]

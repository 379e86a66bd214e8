"""The local device kind lives in nas/latency/kinds/local.py; this module keeps its old import path."""

from __future__ import annotations

from nas.latency.kinds.local import LocalDevice

__all__ = ["LocalDevice"]

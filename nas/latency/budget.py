"""Latency budgets as users write them: "30ms", "30", "0.03s", "2.5 ms"."""

from __future__ import annotations

import math
import re

from nas.errors import UserError

__all__ = ["parse_latency"]

_LATENCY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|us|µs)?\s*$", re.IGNORECASE)
_TO_MS = {None: 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


def parse_latency(text: str | float | int) -> float:
    """Milliseconds from "30ms", "30" (ms), "0.03s" or "500us"; UserError otherwise.

    >>> parse_latency("0.03s")
    30.0
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), None
    else:
        match = _LATENCY.match(str(text))
        if not match:
            raise UserError(f"latency {text!r} is not a duration; write e.g. 30ms, 30 (ms) or 0.03s")
        value, unit = float(match.group(1)), (match.group(2) or "").lower() or None
    milliseconds = value * _TO_MS[unit]
    if not math.isfinite(milliseconds) or milliseconds <= 0:
        raise UserError(f"latency {text!r} must be a positive duration")
    return milliseconds

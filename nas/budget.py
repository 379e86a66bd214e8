"""FLOP budgets as users write them: "40M", "140M", "524M", "0.6G", "150e6", "140 MFLOPs"."""

from __future__ import annotations

import math
import re

from nas.errors import UserError

__all__ = ["PAPER_BUDGETS", "format_budget", "parse_budget"]

# The paper's three complexity levels (MFLOPs = MACs at 224x224).
PAPER_BUDGETS = ("40M", "140M", "524M")

_PATTERN = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*(?:flops|macs|mflops|gflops)?\s*$", re.IGNORECASE
)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
MAX_BUDGET_MACS = 10**15
"""1,000,000 GFLOPs: far beyond any ShuffleNet at any resolution; larger numbers are typos."""


def parse_budget(text: str) -> int:
    """MACs from a budget string; a bare number below 10,000 is read as millions (MFLOPs)."""
    raw = str(text)
    cleaned = raw.strip().lower().replace("_", "")
    unit_word = ""
    for word in ("mflops", "gflops", "flops", "macs"):
        if cleaned.endswith(word):
            unit_word, cleaned = word, cleaned[: -len(word)].strip()
            break
    match = _PATTERN.match(cleaned)
    if not match:
        raise UserError(f"budget {raw!r} is not a number of FLOPs; write e.g. 40M, 140M, 0.6G or 150e6")
    value = float(match.group(1))
    suffix = match.group(2).lower()
    if unit_word == "mflops" and not suffix:
        suffix = "m"
    elif unit_word == "gflops" and not suffix:
        suffix = "g"
    if not suffix and value < 10_000:
        suffix = "m"  # "140" means 140 MFLOPs, as in the paper's tables
    scaled = value * _SCALE[suffix]
    if not math.isfinite(scaled) or scaled > MAX_BUDGET_MACS:
        raise UserError(f"budget {raw!r} is beyond any network (the limit is {MAX_BUDGET_MACS // 10**9:,}G); write e.g. 140M")
    macs = int(round(scaled))
    if macs <= 0:
        raise UserError(f"budget {raw!r} must be positive; write e.g. 140M")
    return macs


def format_budget(macs: int) -> str:
    """A compact label: 140000000 -> '140M', 600000000 -> '600M', 37590000 -> '37.59M'."""
    millions = macs / 1e6
    return f"{millions:g}M" if millions < 10_000 else f"{macs / 1e9:g}G"

"""Budget strings as users write them."""

from __future__ import annotations

import pytest

from nas.budget import format_budget, parse_budget
from nas.errors import UserError


@pytest.mark.parametrize(
    "text, macs",
    [
        ("40M", 40_000_000), ("140M", 140_000_000), ("524M", 524_000_000), ("0.6G", 600_000_000),
        ("150e6", 150_000_000), ("140", 140_000_000), ("140 MFLOPs", 140_000_000), ("1.5e8", 150_000_000),
        ("38.5m", 38_500_000), ("2000k", 2_000_000), ("0.524 GFLOPs", 524_000_000),
    ],
)
def test_budget_forms(text: str, macs: int) -> None:
    assert parse_budget(text) == macs


@pytest.mark.parametrize(
    "text", ["abc", "0", "0M", "-5M", "", "140X", "M", "1e400", "inf", "-inf", "nan", "1e-400", "1e-9", "2e9G", "1e16"],
)
def test_bad_budgets_are_user_errors(text: str) -> None:
    with pytest.raises(UserError, match="budget"):
        parse_budget(text)


def test_format_budget() -> None:
    assert format_budget(140_000_000) == "140M"
    assert format_budget(37_590_000) == "37.59M"

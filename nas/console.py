"""The console that CLI tables print to."""

from __future__ import annotations

from rich.console import Console

__all__ = ["output_console"]


def output_console(width: int = 160) -> Console:
    """A console at the terminal's width, or ``width`` columns when output is piped (rich
    would otherwise wrap tables at 80)."""
    return Console(width=None if Console().is_terminal else width)

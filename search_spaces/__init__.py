"""Declarative ShuffleNet v1 design spaces and budget-aware sampling."""

from __future__ import annotations

from .design import start_design
from .files import SpaceFileError, load_space
from .sampling import RandomSuggester, knobs_of, sample_configs
from .space import DesignSpace, solve_width, suggest, width_grid

__all__ = [
    "DesignSpace",
    "RandomSuggester",
    "SpaceFileError",
    "knobs_of",
    "load_space",
    "sample_configs",
    "solve_width",
    "start_design",
    "suggest",
    "width_grid",
]

"""The one interface every accuracy evaluator offers to the search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from shufflenet_core import ShuffleNetConfig

__all__ = ["AccuracyEvaluator", "Evaluation", "EpochCallback", "StepCallback"]

EpochCallback = Callable[[int, float], None]
"""Called with (epoch index, validation accuracy) after each epoch; may raise to stop early."""
StepCallback = Callable[[int, int], None]
"""Called with (steps done, total steps) while training, for progress displays."""


@dataclass
class Evaluation:
    """What an evaluator learned about one config."""

    score: float
    """The objective: mean validation accuracy (proxy training) or a zero-cost score."""
    score_std: float | None = None
    per_seed: list[float] = field(default_factory=list)
    learning_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False
    state_dict: dict[str, Any] | None = field(default=None, repr=False)


class AccuracyEvaluator(Protocol):
    name: str
    """Short name stored with each trial, e.g. 'proxy' or 'zero-cost:synflow'."""
    objective_name: str
    """What ``Evaluation.score`` measures: 'accuracy' or e.g. 'synflow'."""

    def spec(self) -> dict[str, Any]:
        """Everything needed to interpret (and rerun) the evaluation: stored in the study."""
        ...

    def evaluate(
        self, config: ShuffleNetConfig, *, on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None
    ) -> Evaluation: ...

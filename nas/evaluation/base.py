"""The one interface every accuracy evaluator offers, and the registry that makes them.

Evaluators are small objects registered by name (timm's ``register_model`` style): the search,
``nas proxy-check`` and the Ray backend create them with :func:`create_evaluator` and call
only what :class:`AccuracyEvaluator` declares, so a new proxy is one new module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from shufflenet_core import ShuffleNetConfig

if TYPE_CHECKING:
    from nas.evaluation.data import Dataset
    from nas.evaluation.training import Recipe

__all__ = [
    "AccuracyEvaluator",
    "EVALUATORS",
    "Evaluation",
    "EvaluatorOptions",
    "EpochCallback",
    "StepCallback",
    "create_evaluator",
    "register_evaluator",
]

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
    placement: dict[str, Any] | None = None
    """Where it trained (:meth:`nas.evaluation.accelerator.Placement.to_dict`); None: no training."""
    int8: dict[str, Any] | None = None
    """The trained model's int8 accuracy (:meth:`nas.evaluation.int8.Int8Accuracy.to_dict`), when asked for."""


class AccuracyEvaluator(Protocol):
    name: str
    """Short name stored with each trial, e.g. 'proxy' or 'zero-cost:synflow'."""
    objective_name: str
    """What ``Evaluation.score`` measures: 'accuracy' or e.g. 'synflow'."""
    accelerator: str
    """Where it trains: ``--accelerator`` as given (see :mod:`nas.evaluation.accelerator`)."""
    train_precision: str
    @property
    def epochs(self) -> int:
        """Training epochs per evaluation (0: no training), so early stopping knows the last one."""
        ...

    def spec(self) -> dict[str, Any]:
        """Everything needed to interpret (and rerun) the evaluation: stored in the study."""
        ...

    def known_seed_sd(self) -> float | None:
        """The measured seed-to-seed spread of the score, when known (None otherwise)."""
        ...

    def dataset(self) -> Dataset:
        """The data it evaluates on, loaded once."""
        ...

    def with_dataset(self, dataset: Dataset | None) -> AccuracyEvaluator:
        """A copy that uses ``dataset`` (None: loads it again when needed), e.g. the copy a
        Ray worker gets from the object store instead of its own disk."""
        ...

    def evaluate(
        self, config: ShuffleNetConfig, *, on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None
    ) -> Evaluation: ...


@dataclass(frozen=True)
class EvaluatorOptions:
    """What the command line says about evaluation, for every evaluator alike."""

    data_spec: str
    recipe: Recipe
    seeds: tuple[int, ...] = (0,)
    keep_weights: bool = False
    method: str = ""
    """The part after the colon, e.g. 'naswot' in 'zero-cost:naswot' ('' for the default)."""
    accelerator: str = "cpu"
    """``--accelerator`` (auto, cpu, cuda, cuda:N, mps), resolved in each training process."""
    train_precision: str = "auto"
    int8_runtime: str | None = None
    """``nas search --precision int8``: also score each trained model quantized for this runtime."""


EvaluatorFactory = Callable[[EvaluatorOptions], AccuracyEvaluator]
EVALUATORS: dict[str, EvaluatorFactory] = {}
"""Evaluator kinds by name: 'proxy', 'zero-cost' (filled by the modules that define them)."""


def register_evaluator(name: str) -> Callable[[EvaluatorFactory], EvaluatorFactory]:
    def register(factory: EvaluatorFactory) -> EvaluatorFactory:
        EVALUATORS[name] = factory
        return factory

    return register


def create_evaluator(text: str, options: EvaluatorOptions) -> AccuracyEvaluator:
    """The evaluator named ``text`` ('proxy', 'zero-cost', 'zero-cost:naswot', ...).

    The built-in kinds register themselves when ``nas.evaluation`` is imported (which any
    import of this module does first).

    Raises ValueError with the known names when ``text`` names none.
    """
    kind, _, method = text.strip().partition(":")
    factory = EVALUATORS.get(kind)
    if factory is None:
        known = ", ".join(f"{name}[:METHOD]" if name == "zero-cost" else name for name in sorted(EVALUATORS))
        raise ValueError(f"unknown evaluator {text!r}; use one of {known}")
    return factory(replace(options, method=method))

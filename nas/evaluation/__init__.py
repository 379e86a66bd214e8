"""How good a candidate is: accuracy evaluators behind one interface, and the data and
training they use.

- :mod:`.base`: the :class:`AccuracyEvaluator` interface and the evaluator registry;
- :mod:`.proxy` (``proxy``): a short, seeded training run on real images;
- :mod:`.zero_cost` (``zero-cost[:synflow|naswot]``): training-free scores;
- :mod:`.data`, :mod:`.training`: data sets and the training recipe;
- :mod:`.proxy_trust`: how far a proxy can be trusted (``nas proxy-check``).
"""

from __future__ import annotations

from nas.evaluation.base import (
    EVALUATORS,
    AccuracyEvaluator,
    Evaluation,
    EvaluatorOptions,
    create_evaluator,
    register_evaluator,
)
from nas.evaluation.proxy import DEFAULT_RECIPE, ProxyTrainingEvaluator
from nas.evaluation.zero_cost import ZeroCostEvaluator

__all__ = [
    "DEFAULT_RECIPE",
    "EVALUATORS",
    "AccuracyEvaluator",
    "Evaluation",
    "EvaluatorOptions",
    "ProxyTrainingEvaluator",
    "ZeroCostEvaluator",
    "create_evaluator",
    "register_evaluator",
]

"""Accuracy evaluators behind one interface (see base.AccuracyEvaluator)."""

from __future__ import annotations

from .base import AccuracyEvaluator, Evaluation
from .proxy import DEFAULT_RECIPE, ProxyTrainingEvaluator
from .zero_cost import ZeroCostEvaluator

__all__ = ["DEFAULT_RECIPE", "AccuracyEvaluator", "Evaluation", "ProxyTrainingEvaluator", "ZeroCostEvaluator"]

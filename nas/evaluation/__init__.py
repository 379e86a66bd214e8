"""Accuracy evaluators behind one interface (see base.AccuracyEvaluator)."""

from __future__ import annotations

from nas.evaluation.base import AccuracyEvaluator, Evaluation
from nas.evaluation.proxy import DEFAULT_RECIPE, ProxyTrainingEvaluator
from nas.evaluation.zero_cost import ZeroCostEvaluator

__all__ = ["DEFAULT_RECIPE", "AccuracyEvaluator", "Evaluation", "ProxyTrainingEvaluator", "ZeroCostEvaluator"]

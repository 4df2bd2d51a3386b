"""Advantage estimators by name (imported lazily: MC pulls in the re-rollout machinery)."""
from __future__ import annotations

import importlib

from algorithms.estimators.base import AdvantageEstimator, Estimate, TrialContext

# name -> "module:Class".  Adding an estimator = one module + one line here.
ESTIMATORS = {
    "gae": "algorithms.estimators.gae:GAEEstimator",
    "td": "algorithms.estimators.td:TDEstimator",
    "mc": "algorithms.estimators.mc:MCEstimator",
    "iql": "algorithms.estimators.iql:IQLEstimator",
    "sarsa": "algorithms.estimators.iql:SarsaEstimator",
    "uniform": "algorithms.estimators.uniform:UniformEstimator",
}


def estimator_class(name: str):
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    module, cls = ESTIMATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_estimator(name: str, ctx: TrialContext) -> AdvantageEstimator:
    return estimator_class(name)(ctx)


__all__ = ["ESTIMATORS", "AdvantageEstimator", "Estimate", "TrialContext", "estimator_class", "make_estimator"]

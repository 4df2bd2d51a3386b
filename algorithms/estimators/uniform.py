"""Zero advantages: every transition weighs the same, so AWR clones the policy's own samples.

This is the self-cloning diagnostic (``python -m orchestrator selfclone``): whatever an estimator later
contributes, a protocol under which uniform-weight AWR already drags the start policy down will collapse it.
(With PPO the clipped objective has no gradient at zero advantage; RECAP sees only negatives.)
"""
from __future__ import annotations

import torch

from algorithms.estimators.base import AdvantageEstimator, Estimate


class UniformEstimator(AdvantageEstimator):
    name = "uniform"

    def estimate(self, rollout, agent) -> Estimate:
        return Estimate(advantages=torch.zeros_like(rollout.rewards))

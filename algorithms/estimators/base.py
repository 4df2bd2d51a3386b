"""The advantage-estimator interface.

An estimator turns a rollout (T x N transitions, optionally with saved simulator states) into
advantages [T, N].  What it needs it declares (``needs_states``) or receives at construction
(:class:`TrialContext`: config, device, env factory, expert policy).  Adding an estimator = one module
with a subclass + one entry in ``algorithms.estimators.ESTIMATORS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from algorithms.rollout import Rollout


@dataclass
class Estimate:
    """advantages [T, N]; returns [T, N] = critic targets where the estimator has a critic;
    diagnostics: scalar metrics (logged under their own names); sim_steps: simulator steps spent."""

    advantages: torch.Tensor
    returns: Optional[torch.Tensor] = None
    q: Optional[torch.Tensor] = None  # [T, N] Q(s_t, a_t) where the estimator has it
    v: Optional[torch.Tensor] = None  # [T, N] V(s_t)
    diagnostics: dict = field(default_factory=dict)
    sim_steps: int = 0


@dataclass
class TrialContext:
    """What a trial hands its estimator.  ``make_env(num_envs, autoreset)`` builds a vector env of the trial's
    task and backend (re-rollout slots); ``expert`` is pi* or None."""

    cfg: object  # FinetuneConfig
    device: torch.device
    make_env: Callable
    expert: Optional[torch.nn.Module] = None
    obs_dim: int = 0
    act_dim: int = 0


class AdvantageEstimator:
    name: str = ""
    needs_states: bool = False  # the rollout must save simulator states (MC re-rollouts)
    has_critic: bool = False  # advantages come from agent.critic, trained on Estimate.returns (GAE, TD(N))

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.cfg = ctx.cfg

    @staticmethod
    def env_slots(cfg) -> Optional[tuple[int, bool]]:
        """(num_envs, autoreset) of the env set this estimator will ask ``ctx.make_env`` for, so the trial can start
        it early; None if it needs none."""
        return None

    def prepare(self, agent) -> None:
        """Called once before the update rule is built (a critic estimator sets ``agent.critic`` up here)."""

    def estimate(self, rollout: Rollout, agent) -> Estimate:
        raise NotImplementedError

    def score(self, rollout: Rollout, agent) -> torch.Tensor:
        """Advantages [T, N] of a rollout the trial does not train on (the quality probe's re-rollouts): what
        :meth:`estimate` would give, without changing the estimator (no training, its random stream untouched)."""
        return self.estimate(rollout, agent).advantages

    def after_update(self, rollout: Rollout, estimate: Estimate, agent) -> dict:
        """Train the estimator's own networks on this batch (GAE's critic, online IQL); returns metrics."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass

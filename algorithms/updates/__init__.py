"""Policy update rules by name."""
from algorithms.updates.awr import AWRUpdate
from algorithms.updates.base import UpdateBatch, UpdateRule
from algorithms.updates.ppo import PPOUpdate
from algorithms.updates.recap import RecapUpdate

UPDATES = {"ppo": PPOUpdate, "awr": AWRUpdate, "recap": RecapUpdate}


def make_update(name: str, cfg, agent, generator, train_critic: bool = False) -> UpdateRule:
    """``train_critic``: the rule also trains ``agent.critic`` on ``UpdateBatch.returns`` (joint critic training)."""
    if name not in UPDATES:
        raise ValueError(f"unknown update rule {name!r}; choose one of {', '.join(UPDATES)}")
    return UPDATES[name](cfg, agent, generator, train_critic=train_critic)


__all__ = ["UPDATES", "UpdateBatch", "UpdateRule", "make_update"]

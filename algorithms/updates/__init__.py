"""Policy update rules by name."""
from algorithms.updates.awr import AWRUpdate
from algorithms.updates.base import UpdateBatch, UpdateRule
from algorithms.updates.ppo import PPOUpdate
from algorithms.updates.recap import RecapUpdate

UPDATES = {"ppo": PPOUpdate, "awr": AWRUpdate, "recap": RecapUpdate}


def make_update(name: str, cfg, agent, generator) -> UpdateRule:
    if name not in UPDATES:
        raise ValueError(f"unknown update rule {name!r}; choose one of {', '.join(UPDATES)}")
    return UPDATES[name](cfg, agent, generator)


__all__ = ["UPDATES", "UpdateBatch", "UpdateRule", "make_update"]

"""EnvFactory on real ManiSkill: an env set started in the background is the one handed over, and one never claimed
is closed with the factory."""
import psutil
import torch

from envs import EnvConfig
from envs.factory import EnvFactory


def _live_descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def test_a_started_env_set_is_handed_over_and_an_unclaimed_one_closes_with_the_factory():
    before = _live_descendants()
    factory = EnvFactory(EnvConfig(num_envs=1, reward_mode="sparse", backend="cpu", num_workers=1))
    factory.start(2, autoreset=False)
    factory.start(3)  # never claimed
    venv = factory(2, autoreset=False)
    try:
        assert venv.num_envs == 2 and venv.config.autoreset is False
        venv.reset(seed=0)
        factory.close()  # closes the 3-env set, not the one handed over
        assert venv.step(torch.zeros(2, 8)).obs.shape == (2, 42)
    finally:
        venv.close()
    assert _live_descendants() - before == set()  # nothing of either env set is left running
    again = factory(1)  # a closed factory still builds on demand
    try:
        assert again.num_envs == 1 and again.config.autoreset is True
    finally:
        again.close()

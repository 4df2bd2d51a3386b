"""EnvFactory on real ManiSkill: an env set started in the background is the one handed over, and one never claimed
is closed with the factory; a trial that fails while setting up leaves none of its env processes running; the gpu
backend starts nothing in the background."""
import threading

import psutil
import pytest
import torch

from algorithms.config import FinetuneConfig
from algorithms.finetune import TRIAL_STATE, run_trial
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


def test_a_trial_failing_after_its_envs_started_closes_them(tmp_path):
    # an MC trial starts two env sets (its own and the re-rollout slots) before it loads a resumed state; a state
    # whose weights do not load fails there, after both started
    ck = "experiments/checkpoints/pickcube"
    cfg = FinetuneConfig(estimator="mc", update="awr", num_envs=1, num_steps=2, num_iterations=2, mc_samples=1, mc_workers=1,
                         expert_checkpoint=f"{ck}/expert.pt", backend="cpu", device="cpu")
    torch.save({"config": cfg.to_dict(), "iteration": 1, "agent": {"not a weight": torch.zeros(1)}}, tmp_path / TRIAL_STATE)
    before = _live_descendants()
    # checked while the error is in hand (its traceback keeps the trial's frames alive): closed by the trial, not
    # by the garbage collector later
    with pytest.raises(RuntimeError, match="state_dict"):
        try:
            run_trial(cfg, tmp_path / "trial", resume_from=tmp_path, cpus=1)
        except RuntimeError:
            assert _live_descendants() - before == set()
            raise


def test_the_gpu_backend_starts_nothing_in_the_background():
    """A gpu-backend env set is built in the caller's thread when it is asked for (here, without a GPU, asking fails
    there, with the backend's own error), never in a background thread beside another."""
    from envs.backend import BackendUnavailable

    factory = EnvFactory(EnvConfig(num_envs=1, reward_mode="sparse", backend="gpu"))
    factory.start(2, autoreset=False)
    assert not [t for t in threading.enumerate() if t.name.startswith("env-start")]
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable):
            factory(2, autoreset=False)
    factory.close()

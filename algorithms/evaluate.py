"""Success-rate evaluation on fixed seeds (SPEC.md: success at any step, deterministic by default)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.vector import VectorEnv


@dataclass
class EvalResult:
    success_rate: float
    episodes: int
    mean_return: float
    mean_length: float
    deterministic: bool

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in self.__dict__.items()}


@torch.no_grad()
def evaluate(
    agent,
    venv: VectorEnv,
    num_episodes: int,
    seed: int = 10_000,
    deterministic: bool = True,
    device="cpu",
    progress=None,
) -> EvalResult:
    """Run ``num_episodes`` episodes with seeds ``seed, seed+1, ...`` (independent of ``venv.num_envs``).

    Episodes run in rounds of ``num_envs``; only envs whose episode is still running are stepped, so a
    success (which terminates the episode) saves simulator time on the cpu backend.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    N = venv.num_envs
    gen = torch.Generator(device=device).manual_seed(seed)
    successes, returns, lengths = [], [], []
    done_eps = 0
    while done_eps < num_episodes:
        n = min(N, num_episodes - done_eps)
        obs = venv.reset(seeds=[seed + done_eps + i for i in range(N)])[:n].to(device)
        alive = torch.ones(n, dtype=torch.bool)
        succ = torch.zeros(n, dtype=torch.bool)
        ret = torch.zeros(n)
        length = torch.zeros(n)
        ids = torch.arange(n)
        while alive.any():
            act = agent.act(obs, deterministic=deterministic, generator=gen)
            step = venv.step(act, env_ids=ids)
            ret[ids] += step.reward.cpu()
            length[ids] += 1
            succ[ids] |= step.success.cpu()
            # success ends an evaluated episode even where the env does not terminate on it
            ended = (step.terminated | step.truncated | step.success).cpu()
            alive[ids[ended]] = False
            keep = ~ended
            ids = ids[keep]
            obs = step.final_obs.to(device)[keep.to(device)]
        successes.append(succ)
        returns.append(ret)
        lengths.append(length)
        done_eps += n
        if progress is not None:
            progress(n)
    s = torch.cat(successes).float()
    return EvalResult(
        success_rate=float(s.mean()),
        episodes=int(s.numel()),
        mean_return=float(torch.cat(returns).mean()),
        mean_length=float(torch.cat(lengths).mean()),
        deterministic=deterministic,
    )


@torch.no_grad()
def evaluate_fixed_steps(
    agent,
    venv: VectorEnv,
    num_slots: int,
    seed: int = 10_000,
    deterministic: bool = True,
    device="cpu",
) -> EvalResult:
    """The reference code's count: ``num_slots`` envs (seeds ``seed, seed+1, ...``, in rounds of ``venv.num_envs``)
    each run ``max_episode_steps`` steps with auto-reset, and every episode that *ends* inside that window counts.

    An env that succeeds early starts a new episode, which counts only if it also ends in time, and it ends in
    time mostly by succeeding: this count leans towards success compared with :func:`evaluate`.
    ``venv`` must auto-reset.
    """
    if num_slots < 1:
        raise ValueError(f"num_slots must be >= 1, got {num_slots}")
    N = venv.num_envs
    gen = torch.Generator(device=device).manual_seed(seed)
    ended_success, returns, lengths = [], [], []
    done = 0
    while done < num_slots:
        n = min(N, num_slots - done)
        obs = venv.reset(seeds=[seed + done + i for i in range(N)])[:n].to(device)
        ids = torch.arange(n)
        succ = torch.zeros(n, dtype=torch.bool)
        ret = torch.zeros(n)
        length = torch.zeros(n)
        for _ in range(venv.config.max_episode_steps):
            step = venv.step(agent.act(obs, deterministic=deterministic, generator=gen), env_ids=ids)
            succ |= step.success.cpu()
            ret += step.reward.cpu()
            length += 1
            ended = (step.terminated | step.truncated).cpu()
            if ended.any():
                ended_success.append(succ[ended].clone())
                returns.append(ret[ended].clone())
                lengths.append(length[ended].clone())
                succ[ended], ret[ended], length[ended] = False, 0.0, 0.0
            obs = step.obs.to(device)
        done += n
    s = torch.cat(ended_success).float() if ended_success else torch.zeros(0)
    return EvalResult(
        success_rate=float(s.mean()) if s.numel() else 0.0,
        episodes=int(s.numel()),
        mean_return=float(torch.cat(returns).mean()) if returns else 0.0,
        mean_length=float(torch.cat(lengths).mean()) if lengths else 0.0,
        deterministic=deterministic,
    )

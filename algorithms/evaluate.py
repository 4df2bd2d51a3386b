"""Success-rate evaluation on fixed seeds (SPEC.md: success at any step, deterministic by default)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from algorithms.agent import actor_payload, agent_from_payload
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


def _rounds(venv: VectorEnv, count: int, seed: int, device, name: str):
    """Seeded resets in rounds of ``venv.num_envs``: yields (n, obs [n, obs_dim]) until ``count`` envs have started;
    env k of the whole evaluation starts from seed ``seed + k``."""
    if count < 1:
        raise ValueError(f"{name} must be >= 1, got {count}")
    N = venv.num_envs
    done = 0
    while done < count:
        n = min(N, count - done)
        yield n, venv.reset(seeds=[seed + done + i for i in range(N)])[:n].to(device)
        done += n


@torch.no_grad()
def evaluate(
    agent,
    venv: VectorEnv,
    num_episodes: int,
    seed: int = 10_000,
    deterministic: bool = True,
    device="cpu",
    progress=None,
    in_workers: bool = False,
) -> EvalResult:
    """Run ``num_episodes`` episodes with seeds ``seed, seed+1, ...`` (independent of ``venv.num_envs``).

    Episodes run in rounds of ``num_envs``; only envs whose episode is still running are stepped, so a
    success (which terminates the episode) saves simulator time on the cpu backend.
    ``in_workers`` (cpu backend): each episode runs start to end inside an env worker process with a copy of the
    actor (:func:`_episodes`), no round trip to this process per step; a stochastic episode k samples from its own
    stream (``seed``, k), so the result does not depend on the process layout (the random stream, and the float
    rounding of the actor's forward, differ from the lockstep path's).  Afterwards the envs are, as after the
    lockstep path, wherever the evaluation left them: callers reset or restore them.
    """
    if in_workers and hasattr(venv, "map_workers"):
        return _evaluate_in_workers(agent, venv, num_episodes, seed, deterministic, progress)
    gen = torch.Generator(device=device).manual_seed(seed)
    successes, returns, lengths = [], [], []
    for n, obs in _rounds(venv, num_episodes, seed, device, "num_episodes"):
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


def _evaluate_in_workers(agent, venv, num_episodes, seed, deterministic, progress) -> EvalResult:
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    size = max(1, math.ceil(num_episodes / (4 * venv.num_workers)))  # about 4 chunks per worker
    chunks = [range(a, min(a + size, num_episodes)) for a in range(0, num_episodes, size)]
    actor = actor_payload(agent)
    payloads = [{"actor": actor, "episodes": list(c), "seed": seed, "deterministic": deterministic} for c in chunks]
    done = None if progress is None else (lambda c: progress(len(chunks[c])))
    rows = torch.from_numpy(np.concatenate(venv.map_workers(_episodes, payloads, progress=done))).float()  # float32 means, as above
    return EvalResult(success_rate=float(rows[:, 0].mean()), episodes=len(rows), mean_return=float(rows[:, 1].mean()),
                      mean_length=float(rows[:, 2].mean()), deterministic=deterministic)


@torch.no_grad()
def _episodes(envs, job: dict):
    """Runs in an env worker process (:meth:`envs.vector.CpuVectorEnv.map_workers`): the listed episodes one after
    another on the worker's first env.  Returns [episodes, 3] numpy rows (success, return, length)."""
    policy = agent_from_payload(job["actor"])
    rows = []
    for k in job["episodes"]:
        gen = torch.Generator().manual_seed(job["seed"] * 1_000_003 + k)
        obs = torch.from_numpy(envs.reset_one(0, job["seed"] + k))
        ret, length, success = 0.0, 0, False
        while True:
            action = policy.act(obs[None], deterministic=job["deterministic"], generator=gen)
            _, reward, term, trunc, succ, final = envs.step_one(0, action, autoreset=False)
            ret, length, success = ret + reward, length + 1, success or succ
            if term or trunc or succ:  # success ends an evaluated episode even where the env does not terminate on it
                break
            obs = torch.from_numpy(final)
        rows.append((float(success), ret, length))
    return np.array(rows, dtype=np.float32).reshape(-1, 3)


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
    gen = torch.Generator(device=device).manual_seed(seed)
    ended_success, returns, lengths = [], [], []
    for n, obs in _rounds(venv, num_slots, seed, device, "num_slots"):
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
    s = torch.cat(ended_success).float() if ended_success else torch.zeros(0)
    return EvalResult(
        success_rate=float(s.mean()) if s.numel() else 0.0,
        episodes=int(s.numel()),
        mean_return=float(torch.cat(returns).mean()) if returns else 0.0,
        mean_length=float(torch.cat(lengths).mean()) if lengths else 0.0,
        deterministic=deterministic,
    )

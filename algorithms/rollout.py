"""Collecting ``num_steps`` x ``num_envs`` transitions from a vector env with a Gaussian policy."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from algorithms.agent import actor_payload, agent_from_payload
from envs.vector import EnvState, VectorEnv


@dataclass
class Rollout:
    """One batch of T x N transitions (tensors on the policy's device, states on CPU).

    obs, next_obs: [T, N, obs_dim]; ``next_obs`` is the true successor (before any auto-reset).
    actions: [T, N, act_dim]; logprobs, values, rewards: [T, N];
    terminated, truncated, success: [T, N] bool;
    states: EnvState with sim [T, N, state_dim], elapsed [T, N] (state *before* each action), if saved;
    last_obs: [N, obs_dim] and last_state: the state after the last step (where the next rollout resumes).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    success: torch.Tensor
    next_obs: torch.Tensor
    states: Optional[EnvState] = None
    last_obs: Optional[torch.Tensor] = None
    last_state: Optional[EnvState] = None

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated

    @property
    def after_autoreset(self) -> torch.Tensor:
        """[T, N] bool: obs[t] is the first observation of an episode that an auto-reset began inside this rollout.
        ManiSkill's plain CPU reset keeps PhysX's contacts, so such an observation still reports the previous
        episode's grasp (is_grasped 1 with the cube on the table); the next step's is right."""
        out = torch.zeros_like(self.dones)
        out[1:] = self.dones[:-1]
        return out

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[1]

    def envs(self, k: int) -> "Rollout":
        """The first ``k`` envs' transitions: every [T, N, ...] field cut to [T, k, ...] (states too)."""
        cut = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                cut[f.name] = None
            elif f.name in ("last_obs", "last_state"):
                cut[f.name] = v[:k]
            else:
                cut[f.name] = v[:, :k]
        return Rollout(**cut)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [T*N, ...]."""
        return x.reshape(-1, *x.shape[2:])


@torch.no_grad()
def collect_rollout(
    agent,
    venv: VectorEnv,
    obs: torch.Tensor,
    num_steps: int,
    device: torch.device,
    save_states: bool = False,
    deterministic: bool = False,
    generator: Optional[torch.Generator] = None,
    in_workers: bool = False,
) -> Rollout:
    """Run ``num_steps`` steps from the current env state, whose observation is ``obs`` [N, obs_dim].

    ``in_workers`` (cpu backend): each env worker process runs its own envs for the whole rollout with a copy of the
    actor (:func:`_rollout_block`), with no round trip to this process per step; log-probs and values are then
    computed here in one batch.  Actions are sampled per env, from a generator seeded by one draw of ``generator``
    and the env's id, so the rollout does not depend on how the envs are spread over processes (it differs from the
    other path's random stream)."""
    if in_workers and hasattr(venv, "map_workers"):
        return _collect_in_workers(agent, venv, obs, num_steps, device, save_states, deterministic, generator)
    T = num_steps
    buf = {k: [] for k in ("obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "success", "next_obs")}
    sims, elapsed = [], []
    obs = obs.to(device)
    for _ in range(T):
        if save_states:
            s = venv.get_state()
            sims.append(s.sim.cpu())
            elapsed.append(s.elapsed.cpu())
        action, logprob = agent.act_and_log_prob(obs, deterministic=deterministic, generator=generator)
        value = agent.get_value(obs)
        step = venv.step(action)
        buf["obs"].append(obs)
        buf["actions"].append(action)
        buf["logprobs"].append(logprob)
        buf["values"].append(value)
        buf["rewards"].append(step.reward.to(device))
        buf["terminated"].append(step.terminated.to(device))
        buf["truncated"].append(step.truncated.to(device))
        buf["success"].append(step.success.to(device))
        buf["next_obs"].append(step.final_obs.to(device))
        obs = step.obs.to(device)
    out = {k: torch.stack(v) for k, v in buf.items()}
    states = EnvState(torch.stack(sims), torch.stack(elapsed)) if save_states else None
    last_state = venv.get_state().to("cpu") if save_states else None
    return Rollout(**out, states=states, last_obs=obs, last_state=last_state)


# per-env action streams: env i of a rollout whose draw is b samples from seed (b + _ENV_STRIDE * i) mod 2**63
_ENV_STRIDE = 1_000_003


def _collect_in_workers(agent, venv, obs, T, device, save_states, deterministic, generator) -> Rollout:
    base = 0
    if generator is not None and not deterministic:
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    actor = actor_payload(agent)
    obs_np = obs.detach().to("cpu", torch.float32).numpy()
    payloads = [{"actor": actor, "obs": obs_np[b.start:b.stop],
                 "first": b.start, "steps": T, "save_states": save_states, "deterministic": deterministic, "seed": base}
                for b in venv.worker_blocks]
    out = venv.map_workers(_rollout_block, payloads)  # payload w: worker w's block

    def cat(key, axis=1):
        return torch.from_numpy(np.concatenate([o[key] for o in out], axis=axis))

    o, a = cat("obs").to(device), cat("actions").to(device)
    flat_o, flat_a = o.reshape(-1, o.shape[-1]), a.reshape(-1, a.shape[-1])
    fields = dict(obs=o, actions=a, logprobs=agent.log_prob(flat_o, flat_a).reshape(T, -1),
                  values=agent.get_value(flat_o).reshape(T, -1), next_obs=cat("next_obs").to(device),
                  **{k: cat(k).to(device) for k in ("rewards", "terminated", "truncated", "success")})
    states = last_state = None
    if save_states:
        states = EnvState(cat("sim"), cat("elapsed"))
        last_state = EnvState(cat("last_sim", 0), cat("last_elapsed", 0))
    return Rollout(**fields, states=states, last_obs=cat("last_obs", 0).to(device), last_state=last_state)


@torch.no_grad()
def _rollout_block(envs, job: dict) -> dict:
    """Runs in an env worker process (:meth:`envs.vector.CpuVectorEnv.map_workers`): ``job["steps"]`` steps
    of that worker's n envs from observations ``job["obs"]`` [n, obs_dim].  Returns numpy arrays: obs, actions,
    next_obs [T, n, ...], rewards, terminated, truncated, success [T, n], last_obs [n, obs_dim] and, with
    ``save_states``, sim [T, n, state_dim], elapsed [T, n], last_sim, last_elapsed."""
    policy = agent_from_payload(job["actor"])
    n = envs.num_envs
    gens = [torch.Generator().manual_seed((job["seed"] + _ENV_STRIDE * (job["first"] + j)) % 2**63) for j in range(n)]
    obs = torch.from_numpy(job["obs"])
    keys = ("obs", "actions", "rewards", "terminated", "truncated", "success", "next_obs", "sim", "elapsed")
    buf = {k: [] for k in keys}
    for _ in range(job["steps"]):
        if job["save_states"]:
            st = envs.get_state()
            buf["sim"].append(st.sim.numpy())
            buf["elapsed"].append(st.elapsed.numpy())
        # one env at a time: a row's action then does not depend on which other envs share its process
        action = torch.cat([policy.act(obs[j : j + 1], deterministic=job["deterministic"], generator=gens[j]) for j in range(n)])
        step = envs.step(action)
        for k, v in (("obs", obs), ("actions", action), ("rewards", step.reward), ("terminated", step.terminated),
                     ("truncated", step.truncated), ("success", step.success), ("next_obs", step.final_obs)):
            buf[k].append(v.numpy())
        obs = step.obs
    out = {k: np.stack(v) for k, v in buf.items() if v}
    out["last_obs"] = obs.numpy()
    if job["save_states"]:
        st = envs.get_state()
        out["last_sim"], out["last_elapsed"] = st.sim.numpy(), st.elapsed.numpy()
    return out

"""Monte-Carlo re-rollout advantages: A(s_t, a_t) = Q(s_t, a_t) - V(s_t), both from M re-rollouts.

Rollout policy: ``expert`` (pi*, the default) or ``current`` (on-policy, no oracle).

* V(s_t) = mean of M returns of re-rollouts that restore s_t, sample the first action from the rollout
  policy and follow it.
* Q(s_t, a_t), ``mc_q=rerollout`` (the reference's scheme): mean of M returns of re-rollouts that restore s_t,
  execute a_t, then follow the rollout policy.  Right for any dynamics.
* Q(s_t, a_t), ``mc_q=transition``: r_t + gamma * V(s_{t+1}) with V(s_{t+1}) from M re-rollouts of the state the
  rollout reached (0 where the transition ended the episode).  Half the re-rollouts, but it reuses the one
  sampled successor, so with stochastic transitions the estimate's variance does not shrink with M (it stays
  unbiased): use it only where the dynamics are deterministic given (s, a).
* Time limit, ``mc_time_limit=reset`` (the reference's): every re-rollout starts its elapsed-step counter at 0,
  i.e. gets a whole episode's steps (the value of a time-unaware policy with the full horizon ahead);
  ``restore`` keeps the rollout's counter (finite-horizon values).  Re-rollouts also stop at termination and
  at the optional horizon cut H.
* All jobs share K env slots: a slot that finishes takes the next job at once, and all slots step together
  (one batched policy forward per step), so work is batched across timesteps, envs and samples.  On the cpu
  backend with ``mc_in_workers`` (default) this loop runs inside each env worker process on its own slots,
  over chunks of the jobs, with a copy of the policy's actor: no round trip to the driver per step.
The straightforward scheme (restore 2M replicas per t, roll the full remaining horizon) is
:func:`naive_mc_advantages`, kept as the reference for tests and ``benchmarks/mc_rerollout.py``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from algorithms import rng
from algorithms.agent import Agent, actor_payload, agent_from_payload
from algorithms.estimators.base import AdvantageEstimator, Estimate, TrialContext
from algorithms.rollout import Rollout
from envs.vector import EnvState, VectorEnv


def horizon_from(cfg) -> Optional[int]:
    """The re-rollout cut H: ``mc_horizon``, or the smallest H with gamma^H < ``mc_tolerance``, or None."""
    hs = []
    if cfg.mc_horizon is not None:
        hs.append(int(cfg.mc_horizon))
    if cfg.mc_tolerance is not None and cfg.gamma < 1:
        hs.append(max(1, math.ceil(math.log(cfg.mc_tolerance) / math.log(cfg.gamma))))
    return min(hs) if hs else None


class RerolloutEngine:
    """Runs re-rollout jobs (restore a state, follow a policy, return the discounted return) on K env slots.

    ``venv`` must have ``autoreset=False``; on the cpu backend the K slots are spread over its worker processes
    (several slots per process); on the gpu backend the K slots are one batched env.
    """

    def __init__(self, venv: VectorEnv, gamma: float, reward_scale: float = 1.0, horizon: Optional[int] = None, warmup: bool = True,
                 in_workers: bool = False, chunks_per_worker: int = 8):
        self.venv, self.gamma, self.reward_scale, self.horizon, self.warmup = venv, gamma, reward_scale, horizon, warmup
        # in_workers: jobs run inside the env worker processes in chunks (see _returns_in_workers)
        self.in_workers, self.chunks_per_worker = in_workers, chunks_per_worker

    @torch.no_grad()
    def returns(
        self,
        states: EnvState,
        policy,
        device,
        deterministic: bool = False,
        generator: Optional[torch.Generator] = None,
        first_actions: Optional[torch.Tensor] = None,
        progress=None,
        first_mask: Optional[torch.Tensor] = None,
        record: bool = False,
    ) -> tuple[torch.Tensor, dict]:
        """One re-rollout per row of ``states`` (sim [J, D], elapsed [J]).  Returns (G [J], stats).

        ``first_actions`` [J, act_dim], if given, is executed first instead of a policy sample (a Q re-rollout),
        for the jobs where ``first_mask`` [J] bool is set (all jobs when it is None).
        stats: ``sim_steps`` (env steps incl. restore warm-ups), ``steps`` (policy steps), ``restores``; with
        ``record``, also ``trajectories``: every job's steps as numpy arrays padded to the longest, obs, actions,
        next_obs [L, J, ...], rewards (before ``reward_scale``), terminated, truncated [L, J] and length [J] (see :class:`TrajectoryRecorder`).
        """
        if self.in_workers and hasattr(self.venv, "map_workers") and isinstance(policy, Agent):
            return self._returns_in_workers(states, policy, deterministic, generator, first_actions, first_mask, progress, record)
        rec = TrajectoryRecorder(len(states)) if record else None
        venv = self.venv
        K = venv.num_envs
        J = states.sim.shape[0]
        G = torch.zeros(J)
        slot_job = torch.full((K,), -1, dtype=torch.long)
        slot_ret = torch.zeros(K)
        slot_disc = torch.ones(K)
        slot_len = torch.zeros(K, dtype=torch.long)
        obs = torch.zeros((K, venv.obs_dim), device=device)
        next_job = 0
        sim_steps = steps = restores = 0
        while True:
            free = torch.nonzero(slot_job < 0).flatten()
            if len(free) and next_job < J:
                take = free[: J - next_job]
                jobs = torch.arange(next_job, next_job + len(take))
                next_job += len(take)
                obs[take] = venv.set_state(states[jobs], env_ids=take, warmup=self.warmup).to(device)
                slot_job[take], slot_ret[take], slot_disc[take], slot_len[take] = jobs, 0.0, 1.0, 0
                restores += len(take)
                if self.warmup:
                    sim_steps += venv.step_cost(len(take))
            active = torch.nonzero(slot_job >= 0).flatten()
            if len(active) == 0:
                break
            o = obs[active]
            action = policy.act(o, deterministic=deterministic, generator=generator)
            if first_actions is not None:
                first = slot_len[active] == 0
                if first_mask is not None:
                    first &= first_mask[slot_job[active]]
                if first.any():
                    action[first.to(action.device)] = first_actions[slot_job[active][first]].to(action.device, action.dtype)
            st = venv.step(action, env_ids=active)
            sim_steps += venv.step_cost(len(active))
            steps += len(active)
            r = st.reward.cpu() * self.reward_scale
            slot_ret[active] += slot_disc[active] * r
            slot_disc[active] *= self.gamma
            slot_len[active] += 1
            obs[active] = st.final_obs.to(device)
            ended = (st.terminated | st.truncated).cpu()
            if self.horizon is not None:
                ended |= slot_len[active] >= self.horizon
            if rec is not None:
                rec.add(slot_job[active], o, action, st.reward.cpu(), st.terminated.cpu(), ended & ~st.terminated.cpu(), st.final_obs)
            done_slots = active[ended]
            G[slot_job[done_slots]] = slot_ret[done_slots]
            slot_job[done_slots] = -1
            if progress is not None and len(done_slots):
                progress(len(done_slots))
        stats = {"sim_steps": sim_steps, "steps": steps, "restores": restores}
        if rec is not None:
            stats["trajectories"] = rec.arrays()
        return G, stats

    def _returns_in_workers(self, states, policy, deterministic, generator, first_actions, first_mask, progress, record=False):
        """:meth:`returns` with the stepping inside the cpu backend's worker processes: the jobs are cut into
        chunks, and each chunk runs this same engine on one worker's own envs with a copy of the policy's actor (no
        round trip to the driver per step); chunk c runs on worker c mod W.  Chunk c samples its actions from a
        generator seeded by the c-th draw of ``generator``.  The result depends on the layout (workers, slots per
        worker), and for a given layout a trial on fresh envs replays bit for bit."""
        venv = self.venv
        J = len(states)
        W = venv.num_workers
        size = max(math.ceil(venv.num_envs / W), math.ceil(J / (W * self.chunks_per_worker)))
        bounds = [(a, min(a + size, J)) for a in range(0, J, size)]
        if generator is not None:
            seeds = torch.randint(0, 2**62, (len(bounds),), generator=generator, device=generator.device).tolist()
        else:
            seeds = [0] * len(bounds)
        # numpy, not tensors, through the pipes (see actor_payload)
        def arr(t):
            return None if t is None else t.detach().to("cpu").numpy()

        actor = actor_payload(policy)
        payloads = [{
            "actor": actor, "sim": arr(states.sim[a:b]),
            "elapsed": arr(states.elapsed[a:b]), "seed": seeds[c], "deterministic": deterministic,
            "first_actions": None if first_actions is None else arr(first_actions[a:b]),
            "first_mask": None if first_mask is None else arr(first_mask[a:b]),
            "gamma": self.gamma, "reward_scale": self.reward_scale, "horizon": self.horizon, "warmup": self.warmup,
            "record": record,
        } for c, (a, b) in enumerate(bounds)]
        done = None if progress is None else (lambda c: progress(bounds[c][1] - bounds[c][0]))
        out = venv.map_workers(_rerollout_chunk, payloads, progress=done)
        G = torch.from_numpy(np.concatenate([g for g, _ in out])) if out else torch.zeros(0)
        stats = {k: sum(st[k] for _, st in out) for k in ("sim_steps", "steps", "restores")}
        if record:
            stats["trajectories"] = TrajectoryRecorder.concat([st["trajectories"] for _, st in out])
        return G, stats


class TrajectoryRecorder:
    """Collects the steps of J re-rollout jobs and pads them into one [L, J] batch, L = the longest job.

    A job's last real step ends its episode (terminated, or truncated at the time limit or the horizon cut); the
    padding after it repeats the final observation with zero action and reward and is flagged truncated, so
    estimators that stop at episode ends (GAE, TD(N)) read only the job's own steps."""

    KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "next_obs")

    def __init__(self, num_jobs: int):
        self.steps = [[] for _ in range(num_jobs)]

    def add(self, jobs, obs, actions, rewards, terminated, truncated, next_obs) -> None:
        """One step of the jobs ``jobs`` [n]: obs, actions, next_obs [n, ...], rewards, terminated, truncated [n]."""
        cols = [x.detach().cpu().numpy() for x in (obs, actions, rewards, terminated, truncated, next_obs)]
        for i, j in enumerate(jobs.tolist()):
            self.steps[j].append(tuple(c[i] for c in cols))

    def arrays(self) -> dict:
        J = len(self.steps)
        L = max((len(s) for s in self.steps), default=0)
        if J == 0 or L == 0:
            return {"length": np.zeros(J, dtype=np.int64)}
        first = next(s[0] for s in self.steps if s)
        out = {k: np.zeros((L, J) + np.shape(v), dtype=np.asarray(v).dtype) for k, v in zip(self.KEYS, first)}
        out["length"] = np.array([len(s) for s in self.steps], dtype=np.int64)
        for j, steps in enumerate(self.steps):
            for t, row in enumerate(steps):
                for k, v in zip(self.KEYS, row):
                    out[k][t, j] = v
        return _pad_after_length(out)

    @staticmethod
    def concat(parts: list) -> dict:
        """Job-wise concatenation of :meth:`arrays` outputs, each padded to the longest."""
        parts = [p for p in parts if len(p["length"])]
        if not parts:
            return {"length": np.zeros(0, dtype=np.int64)}
        L = max(p["obs"].shape[0] for p in parts)
        out = {"length": np.concatenate([p["length"] for p in parts])}
        for k in TrajectoryRecorder.KEYS:
            out[k] = np.concatenate([np.pad(p[k], [(0, L - p[k].shape[0])] + [(0, 0)] * (p[k].ndim - 1)) for p in parts], axis=1)
        return _pad_after_length(out)


def _pad_after_length(tr: dict) -> dict:
    """Fills the rows of each job j after its ``length[j]`` steps (zero-initialised) with the padding rule of
    :class:`TrajectoryRecorder`: the final observation repeated, flagged truncated."""
    L = tr["obs"].shape[0]
    for j, n in enumerate(tr["length"].tolist()):
        if 0 < n < L:
            tr["obs"][n:, j] = tr["next_obs"][n:, j] = tr["next_obs"][n - 1, j]
            tr["truncated"][n:, j] = True
    return tr


def _rerollout_chunk(envs, job: dict):
    """Runs in an env worker process (:meth:`envs.vector.CpuVectorEnv.map_workers`): one chunk of re-rollout
    jobs on that worker's envs.  Returns (G [chunk] numpy, stats)."""
    def tensor(a):
        return None if a is None else torch.from_numpy(a)

    policy = agent_from_payload(job["actor"])
    gen = torch.Generator().manual_seed(job["seed"])
    engine = RerolloutEngine(envs, job["gamma"], job["reward_scale"], job["horizon"], job["warmup"])
    G, stats = engine.returns(EnvState(tensor(job["sim"]), tensor(job["elapsed"])), policy, torch.device("cpu"), job["deterministic"],
                              gen, first_actions=tensor(job["first_actions"]), first_mask=tensor(job["first_mask"]),
                              record=job.get("record", False))
    return G.numpy(), stats


def bootstrap_states(rollout: Rollout) -> EnvState:
    """States whose V is needed: s_0..s_{T-1} of every env, then s_T (after the last step): sim [(T+1)*N, D]."""
    assert rollout.states is not None and rollout.last_state is not None, "MC needs a rollout with saved states"
    sim = torch.cat([rollout.states.sim, rollout.last_state.sim[None]], 0)
    el = torch.cat([rollout.states.elapsed, rollout.last_state.elapsed[None]], 0)
    return EnvState(sim.reshape(-1, sim.shape[-1]), el.reshape(-1))


class MCEstimator(AdvantageEstimator):
    name = "mc"
    needs_states = True

    def __init__(self, ctx: TrialContext):
        super().__init__(ctx)
        if self.cfg.mc_policy == "expert" and ctx.expert is None:
            raise ValueError("mc_policy=expert needs an expert policy (expert_checkpoint)")
        self.horizon = horizon_from(self.cfg)
        self._venv: Optional[VectorEnv] = None
        self.gen = torch.Generator(device=ctx.device).manual_seed(self.cfg.seed + 7)
        # score() draws from its own stream, so probing a trial does not change what it trains on
        self.score_gen = torch.Generator(device=ctx.device).manual_seed(self.cfg.seed + 13)

    @staticmethod
    def env_slots(cfg) -> Optional[tuple[int, bool]]:
        return cfg.mc_workers, False

    def engine(self) -> RerolloutEngine:
        """The re-rollout engine on this estimator's env slots (built on first use, ``mc_workers`` of them)."""
        if self._venv is None:
            self._venv = self.ctx.make_env(*self.env_slots(self.cfg))  # the set the trial may have started
        return RerolloutEngine(self._venv, self.cfg.gamma, self.cfg.reward_scale, self.horizon, in_workers=self.cfg.mc_in_workers)

    def job_states(self, states: EnvState) -> EnvState:
        """Re-rollout start states under ``mc_time_limit`` (reset: elapsed counter 0)."""
        if self.cfg.mc_time_limit == "reset":
            return EnvState(states.sim, torch.zeros_like(states.elapsed))
        return states

    def returns(self, rollout: Rollout, policy, samples: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Optional[torch.Tensor], dict]:
        """Mean re-rollout returns under ``policy`` with M=``samples`` each: (V [T+1, N] of s_0..s_T, or of
        s_0..s_{T-1} with a zero last row under ``mc_q=rerollout``; Q [T, N] of (s_t, a_t) under ``mc_q=rerollout``,
        else None; stats)."""
        T, N = rollout.num_steps, rollout.num_envs
        rerolled_q = self.cfg.mc_q == "rerollout"
        states = bootstrap_states(rollout)
        # s_T is needed only to bootstrap transition-Q, and not where the last transition ended the episode
        need = torch.ones(T + 1, N, dtype=torch.bool)
        need[T] = False if rerolled_q else ~rollout.dones[-1].cpu()
        v_idx = torch.nonzero(need.flatten()).flatten()
        job_idx = v_idx.repeat(samples)
        first_mask = torch.zeros(len(job_idx), dtype=torch.bool)
        first_actions = None
        if rerolled_q:
            q_idx = torch.arange(T * N)  # s_0..s_{T-1}, row-major like bootstrap_states
            job_idx = torch.cat([job_idx, q_idx.repeat(samples)])
            first_mask = torch.cat([first_mask, torch.ones(len(q_idx) * samples, dtype=torch.bool)])
            acts = rollout.flat(rollout.actions).cpu()
            first_actions = torch.cat([torch.zeros(len(v_idx) * samples, acts.shape[-1]), acts.repeat(samples, 1)])
        jobs = self.job_states(states[job_idx])
        G, stats = self.engine().returns(jobs, policy, self.ctx.device, self.cfg.mc_deterministic, generator or self.gen,
                                          first_actions=first_actions, first_mask=first_mask if rerolled_q else None)
        nv = len(v_idx) * samples
        V = torch.zeros((T + 1) * N)
        V[v_idx] = G[:nv].reshape(samples, -1).mean(0)
        Q = G[nv:].reshape(samples, T, N).mean(0) if rerolled_q else None
        stats["jobs"] = len(jobs)
        return V.reshape(T + 1, N), Q, stats

    def estimate_with(self, rollout: Rollout, policy, samples: int, generator: Optional[torch.Generator] = None) -> Estimate:
        V, Q, stats = self.returns(rollout, policy, samples, generator)
        dev = rollout.rewards.device
        V = V.to(dev)
        if Q is None:
            r = rollout.rewards * self.cfg.reward_scale
            q = r + self.cfg.gamma * (~rollout.dones).float() * V[1:]
        else:
            q = Q.to(dev)
        v = V[:-1]
        adv = q - v
        diag = {
            "mc/jobs": stats["jobs"],
            "mc/rerollout_steps": stats["steps"],
            "mc/mean_rerollout_len": stats["steps"] / max(1, stats["jobs"]),
            "mc/q_mean": float(q.mean()),
            "mc/v_mean": float(v.mean()),
        }
        if self.horizon is not None:
            diag["mc/horizon"] = self.horizon
            # sparse reward, terminal on success: at most one reward of reward_scale per episode
            diag["mc/horizon_bias_bound"] = self.cfg.gamma ** self.horizon * abs(self.cfg.reward_scale)
        return Estimate(advantages=adv, returns=q, q=q, v=v, diagnostics=diag, sim_steps=stats["sim_steps"])

    def rollout_policy(self, agent):
        """The policy the re-rollouts follow: the expert under ``mc_policy=expert``, else ``agent``."""
        return self.ctx.expert if self.cfg.mc_policy == "expert" else agent

    def estimate(self, rollout: Rollout, agent) -> Estimate:
        return self.estimate_with(rollout, self.rollout_policy(agent), self.cfg.mc_samples)

    def score(self, rollout: Rollout, agent) -> torch.Tensor:
        return self.estimate_with(rollout, self.rollout_policy(agent), self.cfg.mc_samples, self.score_gen).advantages

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "score_gen": self.score_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "gen" in state:
            rng.restore(self.gen, state["gen"])
        if "score_gen" in state:
            rng.restore(self.score_gen, state["score_gen"])

    def close(self) -> None:
        if self._venv is not None:
            self._venv.close()
            self._venv = None


@torch.no_grad()
def naive_mc_advantages(rollout: Rollout, policy, venv: VectorEnv, samples: int, gamma: float, device, deterministic=False, generator=None, reward_scale=1.0):
    """The straightforward scheme, for comparison: for each t, restore M replicas of every s_t for Q (execute a_t
    first) and M for V, and roll each for the full remaining horizon (to the time limit; rewards masked after
    termination), ``venv.num_envs`` replicas at a time (autoreset off).  Returns (A [T, N], sim_steps)."""
    T, N = rollout.num_steps, rollout.num_envs
    M, K = samples, venv.num_envs
    max_steps = venv.config.max_episode_steps
    sim_steps = 0
    adv = torch.zeros(T, N)
    for t in range(T):
        st = rollout.states[t]
        reps = EnvState(st.sim.repeat(2 * M, 1), st.elapsed.repeat(2 * M))  # rows: M*N Q replicas, then M*N V replicas
        first = rollout.actions[t].to(device).repeat(M, 1)
        ret = torch.zeros(2 * M * N)
        for lo in range(0, 2 * M * N, K):
            rows = torch.arange(lo, min(lo + K, 2 * M * N))
            ids = torch.arange(len(rows))
            obs = venv.set_state(reps[rows], env_ids=ids).to(device)
            sim_steps += len(rows)
            disc = torch.ones(len(rows))
            alive = torch.ones(len(rows), dtype=torch.bool)
            is_q = rows < M * N
            for k in range(int(max_steps - reps.elapsed[rows].min())):
                a = policy.act(obs, deterministic=deterministic, generator=generator)
                if k == 0 and is_q.any():
                    a[is_q.to(a.device)] = first[rows[is_q]]
                s = venv.step(a, env_ids=ids)
                sim_steps += len(rows)
                ret[rows] += disc * s.reward.cpu() * reward_scale * alive
                disc *= gamma
                alive &= ~(s.terminated | s.truncated).cpu()
                obs = s.final_obs.to(device)
        adv[t] = ret[: M * N].reshape(M, N).mean(0) - ret[M * N :].reshape(M, N).mean(0)
    return adv, sim_steps

"""A chain MDP whose Q and V are known exactly: the ground truth for testing estimators.

Cells ``0 .. length-1``; an episode starts in ``start_cell`` (or a uniformly drawn non-goal cell) and
moves one cell right when the 1-D action is > 0, else one cell left (clamped at cell 0).  Entering the
last cell pays reward 1 and terminates; otherwise reward 0.  The episode is truncated when ``elapsed``
reaches ``max_episode_steps`` (H).  State = (cell, elapsed); the observation is the one-hot cell
followed by ``elapsed / H``, so any policy of the observation is a policy of the state.

For a Gaussian policy N(mu(obs), sigma) on the action, p(right | s) = Phi(mu(s) / sigma), and
:func:`exact_values` gets V and Q of every (cell, elapsed) by dynamic programming backwards in time.
The env has the :class:`~envs.vector.VectorEnv` API (batched torch, partial auto-reset, exact state
get/set), so every estimator runs on it unchanged; ``backend == "toy"``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

from envs.vector import EnvState, Step, VectorEnv


@dataclass(frozen=True)
class ChainConfig:
    """``length`` cells (the last is the goal), episodes of at most ``max_episode_steps`` steps.
    ``start_cell`` None: each episode starts in a cell drawn uniformly from the non-goal cells."""

    num_envs: int = 2
    length: int = 5
    max_episode_steps: int = 8
    start_cell: Optional[int] = 0
    autoreset: bool = True
    slip: float = 0.0  # probability that a move goes the other way: stochastic transitions given (s, a)
    env_id: str = "ToyChain-v0"
    control_mode: str = "sign"

    def __post_init__(self):
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.length < 2:
            raise ValueError(f"length must be >= 2 (a start cell and the goal), got {self.length}")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if not 0 <= self.slip < 1:
            raise ValueError(f"slip must be in [0, 1), got {self.slip}")
        if self.start_cell is not None and not 0 <= self.start_cell < self.length - 1:
            raise ValueError(f"start_cell must be a non-goal cell in [0, {self.length - 2}], got {self.start_cell}")

    def replace(self, **changes) -> "ChainConfig":
        d = asdict(self)
        d.update(changes)
        return ChainConfig(**d)


def chain_obs(cell: torch.Tensor, elapsed: torch.Tensor, length: int, horizon: int) -> torch.Tensor:
    """cell, elapsed [B] int -> obs [B, length + 1] float32 (one-hot cell, elapsed / horizon)."""
    obs = torch.zeros(cell.shape[0], length + 1)
    obs[torch.arange(cell.shape[0]), cell.long()] = 1.0
    obs[:, length] = elapsed.float() / horizon
    return obs


def decode_obs(obs: torch.Tensor, length: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """obs [B, length + 1] -> (cell [B] int64, elapsed [B] int64)."""
    cell = obs[:, :length].argmax(-1)
    elapsed = torch.round(obs[:, length] * horizon).long()
    return cell, elapsed


class ChainEnv(VectorEnv):
    backend = "toy"

    def __init__(self, config: ChainConfig):
        self.config = config
        self.num_envs = config.num_envs
        self.device = torch.device("cpu")
        self.obs_dim = config.length + 1
        self.act_dim = 1
        self.state_dim = 1
        self._cell = torch.zeros(self.num_envs, dtype=torch.int64)
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64)
        # one generator per env, so an env's start cells depend only on its own reset seed
        self._gens = [torch.Generator().manual_seed(i) for i in range(self.num_envs)]

    def _start_cell(self, i: int) -> int:
        if self.config.start_cell is not None:
            return self.config.start_cell
        return int(torch.randint(self.config.length - 1, (1,), generator=self._gens[i]))

    def _obs(self, ids: torch.Tensor) -> torch.Tensor:
        return chain_obs(self._cell[ids], self._elapsed[ids], self.config.length, self.config.max_episode_steps)

    def reset(self, seed: Optional[int] = None, seeds: Optional[Sequence[int]] = None) -> torch.Tensor:
        if seeds is None:
            seed = 0 if seed is None else int(seed)
            seeds = [seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        for i, s in enumerate(seeds):
            self._gens[i].manual_seed(int(s))
            self._cell[i] = self._start_cell(i)
            self._elapsed[i] = 0
        return self._obs(torch.arange(self.num_envs))

    def step(self, actions: torch.Tensor, env_ids: Optional[torch.Tensor] = None) -> Step:
        ids = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids, dtype=torch.int64).cpu()
        a = actions.detach().to("cpu", torch.float32).reshape(len(ids), -1)
        if a.shape != (len(ids), 1):
            raise ValueError(f"step got actions of shape {tuple(actions.shape)} for {len(ids)} envs with act_dim 1")
        goal, horizon = self.config.length - 1, self.config.max_episode_steps
        move = torch.where(a[:, 0] > 0, 1, -1)
        if self.config.slip > 0:
            # each env's own generator: a restored state meets fresh slips, so re-rollouts of (s, a) differ
            u = torch.stack([torch.rand((), generator=self._gens[int(i)]) for i in ids])
            move = torch.where(u < self.config.slip, -move, move)
        # clamped at both ends: stepping an ended episode without a reset is meaningless, but must not crash
        self._cell[ids] = (self._cell[ids] + move).clamp(0, goal)
        self._elapsed[ids] += 1
        terminated = self._cell[ids] == goal
        truncated = self._elapsed[ids] >= horizon
        reward = terminated.float()
        final = self._obs(ids)
        obs = final.clone()
        done = terminated | truncated
        if self.config.autoreset and done.any():
            for k in torch.nonzero(done).flatten().tolist():
                i = int(ids[k])
                self._cell[i] = self._start_cell(i)
                self._elapsed[i] = 0
            obs[done] = self._obs(ids[done])
        return Step(obs, reward, terminated, truncated, terminated.clone(), final)

    def get_state(self) -> EnvState:
        return EnvState(self._cell.float()[:, None].clone(), self._elapsed.clone())

    def set_state(self, state: EnvState, env_ids: Optional[torch.Tensor] = None, warmup: bool = True) -> torch.Tensor:
        ids = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids, dtype=torch.int64).cpu()
        if state.sim.shape[0] != len(ids):
            raise ValueError(f"set_state got {state.sim.shape[0]} states for {len(ids)} envs")
        self._cell[ids] = state.sim[:, 0].cpu().round().long()
        self._elapsed[ids] = state.elapsed.cpu().long()
        return self._obs(ids)


def chain_env_factory(config: ChainConfig) -> Callable[..., ChainEnv]:
    """A ``make_env(num_envs, autoreset=True)`` factory, as :class:`~algorithms.estimators.base.TrialContext` takes."""

    def make_env(num_envs: int, autoreset: bool = True) -> ChainEnv:
        return ChainEnv(config.replace(num_envs=num_envs, autoreset=autoreset))

    return make_env


@dataclass
class ChainValues:
    """Exact values of a policy on the chain: ``v`` [length, H + 1], ``q_left``/``q_right`` [length, H + 1],
    ``p_right`` [length, H + 1].  Indexed by (cell, elapsed); the goal cell and elapsed = H are terminal (0)."""

    v: torch.Tensor
    q_left: torch.Tensor
    q_right: torch.Tensor
    p_right: torch.Tensor
    length: int
    horizon: int

    def v_of(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim] -> V [B]."""
        cell, el = decode_obs(obs.cpu(), self.length, self.horizon)
        return self.v[cell, el]

    def q_of(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim], actions [B, 1] -> Q [B]."""
        cell, el = decode_obs(obs.cpu(), self.length, self.horizon)
        right = actions.detach().cpu().reshape(-1) > 0
        return torch.where(right, self.q_right[cell, el], self.q_left[cell, el])


@torch.no_grad()
def exact_values(agent, gamma: float, config: ChainConfig) -> ChainValues:
    """V, Q of the Gaussian policy ``agent`` (``agent.dist(obs)`` with act_dim 1) by backward induction; with
    R(n, e) = [n = goal] + gamma * [n != goal] * V(n, e + 1) and slip probability s:
    Q(c, e, right) = (1 - s) R(c + 1, e) + s R(max(c - 1, 0), e), Q(c, e, left) the mirror,
    V = p_right * Q_right + (1 - p_right) * Q_left."""
    L, H = config.length, config.max_episode_steps
    goal = L - 1
    cells = torch.arange(L).repeat_interleave(H + 1)
    els = torch.arange(H + 1).repeat(L)
    dist = agent.dist(chain_obs(cells, els, L, H).to(next(agent.parameters()).device))
    # P(a > 0) for a ~ N(mu, sigma)
    p = (1 - dist.cdf(torch.zeros_like(dist.mean))).reshape(L, H + 1).cpu().double()
    v = torch.zeros(L, H + 1, dtype=torch.float64)
    ql = torch.zeros_like(v)
    qr = torch.zeros_like(v)
    s = config.slip

    def landing(n: int, e: int) -> float:
        return 1.0 if n == goal else gamma * float(v[n, e + 1])

    for e in reversed(range(H)):
        for c in range(goal):
            up, down = landing(c + 1, e), landing(max(c - 1, 0), e)
            qr[c, e] = (1 - s) * up + s * down
            ql[c, e] = (1 - s) * down + s * up
            v[c, e] = p[c, e] * qr[c, e] + (1 - p[c, e]) * ql[c, e]
    return ChainValues(v.float(), ql.float(), qr.float(), p.float(), L, H)

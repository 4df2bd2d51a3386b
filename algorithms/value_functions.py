"""Value networks Q(s, a) and V(s), their IQL training step, and their checkpoints (``kind="value"``).

Two value checkpoint layouts share the format of :mod:`algorithms.checkpoint`:

* IQL / SARSA (``pretrain-iql``): tensors ``q.*`` (Q: obs ++ action -> 1) and ``v.*`` (V: obs -> 1);
  config records ``value_type="iql"``, ``expectile``, ``gamma``, ``hidden`` and ``dataset_sha256``.
* V-only critic (``pretrain-critic``): tensors ``critic.*``, named so they load into ``Agent.critic``;
  config records ``value_type="critic"``, ``gamma``, ``reward_mode`` and the policy that produced the returns.

All networks are :func:`algorithms.agent.mlp` trunks (three Tanh hidden layers).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn

from algorithms.agent import mlp
from algorithms.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from algorithms.optim import optimizer_step

IQL_KEYS = ("q.0.weight", "q.6.weight", "v.0.weight", "v.6.weight")
CRITIC_KEYS = ("critic.0.weight", "critic.6.weight")


class IQLValues(nn.Module):
    """``q``: [B, obs_dim + act_dim] -> [B, 1]; ``v``: [B, obs_dim] -> [B, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, hidden
        self.q = mlp(obs_dim + act_dim, 1, hidden, out_std=1.0)
        self.v = mlp(obs_dim, 1, hidden, out_std=1.0)

    def q_value(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim], actions [B, act_dim] -> Q(s, a) [B]."""
        return self.q(torch.cat([obs, actions], -1)).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim] -> V(s) [B]."""
        return self.v(obs).squeeze(-1)

    def advantage(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s, a) - V(s) [B]."""
        return self.q_value(obs, actions) - self.value(obs)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric squared loss of ``diff = target - prediction`` [B] -> scalar.

    Weight tau where the target lies above the prediction, 1 - tau below: the minimiser is the
    tau-expectile of the targets (tau = 0.5: the mean; tau -> 1: the maximum)."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


class IQLLearner:
    """One IQL gradient step at a time (Kostrikov et al.): V <- expectile_tau of Q_target(s, a);
    Q <- r + gamma * (1 - terminated) * V(s').  Q_target is a Polyak average of Q.

    Truncated transitions bootstrap from V(s') (the true successor): the time limit is not part of the
    state of the tasks, so it is not an end of the value.  tau = 0.5 makes V the mean of Q over the data's
    actions, i.e. SARSA: the behaviour policy's Q and V."""

    def __init__(self, values: IQLValues, expectile: float, gamma: float, lr: float, target_update_rate: float = 0.005):
        if not 0 < expectile < 1:
            raise ValueError(f"expectile must be in (0, 1), got {expectile}")
        self.values = values
        self.expectile, self.gamma, self.rate = expectile, gamma, target_update_rate
        self.q_target = copy.deepcopy(values.q).requires_grad_(False)
        self.q_opt = torch.optim.Adam(values.q.parameters(), lr=lr)
        self.v_opt = torch.optim.Adam(values.v.parameters(), lr=lr)

    def update(self, obs, actions, rewards, next_obs, terminated) -> dict:
        """One step on a minibatch: obs/next_obs [B, obs_dim], actions [B, act_dim], rewards [B], terminated [B]."""
        vals = self.values
        with torch.no_grad():
            target_q = self.q_target(torch.cat([obs, actions], -1)).squeeze(-1)
        v_loss = expectile_loss(target_q - vals.value(obs), self.expectile)
        optimizer_step(self.v_opt, v_loss, vals.v.parameters(), None)

        with torch.no_grad():
            td_target = rewards + self.gamma * (1.0 - terminated.float()) * vals.value(next_obs)
        q_loss = (vals.q_value(obs, actions) - td_target).pow(2).mean()
        optimizer_step(self.q_opt, q_loss, vals.q.parameters(), None)

        with torch.no_grad():
            for p, tp in zip(vals.q.parameters(), self.q_target.parameters()):
                tp.lerp_(p, self.rate)
        return {"v_loss": v_loss.item(), "q_loss": q_loss.item()}

    def state_dict(self) -> dict:
        return {"values": self.values.state_dict(), "q_target": self.q_target.state_dict(),
                "q_opt": self.q_opt.state_dict(), "v_opt": self.v_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.values.load_state_dict(state["values"])
        self.q_target.load_state_dict(state["q_target"])
        self.q_opt.load_state_dict(state["q_opt"])
        self.v_opt.load_state_dict(state["v_opt"])


def _value_type(ckpt: dict) -> str:
    names = ckpt["model"].keys()
    if all(k in names for k in IQL_KEYS):
        return "iql"
    if all(k in names for k in CRITIC_KEYS):
        return "critic"
    return "unknown"


def save_iql(path, values: IQLValues, *, env_id: str, control_mode: str, config: dict, metrics: Optional[dict] = None) -> str:
    """``config`` must record ``expectile``, ``gamma`` and ``dataset_sha256``; returns the file's sha256."""
    missing = [k for k in ("expectile", "gamma", "dataset_sha256") if k not in config]
    if missing:
        raise ValueError(f"an IQL checkpoint config must record {', '.join(missing)}")
    cfg = dict(config, value_type="iql", hidden=values.hidden)
    return save_checkpoint(path, values.state_dict(), kind="value", obs_dim=values.obs_dim, act_dim=values.act_dim,
                           env_id=env_id, control_mode=control_mode, config=cfg, metrics=metrics)


def load_iql(path, *, obs_dim: Optional[int] = None, act_dim: Optional[int] = None, env_id: Optional[str] = None,
             control_mode: Optional[str] = None, device="cpu") -> tuple[IQLValues, dict]:
    """Returns (IQLValues on ``device``, checkpoint dict); CheckpointError names any mismatch."""
    ckpt = load_checkpoint(path, kind="value", obs_dim=obs_dim, act_dim=act_dim, env_id=env_id, control_mode=control_mode)
    vt = _value_type(ckpt)
    if vt == "critic":
        raise CheckpointError(f"checkpoint {path} is a V-only critic (pretrain-critic); IQL/SARSA need Q and V networks from pretrain-iql")
    if vt != "iql":
        raise CheckpointError(f"checkpoint {path} lacks the IQL tensors {', '.join(IQL_KEYS)}")
    for key in ("expectile", "gamma"):
        if key not in ckpt["config"]:
            raise CheckpointError(f"checkpoint {path} does not record the {key} its values were trained with")
    hidden = int(ckpt["model"]["q.0.weight"].shape[0])
    values = IQLValues(ckpt["obs_dim"], ckpt["act_dim"], hidden)
    try:
        values.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit Q/V networks of obs_dim={ckpt['obs_dim']}, act_dim={ckpt['act_dim']}: {str(e).splitlines()[0]}") from None
    return values.to(device), ckpt


def save_critic(path, critic: nn.Module, *, obs_dim: int, act_dim: int, env_id: str, control_mode: str,
                config: dict, metrics: Optional[dict] = None) -> str:
    """``critic``: an ``mlp(obs_dim, 1)`` like ``Agent.critic``; ``config`` must record ``gamma``."""
    if "gamma" not in config:
        raise ValueError("a critic checkpoint config must record gamma")
    tensors = {f"critic.{k}": v for k, v in critic.state_dict().items()}
    return save_checkpoint(path, tensors, kind="value", obs_dim=obs_dim, act_dim=act_dim, env_id=env_id,
                           control_mode=control_mode, config=dict(config, value_type="critic"), metrics=metrics)


def load_critic_into(agent, path, obs_dim: int, gamma: Optional[float] = None) -> dict:
    """Load a V-only value checkpoint (``pretrain-critic``) into ``agent.critic`` in place (on the agent's device).

    Raises CheckpointError if the file is not a critic, was made for another observation size, does not fit
    the agent's critic network, or (when ``gamma`` is given) was fitted with another discount.
    Returns the checkpoint dict."""
    ckpt = load_checkpoint(path, kind="value", obs_dim=obs_dim)
    vt = _value_type(ckpt)
    if vt == "iql":
        raise CheckpointError(f"checkpoint {path} holds IQL Q/V networks (pretrain-iql), not a V-only critic: make one with pretrain-critic")
    if vt != "critic":
        raise CheckpointError(f"checkpoint {path} lacks the critic tensors {', '.join(CRITIC_KEYS)}")
    saved_gamma = ckpt["config"].get("gamma")
    if gamma is not None and saved_gamma is not None and abs(float(saved_gamma) - gamma) > 1e-9:
        raise CheckpointError(f"checkpoint {path} is a critic for gamma={saved_gamma}, the trial uses gamma={gamma}")
    state = {k[len("critic."):]: v for k, v in ckpt["model"].items() if k.startswith("critic.")}
    try:
        agent.critic.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the agent's critic: {str(e).splitlines()[0]}") from None
    return ckpt

"""Offline value pretraining: IQL/SARSA Q and V from a dataset, and a V-only critic from a policy's MC returns.

* :func:`pretrain_iql` (``pretrain-iql``): Q, V by :class:`~algorithms.value_functions.IQLLearner` on a
  :class:`~algorithms.data.TransitionDataset`; expectile 0.5 = SARSA (the data policy's Q and V).
* :func:`pretrain_critic` (``pretrain-critic``): run a policy (the expert) on the task, compute each
  step's discounted return to the end of its episode, regress V(s) on it.  The result initialises the
  GAE critic (``--gae-critic-checkpoint``).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from algorithms.optim import optimizer_step
from algorithms.pipeline_config import CriticPretrainConfig, IQLPretrainConfig


def pretrain_iql(cfg: IQLPretrainConfig, progress: bool = False) -> Path:
    """Fit Q and V on ``cfg.dataset`` for ``cfg.steps`` minibatch steps; writes ``cfg.out`` (kind "value")."""
    from tqdm import tqdm

    from algorithms.data import TransitionDataset
    from algorithms.value_functions import IQLLearner, IQLValues, save_iql

    data = TransitionDataset(cfg.dataset)  # validated and hash-checked before any training
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    t = data.tensors
    obs, actions = t["obs"].to(device).float(), t["actions"].to(device).float()
    next_obs, terminated = t["next_obs"].to(device).float(), t["terminated"].to(device)
    rewards = t["rewards"].to(device).float() * cfg.reward_scale
    values = IQLValues(data.obs_dim, data.act_dim, cfg.hidden).to(device)
    learner = IQLLearner(values, cfg.expectile, cfg.gamma, cfg.lr, cfg.target_update_rate)
    gen = torch.Generator().manual_seed(cfg.seed)
    recent = {"q_loss": [], "v_loss": []}
    M = len(data)
    for _ in tqdm(range(cfg.steps), desc=f"iql tau={cfg.expectile:g}", unit="step", disable=not progress, mininterval=1.0):
        idx = torch.randint(M, (min(cfg.batch_size, M),), generator=gen).to(device)
        m = learner.update(obs[idx], actions[idx], rewards[idx], next_obs[idx], terminated[idx])
        for k, v in m.items():
            recent[k] = (recent[k] + [v])[-100:]
    with torch.no_grad():
        adv = torch.cat([values.advantage(obs[s : s + 4096], actions[s : s + 4096]) for s in range(0, M, 4096)])
    metrics = {
        "q_loss": sum(recent["q_loss"]) / len(recent["q_loss"]),
        "v_loss": sum(recent["v_loss"]) / len(recent["v_loss"]),
        "advantage_mean": float(adv.mean()),
        "advantage_pos_ratio": float((adv > 0).float().mean()),
        "num_transitions": M,
    }
    config = dict(asdict(cfg), dataset_sha256=data.sha256, dataset_config=data.config)
    save_iql(cfg.out, values, env_id=data.env_id, control_mode=data.control_mode, config=config, metrics=metrics)
    return Path(cfg.out)


def pretrain_critic(cfg: CriticPretrainConfig, progress: bool = False) -> Path:
    """Regress V(s) on discounted MC returns of ``cfg.policy``; writes ``cfg.out`` (kind "value", ``critic.*``)."""
    from tqdm import tqdm

    from algorithms.agent import mlp
    from algorithms.checkpoint import check_policy_fits, load_policy, policy_task
    from algorithms.returns import discounted_returns
    from algorithms.rollout import collect_rollout
    from algorithms.value_functions import save_critic
    from envs.config import EnvConfig
    from envs.vector import make_vector_env

    policy, pck = load_policy(cfg.policy)  # checked before any simulator starts
    label = f"policy {cfg.policy}"
    env_id, control_mode = policy_task(pck, label, "save it with save_policy first")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    env_cfg = EnvConfig(env_id, cfg.num_envs, control_mode, cfg.reward_mode, max_episode_steps=cfg.max_episode_steps, backend=cfg.backend)
    with make_vector_env(env_cfg) as venv:
        check_policy_fits(pck, label, env_id, venv)
        obs0 = venv.reset(seed=cfg.seed * 1_000_003)
        ro = collect_rollout(policy, venv, obs0, cfg.num_steps, torch.device("cpu"), deterministic=cfg.deterministic,
                             generator=torch.Generator().manual_seed(cfg.seed))
    returns, complete = discounted_returns(ro.rewards, ro.terminated, ro.truncated, cfg.gamma)
    if not complete.any():
        raise ValueError(f"no episode ended within num_steps={cfg.num_steps}: raise --num-steps above max_episode_steps={cfg.max_episode_steps}")
    obs = ro.obs[complete].to(device)
    targets = returns[complete].to(device)
    critic = mlp(pck["obs_dim"], 1, out_std=1.0).to(device)  # Agent.critic's architecture, so it loads into one
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    M = obs.shape[0]
    recent = []
    for _ in tqdm(range(cfg.steps), desc="critic", unit="step", disable=not progress, mininterval=1.0):
        idx = torch.randint(M, (min(cfg.batch_size, M),), generator=gen).to(device)
        loss = (critic(obs[idx]).squeeze(-1) - targets[idx]).pow(2).mean()
        optimizer_step(opt, loss, critic.parameters(), None)
        recent = (recent + [loss.item()])[-100:]
    with torch.no_grad():
        pred = critic(obs).squeeze(-1)
        var = targets.var(unbiased=False)
        explained = float(1 - (targets - pred).var(unbiased=False) / var) if var > 0 else float("nan")
    metrics = {
        "value_loss": sum(recent) / len(recent),
        "explained_variance": explained,
        "num_samples": M,
        "return_mean": float(targets.mean()),
        "episodes_ended": int((ro.terminated | ro.truncated).sum()),
        "successes": int(ro.success.sum()),
    }
    config = dict(asdict(cfg), policy_sha256=pck["sha256"])
    save_critic(cfg.out, critic, obs_dim=pck["obs_dim"], act_dim=pck["act_dim"], env_id=env_id,
                control_mode=control_mode, config=config, metrics=metrics)
    return Path(cfg.out)

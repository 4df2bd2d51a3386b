"""PPO from scratch on the dense reward: the pretraining ladder.

Every ``eval_every`` iterations the policy is evaluated (deterministic and stochastic success on fixed
seeds), saved as ``ckpt_<iter>.pt`` and appended to ``ladder.csv``.  ``state.pt`` (agent, optimiser,
counters, RNG) is written at the same time, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import copy
import csv
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from algorithms import rng
from algorithms.agent import Agent
from algorithms.checkpoint import atomic_torch_save, atomic_write_text, save_policy
from algorithms.estimators.gae import gae
from algorithms.evaluate import evaluate
from algorithms.optim import optimizer_step
from algorithms.pipeline_config import PretrainConfig
from algorithms.rollout import collect_rollout
from algorithms.updates.ppo import ppo_loss
from envs.config import EnvConfig
from envs.vector import make_vector_env

LADDER_FIELDS = ["iteration", "env_steps", "wall_time", "success_det", "success_stoch", "eval_episodes", "checkpoint"]


def _at_logstd(agent: Agent, logstd: Optional[float]) -> Agent:
    """``agent`` itself, or a copy whose log-std is ``logstd`` (the trained agent is left as it is)."""
    if logstd is None:
        return agent
    return copy.deepcopy(agent).set_logstd(logstd)


def terminal_mask(terminated: torch.Tensor, cfg: PretrainConfig) -> torch.Tensor:
    """[T, N] flags of the steps whose successor is worth 0 in GAE: none with ``bootstrap_terminal`` (the reference's
    PPO adds gamma V(final obs) at every episode end), else the terminations (successes under terminate_on_success)."""
    return torch.zeros_like(terminated) if cfg.bootstrap_terminal else terminated


def ppo_update(agent, optimizer, b_obs, b_actions, b_logprobs, b_adv, b_returns, b_values, cfg: PretrainConfig, gen):
    """Standard clipped PPO on one batch (flattened [B, ...]); returns mean losses/diagnostics."""
    B = b_obs.shape[0]
    mb = B // cfg.num_minibatches
    stats = {"policy_loss": [], "value_loss": [], "approx_kl": [], "clipfrac": []}
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(B, generator=gen)
        kl_stop = False
        for start in range(0, B, mb):
            idx = perm[start : start + mb]
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[idx], b_actions[idx])
            pg_loss, approx_kl, clipfrac = ppo_loss(newlogprob, b_logprobs[idx], b_adv[idx], cfg.clip_coef, cfg.norm_adv)
            stats["clipfrac"].append(clipfrac.item())
            stats["approx_kl"].append(approx_kl.item())
            # the reference checks before stepping: the minibatch that crosses target_kl is not applied
            if cfg.target_kl is not None and approx_kl.item() > cfg.target_kl:
                kl_stop = True
                break
            v_loss = 0.5 * ((newvalue - b_returns[idx]) ** 2).mean()
            loss = pg_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * v_loss
            optimizer_step(optimizer, loss, [p for p in agent.parameters() if p.requires_grad], cfg.max_grad_norm)
            stats["policy_loss"].append(pg_loss.item())
            stats["value_loss"].append(v_loss.item())
        if kl_stop:
            break
    return {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}


def pretrain(cfg: PretrainConfig, resume: bool = True, progress: bool = True, max_iterations: Optional[int] = None, max_minutes: Optional[float] = None) -> Path:
    """Run (or continue) the ladder; returns the output directory.  ``max_iterations`` bounds this call only
    and ``max_minutes`` its wall time (for runs split across time-limited sessions)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    cfg_path = out / "config.json"
    if cfg_path.exists() and resume and state_path.exists():
        saved = json.loads(cfg_path.read_text())
        # the task must match; batch shape, devices and evaluation may change between sessions (recorded in provenance)
        diff = {k: (saved.get(k), getattr(cfg, k)) for k in ("env_id", "control_mode", "reward_mode", "terminate_on_success") if saved.get(k) != getattr(cfg, k)}
        # runs before the field existed zeroed V at a success; without terminations the field changes nothing
        if cfg.terminate_on_success and saved.get("bootstrap_terminal", False) != cfg.bootstrap_terminal:
            diff["bootstrap_terminal"] = (saved.get("bootstrap_terminal", False), cfg.bootstrap_terminal)
        if diff:
            raise ValueError(f"{out} holds a pretraining run of another task setting ({diff}); use a new --out-dir")
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2))

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    venv = make_vector_env(EnvConfig(cfg.env_id, cfg.num_envs, cfg.control_mode, cfg.reward_mode, backend=cfg.backend, terminate_on_success=cfg.terminate_on_success))
    eval_env = venv  # evaluation resets with fixed seeds; training resumes from a fresh reset afterwards
    agent = Agent(venv.obs_dim, venv.act_dim).to(device)
    # a fixed log-std is left out of the optimiser, so Adam's state (and a resume) never touches it
    agent.actor_logstd.requires_grad_(not cfg.fix_logstd)
    optimizer = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5)
    gen = torch.Generator().manual_seed(cfg.seed)
    act_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    iteration, env_steps, wall = 0, 0, 0.0
    if cfg.init_from and not (resume and state_path.exists()):
        from algorithms.checkpoint import load_policy

        init, init_ck = load_policy(cfg.init_from, env_id=cfg.env_id, obs_dim=venv.obs_dim, act_dim=venv.act_dim)
        agent.load_state_dict(init.state_dict())
        env_steps = int(init_ck["metrics"].get("env_steps") or 0)
    if cfg.init_logstd is not None and not (resume and state_path.exists()):
        agent.set_logstd(cfg.init_logstd)
    if resume and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        agent.load_state_dict(st["agent"])
        optimizer.load_state_dict(st["optimizer"])
        rng.restore(gen, st["gen"])
        rng.restore(act_gen, st["act_gen"])
        iteration, env_steps, wall = st["iteration"], st["env_steps"], st["wall_time"]
    ladder_path = out / "ladder.csv"
    if not ladder_path.exists():
        with open(ladder_path, "w", newline="") as f:
            csv.DictWriter(f, LADDER_FIELDS).writeheader()

    writer = SummaryWriter(str(out / "tb"))
    obs = venv.reset(seed=cfg.seed * 100_003 + iteration)
    last = cfg.num_iterations if max_iterations is None else min(cfg.num_iterations, iteration + max_iterations)
    bar = tqdm(total=cfg.num_iterations, initial=iteration, desc="pretrain", unit="it", disable=not progress)
    t_start = time.time() - wall
    t_call = time.time()
    first_iteration = iteration
    def save_state():
        atomic_torch_save({
            "agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "gen": gen.get_state(),
            "act_gen": act_gen.get_state(), "iteration": iteration, "env_steps": env_steps, "wall_time": time.time() - t_start,
        }, state_path)

    try:
        while iteration < last:
            if max_minutes is not None and time.time() - t_call > 60 * max_minutes:
                bar.write(f"stopping after {max_minutes} minutes at iteration {iteration}; run again to resume")
                break
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1 - iteration / cfg.num_iterations)
            t0 = time.time()
            ro = collect_rollout(agent, venv, obs, cfg.num_steps, device, generator=act_gen)
            obs = ro.last_obs
            t_roll = time.time() - t0
            with torch.no_grad():
                next_values = agent.get_value(ro.flat(ro.next_obs)).reshape(ro.rewards.shape)
            adv, returns = gae(ro.rewards, ro.values, next_values, terminal_mask(ro.terminated, cfg), ro.dones, cfg.gamma, cfg.gae_lambda)
            stats = ppo_update(
                agent, optimizer, ro.flat(ro.obs), ro.flat(ro.actions), ro.flat(ro.logprobs),
                ro.flat(adv), ro.flat(returns), ro.flat(ro.values), cfg, gen,
            )
            iteration += 1
            env_steps += cfg.batch_size
            sps = cfg.batch_size / (time.time() - t0)
            writer.add_scalar("losses/policy_loss", stats["policy_loss"], env_steps)
            writer.add_scalar("losses/value_loss", stats["value_loss"], env_steps)
            writer.add_scalar("losses/approx_kl", stats["approx_kl"], env_steps)
            writer.add_scalar("charts/SPS", sps, env_steps)
            writer.add_scalar("charts/rollout_time", t_roll, env_steps)
            n_done = int(ro.dones.sum())
            if n_done:
                writer.add_scalar("train/success_rate", float(ro.success.sum()) / n_done, env_steps)
            bar.update(1)
            bar.set_postfix(steps=env_steps, sps=int(sps))
            if iteration % cfg.eval_every == 0 or iteration == cfg.num_iterations:
                det = evaluate(agent, eval_env, cfg.eval_episodes, cfg.eval_seed, True, device)
                sto = evaluate(_at_logstd(agent, cfg.eval_logstd), eval_env, cfg.eval_episodes, cfg.eval_seed, False, device)
                wall = time.time() - t_start
                ck = out / f"ckpt_{iteration:05d}.pt"
                metrics = {"success_det": det.success_rate, "success_stoch": sto.success_rate, "eval_episodes": det.episodes, "env_steps": env_steps}
                save_policy(ck, agent, env_id=cfg.env_id, control_mode=cfg.control_mode, config=asdict(cfg), metrics=metrics)
                with open(ladder_path, "a", newline="") as f:
                    csv.DictWriter(f, LADDER_FIELDS).writerow({
                        "iteration": iteration, "env_steps": env_steps, "wall_time": round(wall, 1),
                        "success_det": det.success_rate, "success_stoch": sto.success_rate,
                        "eval_episodes": det.episodes, "checkpoint": ck.name,
                    })
                writer.add_scalar("eval/success_rate", det.success_rate, env_steps)
                writer.add_scalar("eval/success_rate_stochastic", sto.success_rate, env_steps)
                save_state()
                bar.write(f"iter {iteration} steps {env_steps}: success det {det.success_rate:.3f} stoch {sto.success_rate:.3f}")
                obs = venv.reset(seed=cfg.seed * 100_003 + iteration)
        save_state()
    finally:
        bar.close()
        writer.close()
        venv.close()
        _record_session(out, cfg, first_iteration, iteration, env_steps, time.time() - t_call)
    return out


def _record_session(out: Path, cfg: PretrainConfig, it0: int, it1: int, env_steps: int, seconds: float) -> None:
    """Append this call to provenance.json: a ladder may be built over several (time-limited) calls."""
    from algorithms.provenance import command_line, git_commit, machine, now

    path = out / "provenance.json"
    prov = json.loads(path.read_text()) if path.exists() else {"config": asdict(cfg), "sessions": []}
    prov["sessions"].append({
        "config": asdict(cfg),
        "command": command_line(), "git_commit": git_commit(), "machine": machine(), "ended": now(),
        "iterations": [it0, it1], "env_steps_total": env_steps, "seconds": round(seconds, 1),
    })
    prov["env_steps"] = env_steps
    prov["seed"] = cfg.seed
    prov["wall_time_s"] = round(sum(s["seconds"] for s in prov["sessions"]), 1)
    atomic_write_text(path, json.dumps(prov, indent=2))

"""Choosing the start and expert policies from a pretraining ladder, confirmed on many episodes."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from algorithms.checkpoint import load_policy, save_policy
from algorithms.evaluate import evaluate
from algorithms.provenance import command_line, git_commit, machine, now
from envs.config import EnvConfig
from envs.vector import make_vector_env


@dataclass
class SelectConfig:
    ladder_dir: str = "runs/pretrain"
    out_dir: str = "experiments/checkpoints/pickcube"
    start_min: float = 0.40
    start_max: float = 0.65
    start_target: float = 0.50
    expert_min: float = 0.95
    reset_logstd: float | None = -1.5
    confirm_episodes: int = 256
    eval_seed: int = 20_000
    num_envs: int = 16
    backend: str = "auto"

    def __post_init__(self):
        if not 0 <= self.start_min < self.start_max <= 1:
            raise ValueError("need 0 <= start_min < start_max <= 1")
        if self.confirm_episodes < 1:
            raise ValueError("confirm_episodes must be >= 1")


def select_policies(cfg: SelectConfig, log=print) -> dict:
    ladder_dir = Path(cfg.ladder_dir)
    ladder_csv = ladder_dir / "ladder.csv"
    if not ladder_csv.exists():
        raise FileNotFoundError(f"no ladder.csv in {ladder_dir}: run `pretrain` first")
    import pandas as pd  # here, not at the top: every CLI call builds SelectConfig's flags, few read a ladder

    ladder = pd.read_csv(ladder_csv)
    ladder = ladder[[(ladder_dir / c).exists() for c in ladder["checkpoint"]]]
    if ladder.empty:
        raise FileNotFoundError(f"{ladder_csv} lists no checkpoint that exists in {ladder_dir}")
    _, first = load_policy(ladder_dir / ladder["checkpoint"].iloc[0])
    venv = make_vector_env(EnvConfig(first["env_id"], cfg.num_envs, first["control_mode"], "sparse", backend=cfg.backend))

    def confirm(name):
        agent, ck = load_policy(ladder_dir / name, env_id=first["env_id"])
        det = evaluate(agent, venv, cfg.confirm_episodes, cfg.eval_seed, True)
        sto = evaluate(agent, venv, cfg.confirm_episodes, cfg.eval_seed, False)
        log(f"  {name}: deterministic {det.success_rate:.3f}, stochastic {sto.success_rate:.3f} over {det.episodes} episodes")
        return agent, ck, det, sto

    chosen = {}
    try:
        start_c = ladder[(ladder.success_det >= cfg.start_min - 0.1) & (ladder.success_det <= cfg.start_max + 0.1)].copy()
        start_c["dist"] = (start_c.success_det - cfg.start_target).abs()
        log(f"start candidates (ladder deterministic success within [{cfg.start_min - 0.1:.2f}, {cfg.start_max + 0.1:.2f}]): {len(start_c)}")
        for name in start_c.sort_values("dist")["checkpoint"]:
            agent, ck, det, sto = confirm(name)
            if cfg.start_min <= det.success_rate <= cfg.start_max:
                if cfg.reset_logstd is not None:
                    with torch.no_grad():
                        agent.actor_logstd.fill_(cfg.reset_logstd)
                    sto = evaluate(agent, venv, cfg.confirm_episodes, cfg.eval_seed, False)
                    log(f"  after logstd reset to {cfg.reset_logstd}: stochastic {sto.success_rate:.3f}")
                chosen["start"] = (name, agent, ck, det, sto)
                break
        expert_c = ladder[ladder.success_det >= cfg.expert_min - 0.05].sort_values(["success_det", "iteration"], ascending=False)
        log(f"expert candidates (ladder deterministic success >= {cfg.expert_min - 0.05:.2f}): {len(expert_c)}")
        for name in expert_c["checkpoint"]:
            agent, ck, det, sto = confirm(name)
            if det.success_rate >= cfg.expert_min:
                chosen["expert"] = (name, agent, ck, det, sto)
                break
    finally:
        venv.close()
    missing = [k for k in ("start", "expert") if k not in chosen]
    if missing:
        raise ValueError(f"no ladder checkpoint qualifies as {' or '.join(missing)}; pretrain longer or evaluate more often")

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre_prov = ladder_dir / "provenance.json"
    prov = {
        "created": now(),
        "select_command": command_line(),
        "git_commit": git_commit(),
        "machine_select": machine(),
        "pretraining": json.loads(pre_prov.read_text()) if pre_prov.exists() else None,
        "policies": {},
    }
    for role, (name, agent, ck, det, sto) in chosen.items():
        metrics = {
            "success_det": det.success_rate, "success_stoch": sto.success_rate,
            "eval_episodes": det.episodes, "eval_seed": cfg.eval_seed,
            "env_steps": ck["metrics"].get("env_steps"),
        }
        cfg_saved = dict(ck["config"], source_checkpoint=name, role=role)
        if role == "start" and cfg.reset_logstd is not None:
            cfg_saved["logstd_reset"] = cfg.reset_logstd
        digest = save_policy(out / f"{role}.pt", agent, env_id=ck["env_id"], control_mode=ck["control_mode"], config=cfg_saved, metrics=metrics)
        prov["policies"][role] = {"file": f"{role}.pt", "source_checkpoint": name, "sha256": digest, **metrics,
                                  "logstd": float(agent.actor_logstd.mean())}
    (out / "provenance.json").write_text(json.dumps(prov, indent=2))
    return prov

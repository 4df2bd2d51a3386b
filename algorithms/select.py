"""Choosing the start and expert policies from a pretraining ladder, confirmed on many episodes."""
from __future__ import annotations

import json
from pathlib import Path

from algorithms.checkpoint import load_policy, save_policy
from algorithms.evaluate import evaluate
from algorithms.pipeline_config import SelectConfig
from algorithms.provenance import command_line, git_commit, machine, now
from envs.config import EnvConfig
from envs.vector import make_vector_env


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
        tried = []
        for name in (start_c.sort_values("dist")["checkpoint"] if "start" in cfg.role_list() else []):
            agent, ck, det, sto = confirm(name)
            if not cfg.start_min <= det.success_rate <= cfg.start_max:
                continue
            # AWR clones the policy's own samples: its exploration noise must not ruin it (SPEC.md, start policy)
            for logstd in cfg.logstd_candidates():
                if logstd is not None:
                    agent.set_logstd(logstd)
                    sto = evaluate(agent, venv, cfg.confirm_episodes, cfg.eval_seed, False)
                tried.append({"checkpoint": name, "logstd": agent.actor_logstd.mean().item(), "success_det": det.success_rate, "success_stoch": sto.success_rate})
                log(f"  {name} with logstd {tried[-1]['logstd']:.2f}: stochastic {sto.success_rate:.3f} (deterministic {det.success_rate:.3f})")
                if sto.success_rate >= det.success_rate - cfg.start_stoch_margin:
                    chosen["start"] = (name, agent, ck, det, sto)
                    break
            if "start" in chosen:
                break
        expert_c = ladder[ladder.success_det >= cfg.expert_min - 0.05].sort_values(["success_det", "iteration"], ascending=False)
        log(f"expert candidates (ladder deterministic success >= {cfg.expert_min - 0.05:.2f}): {len(expert_c)}")
        for name in (expert_c["checkpoint"] if "expert" in cfg.role_list() else []):
            agent, ck, det, sto = confirm(name)
            if det.success_rate >= cfg.expert_min:
                chosen["expert"] = (name, agent, ck, det, sto)
                break
    finally:
        venv.close()
    missing = [k for k in cfg.role_list() if k not in chosen]
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
        if role == "start":
            cfg_saved["logstd_reset"] = agent.actor_logstd.mean().item()
        digest = save_policy(out / f"{role}.pt", agent, env_id=ck["env_id"], control_mode=ck["control_mode"], config=cfg_saved, metrics=metrics)
        prov["policies"][role] = {"file": f"{role}.pt", "source_checkpoint": name, "sha256": digest, **metrics,
                                  "logstd": agent.actor_logstd.mean().item()}
    prov["start_candidates"] = tried
    (out / "provenance.json").write_text(json.dumps(prov, indent=2))
    return prov

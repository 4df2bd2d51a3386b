"""Cost of MC re-rollout advantages: this project's scheme versus the straightforward one, same machine, one run.

Both estimate A(s_t, a_t) = Q - V with M samples for the same rollout (start policy, N envs x T steps) using the
expert as rollout policy and the same number K of re-rollout env slots (worker processes on the cpu backend).
  straightforward: for each t restore 2M replicas (M for Q executing a_t, M for V) and roll the full remaining horizon
  ours (algorithms/estimators/mc.py): V only, Q = r + gamma V(s'), stop at termination, slots refilled at once
A deterministic-expert pass checks the two give identical estimates (no horizon cut).

    python benchmarks/mc_rerollout.py --num-envs 2 --num-steps 50 --samples 4 --workers 2 [--markdown]
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from algorithms.checkpoint import load_policy
from algorithms.config import FinetuneConfig
from algorithms.estimators.base import TrialContext
from algorithms.estimators.mc import MCEstimator, naive_mc_advantages
from algorithms.provenance import machine
from algorithms.rollout import collect_rollout
from envs import EnvConfig, make_vector_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--num-steps", type=int, default=50)
    ap.add_argument("--samples", type=int, default=4, help="M")
    ap.add_argument("--workers", type=int, default=2, help="K re-rollout slots for both schemes")
    ap.add_argument("--checkpoints", default="experiments/checkpoints/pickcube")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="append the table to benchmarks/RESULTS.md")
    a = ap.parse_args()
    dev = torch.device("cpu")
    start, _ = load_policy(f"{a.checkpoints}/start.pt")
    expert, _ = load_policy(f"{a.checkpoints}/expert.pt")
    ecfg = EnvConfig(num_envs=a.num_envs, reward_mode="sparse")

    def mk(n, autoreset=True):
        return make_vector_env(ecfg.replace(num_envs=n, autoreset=autoreset))

    venv = mk(a.num_envs)
    ro = collect_rollout(start, venv, venv.reset(seed=a.seed), a.num_steps, dev, save_states=True, generator=torch.Generator().manual_seed(a.seed))
    venv.close()
    slots = mk(a.workers, autoreset=False)
    rows = []
    for det in (True, False):
        cfg = FinetuneConfig(estimator="mc", update="awr", mc_samples=a.samples, mc_workers=a.workers, mc_deterministic=det, seed=a.seed)
        est = MCEstimator(TrialContext(cfg=cfg, device=dev, make_env=lambda n, autoreset=True: slots, expert=expert, obs_dim=slots.obs_dim, act_dim=slots.act_dim))
        t = time.perf_counter()
        ours = est.estimate(ro, start)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        naive, naive_steps = naive_mc_advantages(ro, expert, slots, a.samples, cfg.gamma, dev, deterministic=det, generator=torch.Generator().manual_seed(a.seed))
        t_naive = time.perf_counter() - t
        d = (ours.advantages.cpu() - naive).abs()
        rows.append((("deterministic" if det else "stochastic") + " expert", ours.sim_steps, naive_steps, t_ours, t_naive, float(d.max()), int((d > 1e-6).sum())))
    slots.close()
    n_est = a.num_envs * a.num_steps
    head = f"MC re-rollout cost, {n_est} (s,a) estimates, M={a.samples}, K={a.workers} slots, {datetime.date.today()}\nmachine: {machine()}"
    lines = [
        "| rollout policy | ours sim steps | straightforward sim steps | ratio | ours wall s | straightforward wall s | ratio | max abs diff of A | estimates differing > 1e-6 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s1, s2, w1, w2, d, nd in rows:
        lines.append(f"| {name} | {s1} | {s2} | {s1 / s2:.3f} | {w1:.1f} | {w2:.1f} | {w1 / w2:.3f} | {d:.2e} | {nd} of {n_est} |")
    print(head)
    print("\n".join(lines))
    print("(deterministic expert: identical up to PhysX restore precision, see RESULTS.md; stochastic rows differ by sampling noise)")
    if a.markdown:
        path = Path(__file__).with_name("RESULTS.md")
        with open(path, "a") as f:
            f.write(f"\n### {head}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

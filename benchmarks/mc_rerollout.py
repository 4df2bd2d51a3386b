"""Cost of MC re-rollout advantages: simulation rate and memory of the re-rollout slots, and this project's
scheme versus the straightforward one, same machine, one run.

Rate table: the MC estimate (M samples, expert rollout policy, K re-rollout env slots) of one start-policy rollout
(N envs x T steps), with the slots packed into P worker processes (the cpu backend's layout) and, for comparison,
one process per slot (the layout before slots were packed).  "x raw" = simulator steps per second of the estimate
(restore warm-ups included) / the raw rate of P single-env processes measured in the same run
(``env_throughput.raw_rate``); memory = PSS of the slot processes plus this driver.  gymnasium's AsyncVectorEnv has
no simulator state get/set, so it has no row here (see env_throughput.py for it).

Scheme table (``--schemes``): both schemes estimate A(s_t, a_t) = Q - V with M samples on the same K slots.
  straightforward: for each t restore 2M replicas (M for Q executing a_t, M for V) and roll the full remaining horizon
  ours (algorithms/estimators/mc.py): V only, Q = r + gamma V(s'), stop at termination, slots refilled at once
A deterministic-expert pass checks the two give identical estimates (no horizon cut).

    python benchmarks/mc_rerollout.py --quick
    python benchmarks/mc_rerollout.py --num-envs 100 --num-steps 50 --samples 16 --workers 128 --markdown   # MC16, 5,000 transitions
    python benchmarks/mc_rerollout.py --num-envs 2 --num-steps 50 --samples 4 --workers 2 --schemes --layouts
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402

from algorithms.checkpoint import load_policy  # noqa: E402
from algorithms.config import FinetuneConfig  # noqa: E402
from algorithms.estimators.base import TrialContext  # noqa: E402
from algorithms.estimators.mc import MCEstimator, naive_mc_advantages  # noqa: E402
from algorithms.provenance import machine_line  # noqa: E402
from algorithms.rollout import collect_rollout  # noqa: E402
from env_throughput import raw_rate  # noqa: E402
from envs import EnvConfig, make_vector_env  # noqa: E402
from envs.config import available_cpus  # noqa: E402
from memory import group_memory  # noqa: E402

LAYOUTS = ("packed", "packed-lockstep", "1-per-proc")


def estimator_on(slots, a, det: bool, expert, in_workers: bool = True) -> MCEstimator:
    cfg = FinetuneConfig(estimator="mc", update="awr", mc_samples=a.samples, mc_workers=slots.num_envs, mc_deterministic=det, seed=a.seed,
                         mc_in_workers=in_workers)
    ctx = TrialContext(cfg=cfg, device=torch.device("cpu"), make_env=lambda n, autoreset=True: slots, expert=expert,
                       obs_dim=slots.obs_dim, act_dim=slots.act_dim)
    return MCEstimator(ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-envs", type=int, default=2, help="N: envs of the rollout to estimate")
    ap.add_argument("--num-steps", type=int, default=50, help="T: steps of that rollout")
    ap.add_argument("--samples", type=int, default=4, help="M: re-rollouts per state")
    ap.add_argument("--workers", type=int, default=2, help="K: re-rollout env slots (FinetuneConfig.mc_workers)")
    ap.add_argument("--processes", type=int, default=None, help="P: worker processes the slots are packed into (default: the CPUs of this process)")
    ap.add_argument("--layouts", nargs="*", default=["packed"], choices=LAYOUTS,
                    help="rate-table layouts (default: packed, the re-rollouts inside the workers; packed-lockstep: the driver "
                         "steps every slot each step, mc_in_workers=false; 1-per-proc: one slot per process; the flag alone: all)")
    ap.add_argument("--schemes", action="store_true", help="also compare with the straightforward scheme (slow: 5-10x our cost)")
    ap.add_argument("--quick", action="store_true", help="N=2, T=10, M=4, K=8, all layouts: a few minutes on 2 cores")
    ap.add_argument("--checkpoints", default="experiments/checkpoints/pickcube")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    a = ap.parse_args()
    if a.quick:
        a.num_envs, a.num_steps, a.samples, a.workers, a.layouts = 2, 10, 4, 8, list(LAYOUTS)
    if not a.layouts:
        a.layouts = list(LAYOUTS)
    if min(a.num_envs, a.num_steps, a.samples, a.workers, a.processes or 1) < 1:
        ap.error("--num-envs, --num-steps, --samples, --workers and --processes must be >= 1")
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    start, _ = load_policy(f"{a.checkpoints}/start.pt")
    expert, _ = load_policy(f"{a.checkpoints}/expert.pt")
    ecfg = EnvConfig(num_envs=a.num_envs, reward_mode="sparse", backend="cpu")
    procs = min(a.workers, a.processes or available_cpus())
    load = "load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())

    venv = make_vector_env(ecfg)
    ro = collect_rollout(start, venv, venv.reset(seed=a.seed), a.num_steps, dev, save_states=True, generator=torch.Generator().manual_seed(a.seed))
    venv.close()
    n_est = a.num_envs * a.num_steps
    head = (f"MC re-rollouts, {n_est} transitions (N={a.num_envs} x T={a.num_steps}), M={a.samples}, K={a.workers} slots, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\nmachine: {machine_line()}; {load}")
    print(head, flush=True)

    raw = raw_rate(procs, ecfg.env_id, ecfg.control_mode, ecfg.max_episode_steps, 300, 20)
    print(f"raw rate, {procs} single-env processes: {raw:,.0f} steps/s", flush=True)
    rate_lines = [
        f"Raw rate of {procs} single-env processes in this run: {raw:,.0f} steps/s. Target: packed >= 0.85 x raw.\n",
        "| layout | slots | processes | jobs | sim steps | wall s | sim steps/s | x raw | PSS MiB (all) | PSS MiB / slot |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layout in a.layouts:
        p = a.workers if layout == "1-per-proc" else procs
        with make_vector_env(ecfg.replace(num_envs=a.workers, autoreset=False, num_workers=p)) as slots:
            est = estimator_on(slots, a, False, expert, in_workers=layout != "packed-lockstep")
            t = time.perf_counter()
            out = est.estimate(ro, start)
            wall = time.perf_counter() - t
            mem = group_memory(slots.worker_pids() + [os.getpid()])
        sps = out.sim_steps / wall
        line = (f"| {layout} | {a.workers} | {slots.num_workers} | {out.diagnostics['mc/jobs']} | {out.sim_steps:,} | {wall:.1f} | "
                f"{sps:,.0f} | {sps / raw:.2f} | {mem.pss_mib:,.0f} | {mem.pss_mib / a.workers:.0f} |")
        rate_lines.append(line)
        print(line, flush=True)

    scheme_lines = []
    if a.schemes:
        slots = make_vector_env(ecfg.replace(num_envs=a.workers, autoreset=False, num_workers=procs))
        scheme_lines = [
            "| rollout policy | ours sim steps | straightforward sim steps | ratio | ours wall s | straightforward wall s | ratio | max abs diff of A | estimates differing > 1e-6 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for det in (True, False):
            est = estimator_on(slots, a, det, expert)
            t = time.perf_counter()
            ours = est.estimate(ro, start)
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            naive, naive_steps = naive_mc_advantages(ro, expert, slots, a.samples, est.cfg.gamma, dev, deterministic=det,
                                                     generator=torch.Generator().manual_seed(a.seed))
            t_naive = time.perf_counter() - t
            d = (ours.advantages.cpu() - naive).abs()
            name = ("deterministic" if det else "stochastic") + " expert"
            line = (f"| {name} | {ours.sim_steps} | {naive_steps} | {ours.sim_steps / naive_steps:.3f} | {t_ours:.1f} | {t_naive:.1f} | "
                    f"{t_ours / t_naive:.3f} | {float(d.max()):.2e} | {int((d > 1e-6).sum())} of {n_est} |")
            scheme_lines.append(line)
            print(line, flush=True)
        slots.close()
        print("(deterministic expert: identical up to PhysX restore precision, see RESULTS.md; stochastic rows differ by sampling noise)")
    if a.markdown:
        cmd = "python benchmarks/mc_rerollout.py " + " ".join(sys.argv[1:])
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(f"\n## mc_rerollout: {head}\n\nCommand: `{cmd}`\n\n" + "\n".join(rate_lines) + "\n")
            if scheme_lines:
                f.write("\n" + "\n".join(scheme_lines) + "\n")


if __name__ == "__main__":
    main()

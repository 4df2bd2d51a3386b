"""Wall time and memory of reference-scale trials run side by side (``algorithms.finetune.run_trial``, no Ray).

Each of K trials runs in its own process with ``cpus`` = C (its env worker processes: min(num_envs, C)), as a
Tune trial granted C CPUs would.  Memory is sampled every second as the PSS of this process and everything below
it (trial drivers and their env workers); the table shows the peak of the sum and the peak per trial.

    python benchmarks/reference_trial.py --quick                       # a tiny trial, 1-2 minutes on 2 cores
    python benchmarks/reference_trial.py --trials 1 --markdown         # one GAE+AWR trial with the whole machine
    python benchmarks/reference_trial.py --trials 4 --markdown         # 4 at once, C = CPUs / 4 each
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from memory import descendants, group_memory  # noqa: E402


def _trial(cfg_dict: dict, out_dir: str, cpus: int, results) -> None:
    import torch

    from algorithms.config import FinetuneConfig
    from algorithms.finetune import run_trial

    torch.set_num_threads(1)
    t = time.monotonic()
    hist = run_trial(FinetuneConfig(**cfg_dict), out_dir, cpus=cpus)
    results.put((os.getpid(), time.monotonic() - t, hist[-1].get("charts/env_steps", 0), hist[-1].get("eval/success_rate")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1, help="K trials at once (default: 1)")
    ap.add_argument("--cpus", type=int, default=None, help="C CPUs per trial (default: the CPUs of this process / K)")
    ap.add_argument("--estimator", default="gae")
    ap.add_argument("--update", default="awr")
    ap.add_argument("--num-envs", type=int, default=100)
    ap.add_argument("--num-steps", type=int, default=50)
    ap.add_argument("--num-iterations", type=int, default=10)
    ap.add_argument("--update-epochs", type=int, default=200)
    ap.add_argument("--minibatch-size", type=int, default=1000, help="default 1000: 5 minibatches of a 5,000-transition batch")
    ap.add_argument("--num-eval-episodes", type=int, default=64, help="as experiments/reference.yaml (default: 64)")
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--device", default="auto", help="torch device of the networks (default: auto)")
    ap.add_argument("--quick", action="store_true", help="8 envs x 10 steps x 2 iterations, 5 epochs, 8 eval episodes")
    ap.add_argument("--markdown", action="store_true", help="append the table to benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    if a.quick:
        a.num_envs, a.num_steps, a.num_iterations, a.update_epochs, a.minibatch_size, a.num_eval_episodes = 8, 10, 2, 5, 40, 8
    from algorithms.config import FinetuneConfig
    from algorithms.provenance import machine_line
    from envs.config import available_cpus

    if a.trials < 1 or (a.cpus is not None and a.cpus < 1):
        ap.error("--trials and --cpus must be >= 1")
    cpus = a.cpus or max(1, available_cpus() // a.trials)
    try:
        cfg = FinetuneConfig(estimator=a.estimator, update=a.update, num_envs=a.num_envs, num_steps=a.num_steps,
                             num_iterations=a.num_iterations, update_epochs=a.update_epochs, minibatch_size=a.minibatch_size,
                             num_eval_episodes=a.num_eval_episodes, eval_every=a.eval_every, device=a.device, backend="cpu",
                             gamma=0.8, learning_rate=3e-5, awr_beta=0.5,
                             iql_checkpoint="experiments/checkpoints/pickcube/iql.pt" if a.estimator in ("iql", "sarsa") else None)
    except ValueError as e:
        ap.error(str(e))
    load = "load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = (f"{a.estimator}+{a.update}: {a.num_envs} envs x {a.num_steps} steps x {a.num_iterations} iterations, "
            f"{a.update_epochs} epochs of minibatch {a.minibatch_size}, {a.num_eval_episodes} eval episodes every {a.eval_every}, device {a.device}")
    print(f"{machine_line()}; {load}\n{date}; {a.trials} trial(s) at once, {cpus} CPUs each; {what}", flush=True)

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="reference_trial_") as tmp:
        procs = [ctx.Process(target=_trial, args=(cfg.to_dict(), f"{tmp}/t{k}", cpus, results)) for k in range(a.trials)]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        peak_all, peak_one, done = 0.0, 0.0, []
        while len(done) < a.trials:
            tree = descendants(os.getpid())
            peak_all = max(peak_all, group_memory(tree).pss_mib)
            for p in procs:
                if p.is_alive():
                    peak_one = max(peak_one, group_memory(descendants(p.pid)).pss_mib)
            while not results.empty():
                done.append(results.get())
            if len(done) < a.trials and not any(p.is_alive() for p in procs):
                while not results.empty():
                    done.append(results.get())
                if len(done) < a.trials:
                    sys.exit(f"error: {a.trials - len(done)} trial process(es) failed (exit codes {[p.exitcode for p in procs]})")
            time.sleep(1.0)
        wall_all = time.monotonic() - t0
        for p in procs:
            p.join()
    walls = [d[1] for d in done]
    lines = ["| trials at once | CPUs per trial | env processes per trial | trial wall s (max) | all trials wall s | env steps per trial | "
             "peak PSS MiB, all trials | peak PSS MiB, one trial |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {a.trials} | {cpus} | {min(cpus, a.num_envs)} | {max(walls):.0f} | {wall_all:.0f} | {done[0][2]:,} | {peak_all:,.0f} | {peak_one:,.0f} |"]
    print("\n".join(lines))
    print("targets: one trial <= 180 s wall with the whole 16-core machine; 4 at once fit in memory (<= 8 GiB each)")
    if a.markdown:
        cmd = "python benchmarks/reference_trial.py " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(f"\n## reference_trial: {date}\n\nMachine: {machine_line()}; {load}  \nCommand: `{cmd}`  \n{what}. "
                    "Targets: one trial <= 180 s with the whole 16-core machine; 4 at once fit in memory.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""CPU-simulation throughput: raw ManiSkill processes versus the project's vector env with a policy.

For each N:
  raw     N independent processes, each stepping one ManiSkill env (the same headless task the env layer
          builds) with random actions and resetting at the time limit; aggregate rate = N * steps / (last
          end - first start), started together behind a barrier.
  vector  ``make_vector_env`` (cpu backend: N worker processes) driven from this process, one ``Agent``
          forward (stochastic action) per step, partial auto-reset, as in rollouts.
Both use the same steps per env; each N is measured ``--repeats`` times, raw and vector interleaved, and
the table shows medians.  Target: the vector env keeps >= 85% of the raw aggregate rate.

    python benchmarks/env_throughput.py --n 1 2
    python benchmarks/env_throughput.py --n 1 4 8 16 --markdown   # appends to benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET = 0.85


def _raw_worker(rank, env_id, control_mode, max_episode_steps, steps, warmup, barrier, results):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from envs.worker import make_single_env

    env = make_single_env(env_id, control_mode, "sparse")
    env.reset(seed=rank)
    gen = torch.Generator().manual_seed(rank)
    shape = env.action_space.shape

    def run(n):
        for _ in range(n):
            env.step(torch.rand(shape, generator=gen) * 2 - 1)
            if int(env._elapsed_steps[0]) >= max_episode_steps:
                env.reset()

    run(warmup)
    barrier.wait()
    t0 = time.monotonic()
    run(steps)
    results.put((rank, t0, time.monotonic()))
    env.close()


def raw_rate(n, env_id, control_mode, max_episode_steps, steps, warmup) -> float:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_raw_worker, args=(i, env_id, control_mode, max_episode_steps, steps, warmup, barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    times = [results.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"raw worker exited with {p.exitcode}")
    start = min(t[1] for t in times)
    end = max(t[2] for t in times)
    return n * steps / (end - start)


def vector_rate(n, env_id, control_mode, max_episode_steps, steps, warmup) -> float:
    import torch

    from algorithms.agent import Agent
    from envs import EnvConfig, make_vector_env

    with make_vector_env(EnvConfig(env_id, n, control_mode, "sparse", max_episode_steps, backend="cpu")) as venv:
        torch.manual_seed(0)
        agent = Agent(venv.obs_dim, venv.act_dim)
        gen = torch.Generator().manual_seed(0)
        obs = venv.reset(seed=0)
        with torch.no_grad():
            for _ in range(warmup):
                obs = venv.step(agent.act(obs, generator=gen)).obs
            t0 = time.monotonic()
            for _ in range(steps):
                obs = venv.step(agent.act(obs, generator=gen)).obs
            elapsed = time.monotonic() - t0
    return n * steps / elapsed


def markdown_table(rows) -> str:
    lines = ["| N | raw steps/s | vector env steps/s | ratio |", "|---:|---:|---:|---:|"]
    for n, raw, vec in rows:
        lines.append(f"| {n} | {raw:,.0f} | {vec:,.0f} | {vec / raw:.0%} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2], help="numbers of envs/processes (default: 1 2)")
    ap.add_argument("--steps", type=int, default=1000, help="timed steps per env (default: 1000)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed steps per env first (default: 50)")
    ap.add_argument("--env-id", default="PickCube-v1")
    ap.add_argument("--control-mode", default="pd_joint_delta_pos")
    ap.add_argument("--max-episode-steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved raw/vector measurements per N; the table shows medians (default: 3)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads of the driving process (default: 1)")
    ap.add_argument("--markdown", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import torch

    from algorithms.provenance import machine_line

    torch.set_num_threads(args.torch_threads)
    machine = machine_line()
    load = "load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{machine}; {load}\n{date}; {args.env_id}, {args.control_mode}, {args.steps} steps per env after {args.warmup} warm-up steps\n")
    rows = []
    print(f"{'N':>4} {'raw steps/s':>12} {'vector steps/s':>15} {'ratio':>6}", flush=True)
    for n in args.n:
        common = (n, args.env_id, args.control_mode, args.max_episode_steps, args.steps, args.warmup)
        raws, vecs = [], []
        for _ in range(args.repeats):  # interleaved, so drifting background load hits both alike
            raws.append(raw_rate(*common))
            vecs.append(vector_rate(*common))
        raw, vec = statistics.median(raws), statistics.median(vecs)
        rows.append((n, raw, vec))
        flag = "" if vec / raw >= TARGET else f"  (below the {TARGET:.0%} target)"
        spread = f"  [raw {min(raws):,.0f}-{max(raws):,.0f}, vector {min(vecs):,.0f}-{max(vecs):,.0f}]" if args.repeats > 1 else ""
        print(f"{n:>4} {raw:>12,.0f} {vec:>15,.0f} {vec / raw:>6.0%}{flag}{spread}", flush=True)

    if args.markdown:
        cmd = "python benchmarks/env_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
        section = (
            f"\n## env_throughput: {date}\n\n"
            f"Machine: {machine}; {load} (other work on the machine lowers and scatters the rates)  \n"
            f"Command: `{cmd}`  \n"
            f"{args.env_id}, {args.control_mode}, {args.steps} timed steps per env after {args.warmup} warm-up steps; "
            f"vector env: one Agent forward per step, torch threads {args.torch_threads}; median of {args.repeats} interleaved runs. "
            f"Target ratio >= {TARGET:.0%}.\n\n"
            f"{markdown_table(rows)}\n"
        )
        path = ROOT / "benchmarks" / "RESULTS.md"
        if not path.exists():
            path.write_text("# Benchmark results\n\nEach section: one run, its machine and date. Compare ratios within a run; absolute rates vary by machine.\n")
        with open(path, "a") as f:
            f.write(section)
        print(f"\nappended to {path}")


if __name__ == "__main__":
    main()

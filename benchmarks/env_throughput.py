"""CPU-simulation throughput and memory: raw ManiSkill processes, the project's vector env, gymnasium's AsyncVectorEnv.

Rows, all on the same task in one run:
  raw        P independent processes, each stepping one ManiSkill env (the headless task the env layer builds)
             with random actions, resetting at the time limit; aggregate rate = P * steps / (last end - first
             start), started together behind a barrier.  P = 1 gives the single-process raw rate R1.
  packed     ``make_vector_env`` with E envs in P worker processes (the cpu backend's layout), driven from this
             process by one ``Agent`` forward (stochastic action) per step, partial auto-reset, as in rollouts.
  packed-rollout the packed layout collecting whole rollouts inside its workers (``rollout_in_workers``, a trial's
             default): no round trip to this process per step.
  packed-exec the packed layout with every worker starting its own interpreter (``fork_workers=False``; packed
             forks them from one pre-imported process, sharing the imports' memory).
  1-per-proc the same vector env with one worker process per env (the layout before envs were packed).
  gym-async  ``gymnasium.vector.AsyncVectorEnv`` over the same ManiSkill task, one process per env (its only
             layout), shared-memory observations, the same policy step.
Columns: steps/s; "x linear" = steps/s / (processes x R1); "vs async" = steps/s / gym-async's at the same env
count; memory = PSS of the worker processes plus this driver (the whole trial's env layer), total and per env;
"policy" = share of the wall time spent in the policy forward (what overlapping it with simulation could win).

    python benchmarks/env_throughput.py --quick                                  # 2 minutes on 2 cores
    python benchmarks/env_throughput.py --envs 16 100 --workers 16 --markdown   # the targets on 16 cores
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from memory import group_memory  # noqa: E402  (benchmarks/ is on the path above)

LAYOUTS = ("packed", "packed-rollout", "packed-exec", "1-per-proc", "gym-async")
TARGETS = ("targets: packed >= 0.9 x linear at 16 processes; >= 1.5 x gym-async at the same env count; "
           "<= 60 MiB PSS per env and <= 8 GiB in all at 100 envs")


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
    """Aggregate steps/s of ``n`` single-env processes stepping at once."""
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


class GymSingleEnv:
    """One ManiSkill env as a plain gymnasium env (numpy in and out, truncation at the time limit, success
    terminates), for AsyncVectorEnv; built in the subprocess."""

    metadata: dict = {}
    render_mode = None
    spec = None

    def __init__(self, env_id, control_mode, max_episode_steps):
        import gymnasium as gym
        import numpy as np
        import torch

        from envs.worker import make_single_env

        torch.set_num_threads(1)
        self._torch = torch
        self.env = make_single_env(env_id, control_mode, "sparse")
        self.max_episode_steps = max_episode_steps
        obs_dim, act_dim = self.env.observation_space.shape[-1], self.env.action_space.shape[-1]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self.np_random = None

    def reset(self, *, seed=None, options=None):
        obs, _ = self.env.reset(seed=seed)
        return obs[0].numpy(), {}

    def step(self, action):
        obs, rew, term, _, info = self.env.step(self._torch.as_tensor(action[None], dtype=self._torch.float32))
        trunc = int(self.env._elapsed_steps[0]) >= self.max_episode_steps
        return obs[0].numpy(), float(rew[0]), bool(term[0]), trunc, {}

    def close(self):
        self.env.close()

    @property
    def unwrapped(self):
        return self


def drive(venv_step, obs, agent, gen, warmup, steps, memory_pids):
    """Run the policy loop; returns (steps/s per env, policy share of wall time, Memory after the run)."""
    import torch

    with torch.no_grad():
        for _ in range(warmup):
            obs = venv_step(agent.act(obs, generator=gen))
        t_policy = 0.0
        t0 = time.monotonic()
        for _ in range(steps):
            tp = time.monotonic()
            a = agent.act(obs, generator=gen)
            t_policy += time.monotonic() - tp
            obs = venv_step(a)
        wall = time.monotonic() - t0
    return steps / wall, t_policy / wall, group_memory(memory_pids())


def vector_row(num_envs, num_workers, args, agent_for, fork=True):
    import torch

    from envs import EnvConfig, make_vector_env

    t = time.monotonic()
    cfg = EnvConfig(args.env_id, num_envs, args.control_mode, "sparse", args.max_episode_steps, backend="cpu", num_workers=num_workers,
                    fork_workers=fork)
    with make_vector_env(cfg) as venv:
        build = time.monotonic() - t
        agent = agent_for(venv.obs_dim, venv.act_dim)
        rate, share, mem = drive(lambda a: venv.step(a).obs, venv.reset(seed=0), agent, torch.Generator().manual_seed(0),
                                 args.warmup, args.steps, lambda: venv.worker_pids() + [os.getpid()])
    return num_envs * rate, share, mem, build, venv.num_workers


def rollout_row(num_envs, num_workers, args, agent_for):
    """The packed layout collecting whole rollouts inside its workers (``collect_rollout(in_workers=True)``, what
    a trial's rollouts do with ``rollout_in_workers``): no per-step round trip; log-probs and values in one batch."""
    import torch

    from algorithms.rollout import collect_rollout
    from envs import EnvConfig, make_vector_env

    t = time.monotonic()
    cfg = EnvConfig(args.env_id, num_envs, args.control_mode, "sparse", args.max_episode_steps, backend="cpu", num_workers=num_workers)
    with make_vector_env(cfg) as venv:
        build = time.monotonic() - t
        agent, gen, dev = agent_for(venv.obs_dim, venv.act_dim), torch.Generator().manual_seed(0), torch.device("cpu")
        obs = venv.reset(seed=0)
        if args.warmup:
            obs = collect_rollout(agent, venv, obs, args.warmup, dev, generator=gen, in_workers=True).last_obs
        t0 = time.monotonic()
        collect_rollout(agent, venv, obs, args.steps, dev, generator=gen, in_workers=True)
        rate = args.steps / (time.monotonic() - t0)
        mem = group_memory(venv.worker_pids() + [os.getpid()])
    return num_envs * rate, None, mem, build, venv.num_workers


def async_row(num_envs, args, agent_for):
    import torch
    from gymnasium.vector import AsyncVectorEnv

    t = time.monotonic()
    fn = functools.partial(GymSingleEnv, args.env_id, args.control_mode, args.max_episode_steps)
    venv = AsyncVectorEnv([fn] * num_envs, context="spawn")
    try:
        obs, _ = venv.reset(seed=0)
        build = time.monotonic() - t
        agent = agent_for(obs.shape[-1], venv.single_action_space.shape[-1])

        def step(a):
            return torch.from_numpy(venv.step(a.numpy())[0])

        rate, share, mem = drive(step, torch.from_numpy(obs), agent, torch.Generator().manual_seed(0), args.warmup, args.steps,
                                 lambda: [p.pid for p in venv.processes] + [os.getpid()])
    finally:
        venv.close()
    return num_envs * rate, share, mem, build, num_envs


def markdown_table(rows, r1) -> str:
    lines = [f"Single-process raw rate R1 = {r1:,.0f} steps/s.\n",
             "| envs | processes | layout | steps/s | x linear | vs gym-async | PSS MiB (all) | PSS MiB / env | RSS MiB / env | policy share | build s |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| " + " | ".join(r["cells"]) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, nargs="+", default=[8, 32], help="env counts (default: 8 32)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes of the packed layout (default: the CPUs of this process)")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS, help="layouts to run (default: all)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per env (default: 200)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps per env first (default: 20)")
    ap.add_argument("--repeats", type=int, default=1, help="measurements of each row; the table shows medians (default: 1)")
    ap.add_argument("--quick", action="store_true", help="--envs 4 8 --steps 60 --warmup 10, one repeat: the whole script in minutes on 2 cores")
    ap.add_argument("--env-id", default="PickCube-v1")
    ap.add_argument("--control-mode", default="pd_joint_delta_pos")
    ap.add_argument("--max-episode-steps", type=int, default=50)
    ap.add_argument("--markdown", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.envs, args.steps, args.warmup, args.repeats = [4, 8], 60, 10, 1
    if min(args.envs) < 1 or args.steps < 1 or args.warmup < 0 or args.repeats < 1 or (args.workers is not None and args.workers < 1):
        ap.error("--envs, --steps, --repeats and --workers must be >= 1, --warmup >= 0")

    import torch

    from algorithms.agent import Agent
    from algorithms.provenance import machine_line
    from envs.config import available_cpus

    torch.set_num_threads(1)
    workers = args.workers or available_cpus()

    def agent_for(obs_dim, act_dim):
        torch.manual_seed(0)
        return Agent(obs_dim, act_dim)

    machine = machine_line()
    load = "load average before the run: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{machine}; {load}\n{date}; {args.env_id}, {args.control_mode}, {args.steps} steps per env after {args.warmup} warm-up steps\n{TARGETS}\n", flush=True)

    def median(fn):
        runs = [fn() for _ in range(args.repeats)]
        return sorted(runs, key=lambda r: r[0])[len(runs) // 2]

    raw_args = (args.env_id, args.control_mode, args.max_episode_steps, args.steps, args.warmup)
    r1 = statistics.median(raw_rate(1, *raw_args) for _ in range(args.repeats))
    print(f"R1 (one raw process) = {r1:,.0f} steps/s", flush=True)
    head = f"{'envs':>5} {'procs':>5} {'layout':>11} {'steps/s':>9} {'x linear':>8} {'vs async':>8} {'PSS MiB':>8} {'MiB/env':>7} {'RSS/env':>7} {'policy':>6} {'build s':>7}"
    print(head, flush=True)
    rows = []

    def emit(envs, procs, layout, rate, share=None, mem=None, build=None, async_rate=None):
        cells = [str(envs), str(procs), layout, f"{rate:,.0f}", f"{rate / (procs * r1):.2f}",
                 f"{rate / async_rate:.2f}" if async_rate else "-",
                 f"{mem.pss_mib:,.0f}" if mem else "-", f"{mem.pss_mib / envs:.0f}" if mem else "-", f"{mem.rss_mib / envs:.0f}" if mem else "-",
                 f"{share:.1%}" if share is not None else "-", f"{build:.1f}" if build is not None else "-"]
        rows.append({"cells": cells})
        widths = [5, 5, 11, 9, 8, 8, 8, 7, 7, 6, 7]
        print(" ".join(c.rjust(w) for c, w in zip(cells, widths)), flush=True)

    for procs in sorted({min(e, workers) for e in args.envs}):
        emit(procs, procs, "raw", statistics.median(raw_rate(procs, *raw_args) for _ in range(args.repeats)))
    for envs in args.envs:
        asy = median(lambda: async_row(envs, args, agent_for)) if "gym-async" in args.layouts else None
        if "packed" in args.layouts:
            rate, share, mem, build, procs = median(lambda: vector_row(envs, workers, args, agent_for))
            emit(envs, procs, "packed", rate, share, mem, build, asy[0] if asy else None)
        if "packed-rollout" in args.layouts:
            rate, share, mem, build, procs = median(lambda: rollout_row(envs, workers, args, agent_for))
            emit(envs, procs, "packed-rollout", rate, share, mem, build, asy[0] if asy else None)
        if "packed-exec" in args.layouts:
            rate, share, mem, build, procs = median(lambda: vector_row(envs, workers, args, agent_for, fork=False))
            emit(envs, procs, "packed-exec", rate, share, mem, build, asy[0] if asy else None)
        if "1-per-proc" in args.layouts:
            rate, share, mem, build, procs = median(lambda: vector_row(envs, envs, args, agent_for))
            emit(envs, procs, "1-per-proc", rate, share, mem, build, asy[0] if asy else None)
        if asy:
            rate, share, mem, build, procs = asy
            emit(envs, procs, "gym-async", rate, share, mem, build, rate)

    if args.markdown:
        cmd = "python benchmarks/env_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
        section = (
            f"\n## env_throughput: {date}\n\n"
            f"Machine: {machine}; {load} (other work on the machine lowers and scatters the rates)  \n"
            f"Command: `{cmd}`  \n"
            f"{args.env_id}, {args.control_mode}, {args.steps} timed steps per env after {args.warmup} warm-up steps; "
            f"one Agent forward per step (torch threads 1); median of {args.repeats}. PSS: worker processes + driver. {TARGETS}.\n\n"
            f"{markdown_table(rows, r1)}\n"
        )
        path = ROOT / "benchmarks" / "RESULTS.md"
        with open(path, "a") as f:
            f.write(section)
        print(f"\nappended to {path}")


if __name__ == "__main__":
    main()

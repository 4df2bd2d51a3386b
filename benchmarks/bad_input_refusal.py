"""How long every command takes to refuse a bad input: wall and CPU time of each case of ``tests/bad_inputs.py``.

Target: under 5 s per refusal, CPU time always, wall time where the machine's run queue is not longer than its cores
(a CPU-bound call on a busier machine gets only a share of a core: the wall target stretches by load / cores).  The
test suite checks what a refusal is (one line, nothing started, nothing changed); this measures what it costs.
Each case runs in its own copy of a workspace holding a finished trial, a launched grid's run directory and a
dataset, ``--workers`` at a time, as the test does.

    python benchmarks/bad_input_refusal.py                 # a table on stdout
    python benchmarks/bad_input_refusal.py --markdown      # and append it to benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from algorithms.agent import Agent  # noqa: E402
from algorithms.checkpoint import save_policy  # noqa: E402
from algorithms.provenance import git_commit, machine_line  # noqa: E402
from envs.task_spaces import task_spaces  # noqa: E402
from tests.bad_inputs import CASES, build_workspace, run_cases  # noqa: E402

TARGET_S = 5.0


def wall_target(load: float) -> float:
    """TARGET_S, stretched by the run queue's length over the cores when it is longer (``load``: the highest 1-minute
    load average seen while the call ran)."""
    return TARGET_S * max(1.0, load / (os.cpu_count() or 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="cases run at once (2: the CI machine's cores)")
    ap.add_argument("--markdown", action="store_true", help="append the table, with machine, date and commit, to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers must be >= 1, got {args.workers}")

    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="bad_input_refusal_") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        policy = root / "untrained.pt"
        task = dict(env_id="PickCube-v1", control_mode="pd_joint_delta_pos")
        spaces = task_spaces(**task)
        save_policy(policy, Agent(spaces.obs_dim, spaces.act_dim), **task, config={"note": "untrained benchmark policy"}, metrics={})
        print(f"{len(CASES)} cases, {args.workers} at a time ...", file=sys.stderr)
        outcomes = run_cases(build_workspace(root, policy), workers=args.workers)

    rows = ["| case | exit | wall s | CPU s | load | within target |", "|---|---:|---:|---:|---:|---|"]
    walls, cpus, misses = [], [], []
    for case in CASES:
        out = outcomes[case.id]
        if isinstance(out, str):
            rows.append(f"| {case.id} | - | - | - | - | not run: {out} |")
            continue
        ok = out.cpu_s < TARGET_S and out.wall_s < wall_target(out.load)
        walls.append(out.wall_s)
        cpus.append(out.cpu_s)
        if not ok:
            misses.append(case.id)
        rows.append(f"| {case.id} | {out.returncode} | {out.wall_s:.2f} | {out.cpu_s:.2f} | {out.load:.1f} | {'yes' if ok else '**no**'} |")
    if walls:
        rows.append(f"\n{len(walls)} refusals: wall median {statistics.median(walls):.2f} s, max {max(walls):.2f} s; "
                    f"CPU median {statistics.median(cpus):.2f} s, max {max(cpus):.2f} s; target {TARGET_S:g} s; "
                    f"{len(misses)} over it{': ' + ', '.join(misses) if misses else ''}")
    table = "\n".join(rows)
    print(table)
    if args.markdown:
        path = ROOT / "benchmarks" / "RESULTS.md"
        with open(path, "a") as f:
            f.write(f"\n## bad_input_refusal: {started:%Y-%m-%d %H:%M} UTC\n\nMachine: {machine_line()}; commit {git_commit(ROOT)}  \n"
                    f"Command: `python benchmarks/bad_input_refusal.py --workers {args.workers} --markdown`\n\n{table}\n")
        print(f"\nappended to {path}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())

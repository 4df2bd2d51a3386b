"""The grid subcommands of ``python -m orchestrator``: ``grid``, ``resume``, ``submit``.

Kept beside ``cli.py`` (which registers them with :func:`add_grid_commands`) so the grid's flags live with
the code they drive.  Errors are raised as SpecError/SubmitError (ValueErrors): ``cli.main`` prints them as
one line and exits 2.  A grid that ends with failed or unfinished trials exits 1.
"""
from __future__ import annotations

import argparse
import sys

from orchestrator.cli_args import add_dataclass_args, comma_list, dataclass_from_args
from orchestrator.submit import SlurmConfig


def _analyse_and_exit(outcome, analyse: bool, figures: bool = True) -> None:
    """Write the analysis of the grid's run directory (a failure there must not hide the results), then exit
    with the grid's status."""
    from orchestrator.storage import analyze_runs
    from orchestrator.tune_runner import describe

    if analyse:
        try:
            outcome.report = analyze_runs([outcome.run_dir], figures=figures).report
        except Exception as e:  # the results are safe on disk; a broken report must not hide them
            print(f"warning: the analysis failed ({type(e).__name__}: {e}); the results are in {outcome.run_dir}; "
                  f"retry with `python -m orchestrator analyze {outcome.run_dir}`", file=sys.stderr, flush=True)
    print(describe(outcome), flush=True)
    if not outcome.ok:
        sys.exit(1)


def _resources(ns) -> dict:
    return {k: v for k in ("cpus_per_trial", "gpus_per_trial", "mc_worker_cpus") if (v := getattr(ns, k)) is not None}


def _seed_list(text: str) -> list[int]:
    """``--seeds 3`` or ``--seeds 1,3``: seed values (not a count)."""
    try:
        seeds = [int(s) for s in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seed values, e.g. 1,3; got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds are >= 0, got {text!r}")
    return seeds


def _cmd_grid(ns) -> None:
    from orchestrator.tune_runner import launch

    outcome = launch(ns.spec, storage=ns.storage, name=ns.name, address=ns.address, resume=ns.resume, cells=comma_list(ns.cells),
                     seeds=ns.seeds, resources=_resources(ns))
    _analyse_and_exit(outcome, not ns.no_analysis, not ns.no_figures)


def _cmd_resume(ns) -> None:
    from orchestrator.tune_runner import resume

    _analyse_and_exit(resume(ns.run_dir, address=ns.address, resources=_resources(ns)), not ns.no_analysis, not ns.no_figures)


def _add_resource_args(sp: argparse.ArgumentParser, whose: str) -> None:
    sp.add_argument("--cpus-per-trial", type=float, default=None, metavar="N", help=f"CPUs for each {whose} (default: the spec's); e.g. more on a bigger machine")
    sp.add_argument("--gpus-per-trial", type=float, default=None, metavar="G", help=f"GPUs (or a fraction of one) for each {whose} (default: the spec's)")
    sp.add_argument("--mc-worker-cpus", type=int, default=None, metavar="N", help=f"extra CPUs for each MC {whose}'s re-rollout workers (default: the spec's)")


def _cmd_submit(ns) -> None:
    from orchestrator.submit import SubmitError, submit, wait_for_job, write_sbatch

    if ns.slurm:
        cfg = dataclass_from_args(SlurmConfig, ns)
        out = write_sbatch(ns.slurm, ns.spec, cfg, storage=ns.storage, name=ns.name, working_dir=ns.working_dir)
        print(f"wrote {out}: run it with `sbatch {out}`")
        return
    if not ns.address:
        raise SubmitError("submit needs --address http://HEAD:8265 (the Ray dashboard), or --slurm FILE to write a batch script")
    sub = submit(ns.spec, ns.address, storage=ns.storage, name=ns.name, working_dir=ns.working_dir, pip=ns.pip,
                 token_file=ns.token_file)
    print(f"submitted job {sub.job_id} to {sub.address}: {sub.entrypoint}")
    print(f"results: {sub.run_dir}  (follow: ray job logs --follow {sub.job_id} --address {sub.address})", flush=True)
    if ns.wait:
        status = wait_for_job(ns.address, sub.job_id, token_file=ns.token_file)
        print(f"job {sub.job_id}: {status}")
        if status != "SUCCEEDED":
            sys.exit(1)


def add_grid_commands(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("grid", help="run a comparison grid (estimators x updates x seeds) on Ray Tune",
                        description="Validates SPEC (a YAML grid spec, see orchestrator/spec.py and experiments/*.yaml), then runs every trial as one Ray Tune experiment in <storage>/<name>, printing a live status line, and writes the analysis report.")
    sp.add_argument("spec", metavar="SPEC", help="grid spec YAML (e.g. experiments/smoke.yaml)")
    sp.add_argument("--storage", default=None, help="directory holding run directories (default: the spec's storage, runs/grid)")
    sp.add_argument("--name", default=None, help="run directory name (default: the spec's name)")
    sp.add_argument("--address", default=None, help="join a running Ray cluster (HOST:6379 or ray://HOST:10001) instead of starting a local one; with token auth, the token comes from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    sp.add_argument("--resume", action="store_true", help="continue <storage>/<name> if it exists (same spec), else start it")
    sp.add_argument("--cells", default="", metavar="LABEL[:SEED],...", help="run only these cells of SPEC (default: all), each a label or label:seed for one of its seeds, e.g. mc1-expert+awr:3,offline-mc4-expert+awr; to run a grid in pieces, give each piece its own --name (`analyze` pools them)")
    sp.add_argument("--seeds", type=_seed_list, default=[], metavar="S[,S...]", help="seed values to run (default: each cell's seeds in SPEC), e.g. 3 or 1,3")
    _add_resource_args(sp, "trial")
    sp.add_argument("--no-analysis", action="store_true", help="do not write the analysis report at the end")
    sp.add_argument("--no-figures", action="store_true", help="the analysis at the end writes tables and report only, no figures")
    sp.set_defaults(func=_cmd_grid)

    sp = sub.add_parser("resume", help="continue an interrupted grid from its run directory",
                        description="Restores the Tune experiment in RUN_DIR (which may have been moved): finished trials are kept, unfinished and failed ones continue from their last checkpoint. --cpus-per-trial/--gpus-per-trial/--mc-worker-cpus change the resources of the unfinished trials (their configs stay); the run's spec records the change.")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="the grid's run directory (<storage>/<name>)")
    sp.add_argument("--address", default=None, help="join a running Ray cluster instead of starting a local one")
    _add_resource_args(sp, "unfinished trial from now on")
    sp.add_argument("--no-analysis", action="store_true", help="do not write the analysis report at the end")
    sp.add_argument("--no-figures", action="store_true", help="the analysis at the end writes tables and report only, no figures")
    sp.set_defaults(func=_cmd_resume)

    sp = sub.add_parser("submit", help="run a grid on a Ray cluster (Ray Job) or write a SLURM batch script",
                        description="Submits `grid SPEC --resume` as a Ray job (shipping the working directory) to the cluster whose dashboard is at --address, or with --slurm writes an sbatch script that starts Ray on the allocation's nodes and runs the grid. See orchestrator/submit.py.")
    sp.add_argument("spec", metavar="SPEC", help="grid spec YAML inside the working directory")
    sp.add_argument("--address", default=None, help="Ray dashboard address, e.g. http://HEAD:8265")
    sp.add_argument("--storage", default=None, help="absolute results path every node can reach (default: the spec's, if absolute)")
    sp.add_argument("--name", default=None, help="run directory name (default: the spec's name)")
    sp.add_argument("--working-dir", default=".", help="directory shipped to the cluster (default: .)")
    sp.add_argument("--pip", nargs="+", default=None, metavar="REQ", help="pip requirements installed into the job's environment")
    sp.add_argument("--token-file", default=None, help="Ray auth token file (default: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")
    sp.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 1 unless it succeeded")
    sp.add_argument("--slurm", default=None, metavar="OUT.sbatch", help="write a SLURM batch script instead of submitting")
    add_dataclass_args(sp, SlurmConfig, group="SLURM batch script (with --slurm)")
    sp.set_defaults(func=_cmd_submit)

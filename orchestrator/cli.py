"""``python -m orchestrator <command>``: every job of the platform from one CLI.

Heavy imports (torch, ManiSkill, Ray) happen inside each command, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.cli_args import add_dataclass_args, comma_list, dataclass_from_args


def _check_policy_run(policy: str, backend: str) -> None:
    """The policy checkpoint loads, records its task, fits that task's sizes, and the backend is available here."""
    from algorithms.checkpoint import check_fits_task, load_policy, policy_task
    from envs.backend import resolve_backend

    _, ck = load_policy(policy)
    env_id, control_mode = policy_task(ck, f"policy {policy}", "save it with save_policy first")
    check_fits_task(ck, f"policy {policy}", env_id, control_mode)
    resolve_backend(backend)


def _check_output_file(path: str, flag: str, overwrite: bool) -> None:
    """An output file may be written: not a directory, in a writable place, and not replacing one without --overwrite."""
    from algorithms.checkpoint import check_writable_dir

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {p} is a directory; give a file name")
    if p.exists() and not overwrite:
        raise ValueError(f"{flag} {p} already exists; pass --overwrite to replace it, or choose another {flag}")
    check_writable_dir(p.parent, flag)


def _cmd_pretrain(ns):
    from algorithms.checkpoint import check_fits_task, check_writable_dir, load_checkpoint
    from algorithms.finetune import check_device
    from algorithms.pretrain import PretrainConfig, pretrain
    from envs.backend import resolve_backend
    from envs.task_spaces import task_spaces

    cfg = dataclass_from_args(PretrainConfig, ns)
    check_device(cfg.device)
    task_spaces(cfg.env_id, cfg.control_mode)
    if cfg.init_from:
        check_fits_task(load_checkpoint(cfg.init_from, kind="policy", env_id=cfg.env_id), f"--init-from {cfg.init_from}", cfg.env_id, cfg.control_mode)
    resolve_backend(cfg.backend)
    check_writable_dir(cfg.out_dir, "--out-dir")
    out = pretrain(cfg, resume=not ns.fresh, progress=not ns.no_progress, max_iterations=ns.max_iterations, max_minutes=ns.max_minutes)
    print(f"ladder: {out / 'ladder.csv'}")


def _cmd_select(ns):
    from algorithms.checkpoint import check_writable_dir
    from algorithms.select import SelectConfig, select_policies
    from envs.backend import resolve_backend

    cfg = dataclass_from_args(SelectConfig, ns)
    if not (Path(cfg.ladder_dir) / "ladder.csv").is_file():
        raise FileNotFoundError(f"no ladder.csv in {cfg.ladder_dir}: run `pretrain` first")
    resolve_backend(cfg.backend)
    check_writable_dir(cfg.out_dir, "--out-dir")
    prov = select_policies(cfg)
    for role, p in prov["policies"].items():
        print(f"{role}: {p['file']} from {p['source_checkpoint']}: deterministic {p['success_det']:.3f}, stochastic {p['success_stoch']:.3f} ({p['eval_episodes']} episodes)")


def _cmd_eval(ns):
    from algorithms.checkpoint import check_fits_task, check_policy_fits, load_policy, policy_task
    from algorithms.evaluate import evaluate, evaluate_fixed_steps
    from envs.backend import resolve_backend
    from envs.config import EnvConfig
    from envs.vector import make_vector_env
    from tqdm import tqdm

    _check_counts(ns, episodes=1, num_envs=1, seed=0)
    agent, ck = load_policy(ns.checkpoint)
    env_id, control_mode = policy_task(ck, str(ns.checkpoint), "pass --env-id", env_id=ns.env_id)
    check_fits_task(ck, f"checkpoint {ns.checkpoint}", env_id, control_mode)
    backend = resolve_backend(ns.backend)
    results = {}
    with make_vector_env(EnvConfig(env_id, ns.num_envs, control_mode, "sparse", backend=backend)) as venv:
        check_policy_fits(ck, str(ns.checkpoint), env_id, venv)
        modes = [True, False] if ns.stochastic else [True]
        with tqdm(total=ns.episodes * len(modes), desc="eval", unit="ep", disable=ns.no_progress) as bar:
            for det in modes:
                if ns.protocol == "episodes":
                    r = evaluate(agent, venv, ns.episodes, ns.seed, det, progress=bar.update, in_workers=not ns.batched)
                else:  # the reference's count: --episodes auto-resetting envs, each run for one episode's steps
                    r = evaluate_fixed_steps(agent, venv, ns.episodes, ns.seed, det)
                    bar.update(ns.episodes)
                results["deterministic" if det else "stochastic"] = r.as_dict()
    what = "episodes" if ns.protocol == "episodes" else f"episodes ended in {ns.episodes} envs x one episode's steps (reference count)"
    for mode, r in results.items():
        print(f"{mode:>13}: success {r['success_rate'] * 100:.1f}% over {r['episodes']} {what} (mean return {r['mean_return']:.3f}, mean length {r['mean_length']:.1f})")
    if ns.json:
        print(json.dumps({"checkpoint": str(ns.checkpoint), "env_id": env_id, "backend": venv.backend, "protocol": ns.protocol, **results}))


def _check_counts(ns, **minimum) -> None:
    """ValueError naming the first flag below its minimum (``episodes=1``: --episodes must be >= 1)."""
    for name, low in minimum.items():
        if getattr(ns, name) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(ns, name)}")


def _check_trial_call(cfg, out: str, resume: bool, overwrite: bool):
    """Everything a finetune/quality call needs, checked before anything is written or started; returns the
    checkpoint directory to resume from (or None)."""
    from algorithms.finetune import check_trial_machine, prepare_trial_dir, validate_trial_inputs

    check_trial_machine(cfg)
    validate_trial_inputs(cfg)
    return prepare_trial_dir(out, cfg, resume=resume, overwrite=overwrite)


def _spec_cell_config(ns, cfg, cell: str | None):
    """The trial config of grid cell ``cell`` (None: the first) of ``ns.spec`` (its first seed), with the
    FinetuneConfig flags given on the command line, ``--seed`` among them, laid over it."""
    import dataclasses

    from algorithms.config import FinetuneConfig
    from orchestrator.spec import expand_trials, load_spec

    trials = [c for c in expand_trials(load_spec(ns.spec)) if cell in (None, c.label)]
    if not trials:
        raise ValueError(f"{ns.spec} has no cell {cell!r}")
    given = {k: getattr(cfg, k) for k in vars(ns) if k in FinetuneConfig.field_names()}
    return dataclasses.replace(trials[0], **given)


def _cmd_finetune(ns):
    from algorithms.config import FinetuneConfig
    from algorithms.finetune import run_trial

    cfg = dataclass_from_args(FinetuneConfig, ns)
    if ns.spec:
        cfg = _spec_cell_config(ns, cfg, cfg.cell or None)
    out = ns.out_dir or f"runs/finetune/{cfg.label.replace('+', '-')}-seed{cfg.seed}"
    resume = _check_trial_call(cfg, out, ns.resume, ns.overwrite)
    history = run_trial(cfg, out, resume_from=resume, progress=not ns.no_progress)
    evals = [(h["iteration"], h["eval/success_rate"]) for h in history if "eval/success_rate" in h]
    print(f"{cfg.label}: success " + " -> ".join(f"{s * 100:.1f}%" for _, s in evals) + f"  (iterations {evals[0][0]}..{evals[-1][0]}; results in {out})")


def _cmd_collect(ns):
    from algorithms.data import CollectConfig, TransitionDataset, collect_dataset

    cfg = dataclass_from_args(CollectConfig, ns)
    _check_policy_run(cfg.policy, cfg.backend)
    _check_output_file(cfg.out, "--out", ns.overwrite)
    collect_dataset(cfg, progress=not ns.no_progress)
    m = TransitionDataset(cfg.out).metrics
    print(f"dataset: {cfg.out}: {m['num_transitions']} transitions, {m['episodes_ended']} episode ends, {m['successes']} successes")


def _cmd_pretrain_iql(ns):
    from algorithms.checkpoint import load_checkpoint
    from algorithms.data import TransitionDataset
    from algorithms.finetune import check_device
    from algorithms.pretrain_values import IQLPretrainConfig, pretrain_iql

    cfg = dataclass_from_args(IQLPretrainConfig, ns)
    check_device(cfg.device)
    TransitionDataset(cfg.dataset)  # loads and hash-checks it: a bad file is refused before the output is touched
    _check_output_file(cfg.out, "--out", ns.overwrite)
    out = pretrain_iql(cfg, progress=not ns.no_progress)
    m = load_checkpoint(out, kind="value")["metrics"]
    print(f"Q/V (expectile {cfg.expectile:g}{', SARSA' if cfg.expectile == 0.5 else ''}): {out}: q_loss {m['q_loss']:.4g}, v_loss {m['v_loss']:.4g}, A>0 on {m['advantage_pos_ratio'] * 100:.1f}% of the data")


def _cmd_pretrain_critic(ns):
    from algorithms.checkpoint import load_checkpoint
    from algorithms.finetune import check_device
    from algorithms.pretrain_values import CriticPretrainConfig, pretrain_critic

    cfg = dataclass_from_args(CriticPretrainConfig, ns)
    check_device(cfg.device)
    _check_policy_run(cfg.policy, cfg.backend)
    _check_output_file(cfg.out, "--out", ns.overwrite)
    out = pretrain_critic(cfg, progress=not ns.no_progress)
    m = load_checkpoint(out, kind="value")["metrics"]
    print(f"critic (gamma {cfg.gamma:g}, {cfg.reward_mode} reward): {out}: {m['num_samples']} returns, value_loss {m['value_loss']:.4g}, explained variance {m['explained_variance']:.3f}")


def _cmd_analyze(ns):
    from orchestrator.rundir import FAILED
    from orchestrator.storage import analyze_runs

    out = analyze_runs(ns.run_dirs, ns.out, target=ns.target, reps=ns.reps, compare=ns.compare, published=ns.published,
                  figures=not ns.no_figures, finished_only=ns.finished_only)
    for w in out.warnings:
        print(f"warning: {w}", file=sys.stderr)
    t = out.summary.table
    for _, r in t.iterrows():
        print(f"{r['cell']}: n={r['n']}, final IQM {r['final_iqm'] * 100:.1f}% [{r['final_low'] * 100:.1f}, {r['final_high'] * 100:.1f}]")
    failed = sum(int((e.trials["status"] == FAILED).sum()) for e in out.experiments)
    if failed:
        print(f"{failed} failed trial{'s' if failed > 1 else ''} (see the report's Failures section)")
    print(f"report: {out.report}")


def _cmd_quality(ns):
    import dataclasses

    from algorithms.config import FinetuneConfig
    from algorithms.finetune import run_trial

    cfg = dataclass_from_args(FinetuneConfig, ns)
    if cfg.quality_every < 1:
        cfg = dataclasses.replace(cfg, quality_every=1)
    out = ns.out_dir or f"runs/quality/{cfg.estimator}-{cfg.update}-seed{cfg.seed}"
    _check_trial_call(cfg, out, resume=False, overwrite=ns.overwrite)
    history = run_trial(cfg, out, progress=not ns.no_progress)
    oracle = f"MC of the {'expert' if cfg.quality_policy == 'expert' else 'rollout policy'} with {cfg.quality_samples} samples"
    if cfg.quality_mode == "actions":
        cols = ["quality/spearman", "quality/spearman_median", "quality/top1", "quality/states", "quality/rmse"]
        print(f"{cfg.estimator}: ranking of {cfg.quality_actions} sampled actions at {cfg.quality_states} states vs {oracle} per action "
              f"(spearman: mean per-state rho, the reference's statistic):")
    else:
        cols = ["quality/spearman", "quality/spearman_within", "quality/bias", "quality/rmse", "quality/sign_agreement"]
        print(f"{cfg.estimator} advantages vs {oracle} ({cfg.batch_size} transitions per iteration):")
    print("iteration  " + "  ".join(f"{c.split('/')[1]:>15}" for c in cols) + "  success")
    for h in history:
        if "quality/spearman" in h:
            vals = "  ".join(f"{h.get(c, float('nan')):>15.3f}" for c in cols)
            print(f"{h['iteration']:>9}  {vals}  {h.get('eval/success_rate', float('nan')):.3f}")
    print(f"results in {out}")


def _cmd_export_policies(ns):
    from orchestrator.policy_export import export_policies

    cells = comma_list(ns.cells) or None
    res = export_policies(ns.run_dirs, ns.out, cells, overwrite=ns.overwrite)
    for line in res.skipped:
        print(f"skipped: {line}")
    for _, r in res.index.iterrows():
        print(f"{r['cell']:<24} seed {r['seed']:<3} {r['final_success']:6.1%}  {r['file']}")
    print(f"{len(res.index)} policies and index.csv in {ns.out}")


def _cmd_selfclone(ns):
    from algorithms.config import FinetuneConfig
    from algorithms.selfclone import self_clone, self_clone_config

    # AWR is the rule whose uniform-weight update is plain self-cloning; a spec's cell brings its own rule
    cfg = dataclass_from_args(FinetuneConfig, ns, **({} if "update" in vars(ns) or ns.spec else {"update": "awr"}))
    if ns.spec:
        cfg = _spec_cell_config(ns, cfg, ns.spec_cell)
    out = ns.out_dir or f"runs/selfclone/{cfg.label.replace('+', '-')}-seed{cfg.seed}"
    _check_trial_call(self_clone_config(cfg), out, False, ns.overwrite)
    print(self_clone(cfg, out, progress=not ns.no_progress).line())
    print(f"results in {out}")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``error:`` line (exit 2) instead of the full usage text."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a message that spans lines is joined with ' | ')."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return " | ".join(lines) or type(e).__name__


def build_parser() -> argparse.ArgumentParser:
    from algorithms.config import FinetuneConfig
    from algorithms.pipeline_config import (CollectConfig, CriticPretrainConfig, IQLPretrainConfig, PretrainConfig,
                                            SelectConfig)

    p = OneLineErrorParser(
        prog="python -m orchestrator",
        description="Offline-to-online RL finetuning of ManiSkill policies: advantage estimators x update rules on Ray Tune.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("pretrain", help="PPO from scratch (dense reward): the checkpoint ladder", description="PPO from scratch on the dense reward; evaluates and saves a checkpoint every --eval-every iterations into ladder.csv. Resumes from --out-dir/state.pt.")
    add_dataclass_args(sp, PretrainConfig)
    sp.add_argument("--fresh", action="store_true", help="ignore an existing state.pt in --out-dir")
    sp.add_argument("--max-iterations", type=int, default=None, help="stop this call after this many iterations (resume later)")
    sp.add_argument("--max-minutes", type=float, default=None, help="stop this call after this many minutes (resume later)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_pretrain)

    sp = sub.add_parser("select", help="pick the start (40-65%%) and expert (>=95%%) policies from a ladder", description="Picks the start and expert policies from a pretraining ladder, confirms them on --confirm-episodes deterministic episodes, writes start.pt, expert.pt and provenance.json.")
    add_dataclass_args(sp, SelectConfig)
    sp.set_defaults(func=_cmd_select)

    sp = sub.add_parser("finetune", help="one finetuning trial (any estimator x update rule), no Ray", description="One trial: iterations of eval / rollout / estimate advantages / update, with TensorBoard logs and a checkpoint per iteration in --out-dir.")
    add_dataclass_args(sp, FinetuneConfig)
    sp.add_argument("--spec", default=None, help="grid spec: run the protocol of its cell --cell (default: its first cell); flags given here override it")
    sp.add_argument("--out-dir", default=None, help="trial directory (default: runs/finetune/<cell>-seed<seed>)")
    sp.add_argument("--resume", action="store_true", help="continue the trial in --out-dir from <out-dir>/checkpoint (same flags; --num-iterations may grow, to extend it)")
    sp.add_argument("--overwrite", action="store_true", help="remove the trial already in --out-dir (config.json, metrics.jsonl, tb/, checkpoint/) and start again")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_finetune)

    sp = sub.add_parser("collect", help="offline dataset of transitions from a policy (sparse reward)", description="Runs a policy checkpoint on its task with the sparse reward and writes --num-transitions transitions (obs, actions, rewards, next_obs, terminated, truncated; --save-states: simulator states) as a hash-checked dataset file.")
    add_dataclass_args(sp, CollectConfig)
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_collect)

    sp = sub.add_parser("pretrain-iql", help="IQL Q/V networks from a dataset (--expectile 0.5: SARSA)", description="Fits Q(s,a) by TD regression on r + gamma*V(s') and V(s) by expectile regression of Q on a collected dataset; the value checkpoint feeds the iql (--expectile = --iql-expectile) and sarsa (--expectile 0.5) estimators.")
    add_dataclass_args(sp, IQLPretrainConfig)
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_pretrain_iql)

    sp = sub.add_parser("pretrain-critic", help="V(s) on discounted MC returns of a policy (the expert)", description="Runs --policy on the task, computes every step's discounted return to the end of its episode and regresses V(s) on it; the checkpoint initialises GAE's critic (--gae-critic-checkpoint).")
    add_dataclass_args(sp, CriticPretrainConfig)
    sp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_pretrain_critic)

    sp = sub.add_parser("quality", help="estimator quality vs an MC oracle (Spearman, bias, RMSE) over a short trial", description="Runs a trial with the quality probe on every iteration (research question 4): --quality-mode batch scores the estimator's advantages on its batch against MC re-rollouts (--quality-policy, --quality-samples) of the same transitions; --quality-mode actions is the reference's action-ranking analysis (per state, the Spearman rank of --quality-actions sampled actions).")
    add_dataclass_args(sp, FinetuneConfig)
    sp.add_argument("--out-dir", default=None, help="trial directory (default: runs/quality/<estimator>-<update>-seed<seed>)")
    sp.add_argument("--overwrite", action="store_true", help="remove the trial already in --out-dir (config.json, metrics.jsonl, tb/, checkpoint/) and start again")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_quality)

    sp = sub.add_parser("selfclone", help="diagnostic: does the protocol keep the start policy under uniform-weight AWR?",
                        description="Runs the update rule (default awr) with every advantage 0 -- cloning the policy's own samples -- and "
                                    "prints the deterministic success before and after. A protocol that collapses the start policy here "
                                    "collapses it whatever the estimator. With --spec, the protocol of a grid cell (--cell, default: the "
                                    "first cell); flags given here override it.")
    add_dataclass_args(sp, FinetuneConfig, skip=("estimator", "cell"))
    sp.add_argument("--spec", default=None, help="grid spec whose cell protocol to diagnose")
    sp.add_argument("--cell", dest="spec_cell", default=None, help="the cell's label in --spec (default: its first cell)")
    sp.add_argument("--out-dir", default=None, help="trial directory (default: runs/selfclone/<cell>-seed<seed>)")
    sp.add_argument("--overwrite", action="store_true", help="remove an earlier diagnostic in --out-dir (config.json, metrics.jsonl, tb/, checkpoint/) and run again")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_selfclone)

    sp = sub.add_parser("export-policies", help="copy the final policy of every finished trial of some cells, with index.csv",
                        description="Copies each finished trial's last checkpointed policy out of a grid's run directory (or several: a grid run in pieces) as <cell>_s<seed>.pt and writes index.csv (cell,seed,file,final_success), so the policies can be re-evaluated without the run directory (e.g. experiments/results/seed-v2/policies/).")
    sp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a Tune experiment directory (<storage_path>/<name>); several (the pieces of one grid) share one index.csv")
    sp.add_argument("--out", required=True, help="folder for the policies and index.csv")
    sp.add_argument("--cells", default="", help="comma-separated cell labels (e.g. gae+ppo,mc16-expert+awr); empty: every cell")
    sp.add_argument("--overwrite", action="store_true", help="replace policy files and index.csv already in --out")
    sp.set_defaults(func=_cmd_export_policies)

    sp = sub.add_parser("eval", help="success rate of a checkpoint", description="Deterministic (and with --stochastic also stochastic) success rate of a policy checkpoint on fixed seeds.")
    sp.add_argument("--checkpoint", required=True, help="policy checkpoint (.pt); a bare ManiSkill state_dict works with --env-id")
    sp.add_argument("--episodes", type=int, default=256, help="episodes to evaluate (default: 256)")
    sp.add_argument("--num-envs", type=int, default=8, help="parallel envs (default: 8)")
    sp.add_argument("--seed", type=int, default=20_000, help="first episode seed (default: 20000)")
    sp.add_argument("--backend", default="auto", choices=["auto", "gpu", "cpu"], help="simulation backend (default: auto)")
    sp.add_argument("--env-id", default=None, help="override the env id recorded in the checkpoint")
    sp.add_argument("--stochastic", action="store_true", help="also evaluate with sampled actions")
    sp.add_argument("--protocol", default="episodes", choices=["episodes", "reference"], help="episodes: --episodes whole episodes from fixed seeds (default); reference: the reference code's count, --episodes auto-resetting envs run one episode's steps and every episode that ends counts (leans towards success)")
    sp.add_argument("--batched", action="store_true", help="cpu backend: step all envs together with one batched policy call per step, instead of each episode inside an env worker with its own policy copy as trials evaluate (batched inference rounds differently, which flips an episode or two of 128 on contact-rich tasks)")
    sp.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=_cmd_eval)
    sp = sub.add_parser("analyze", help="statistics, figures and report of one or several grids", description="Reads (finished, running or interrupted) Ray Tune experiment directories, folders an earlier analysis exported, or folders of standalone finetune trials (their --out-dirs); writes results.csv/.parquet, trials.csv, summary.csv/.tex, figures (SVG and PNG) and report.md/.html: per cell IQM with 95% CIs over seeds, per-seed and hyperparameter tables, published numbers, probability of improvement, performance profiles, sample efficiency, estimator quality, failures.")
    sp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a Tune experiment directory (<storage_path>/<name>), an exported analysis folder, or a folder of finetune --out-dir trials (or one); several are pooled (or compared with --compare)")
    sp.add_argument("--out", default=None, help="output folder (default: RUN_DIR/analysis; required with several RUN_DIRs)")
    sp.add_argument("--compare", action="store_true", help="keep several runs' cells apart (side by side) instead of pooling the same cell's seeds")
    sp.add_argument("--no-figures", action="store_true", help="tables and report only, no figures (drawing them is most of an analysis' time)")
    sp.add_argument("--finished-only", action="store_true", help="leave out trials still running or interrupted (by default they enter with their latest evaluation as their final)")
    sp.add_argument("--published", default=None, help="YAML of published numbers for the report's comparison (default: the grid spec's `published`)")
    sp.add_argument("--target", type=float, default=0.9, help="success threshold for 'env steps to reach target' (default: 0.9)")
    sp.add_argument("--reps", type=int, default=10_000, help="bootstrap resamples (default: 10000)")
    sp.set_defaults(func=_cmd_analyze)

    from orchestrator.grid_commands import add_grid_commands

    add_grid_commands(sub)
    return p


def main(argv=None) -> None:
    parser = build_parser()
    ns = parser.parse_args(argv)
    import os

    import torch

    # The networks are tiny: on CPU extra intra-op threads only spin against the env worker processes
    # (measured 15x slower IQL steps on 2 cores).  O2O_TORCH_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("O2O_TORCH_THREADS", "1")))
    from algorithms.checkpoint import CheckpointError
    from envs.backend import BackendUnavailable

    try:
        ns.func(ns)
    except (CheckpointError, ValueError, FileNotFoundError, BackendUnavailable) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def program(argv=None) -> None:
    """The process entry point (``python -m orchestrator``, the ``o2o`` script): :func:`main`, then the end of the
    process, without C++ teardown where a command ran Ray here (``orchestrator.process_exit``).  From Python, call
    :func:`main`: it returns, and leaves the calling process alone."""
    from orchestrator.process_exit import end_process

    try:
        main(argv)
    except SystemExit as e:
        end_process(e.code)  # returns unless Ray ran in this process
        raise
    end_process(0)

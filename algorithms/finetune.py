"""One finetuning trial: eval -> rollout -> estimate -> update, for any estimator x update rule.

No Ray here.  ``run_trial`` reports each iteration's metrics (SPEC.md names) to a callback and to
TensorBoard, saves the whole trial state (policy, optimisers, estimator state, RNG, history) into
``<out_dir>/checkpoint`` after every iteration, rewrites ``<out_dir>/metrics.jsonl`` (the history, one JSON row per
reported iteration: what ``orchestrator analyze`` reads from a folder of such trials), and resumes from a
checkpoint directory when given one.
Iteration 0 is the start policy's evaluation.

Resets: with ``rollout_reset=iteration`` env i of iteration k starts from seed
``seed * 1_000_003 + (k - 1) * num_envs + i``, so no two rollouts of a trial share an initial state.  With
``rollout_reset=once`` (the reference's protocol) episodes carry over from one iteration to the next
(evaluation saves and restores the training envs' state around itself); a resumed ``once`` trial restarts its
episodes at the resume point.  ``offline`` collects and estimates one batch at iteration 1 and trains on it at
every iteration (it is saved with the trial state, so a resumed offline trial trains on the same batch).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from algorithms import rng
from algorithms.checkpoint import atomic_torch_save, atomic_write_text, check_policy_fits, check_writable_dir, load_policy, save_policy
from algorithms.config import FinetuneConfig
from algorithms.detrend import detrend_on_values
from algorithms.estimators import TrialContext, estimator_class, make_estimator
from algorithms.evaluate import evaluate, evaluate_fixed_steps
from algorithms.quality import pearson
from algorithms.rollout import collect_rollout
from algorithms.trial_files import CHECKPOINT_DIR, CONFIG_JSON, METRICS_JSONL, TB_DIR, TRIAL_FILES, TRIAL_STATE
from algorithms.updates import UpdateBatch, make_update
from envs.backend import resolve_backend
from envs.config import EnvConfig
from envs.factory import EnvFactory
from envs.forkserver import EnvForkServer

ReportFn = Callable[[dict, Path], None]
RESET_STRIDE = 1_000_003


def rollout_seeds(cfg: FinetuneConfig, iteration: int) -> list[int]:
    """Reset seeds of the rollout envs at ``iteration`` (1-based): distinct across the trial's iterations and envs."""
    base = cfg.seed * RESET_STRIDE + (iteration - 1) * cfg.num_envs
    return [base + i for i in range(cfg.num_envs)]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str) -> None:
    """ValueError (one line) unless ``name`` (auto | cpu | cuda[:N]) is a torch device this machine has."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = f"only {count} CUDA device{'s' if count != 1 else ''}" if count else "no CUDA device"
            raise ValueError(f"device {name!r} is not available: torch sees {have}; use --device cpu (or auto)")


def check_trial_machine(cfg: FinetuneConfig) -> None:
    """This machine can run the trial: its torch device exists and its simulation backend is available.
    Raises ValueError / BackendUnavailable in one line, before any simulator starts."""
    check_device(cfg.device)
    resolve_backend(cfg.backend)


def validate_trial_inputs(cfg: FinetuneConfig) -> None:
    """Check the task and every file the trial reads before any simulator starts: each checkpoint loads, is the
    kind the trial needs, records the observation/action sizes of ``cfg.env_id`` under ``cfg.control_mode``
    (read without a simulator, :func:`envs.task_spaces.task_spaces`; for a task outside its table, the sizes of
    the start checkpoint, and the env's when it starts).  Raises CheckpointError/ValueError in one line naming
    the checkpoint's role and file."""
    from algorithms.checkpoint import check_fits_task, check_same_sizes, load_checkpoint

    top = (2**32 - 1 - cfg.num_iterations * cfg.num_envs) // RESET_STRIDE  # ManiSkill seeds numpy's RandomState: below 2**32
    if not 0 <= cfg.seed <= top:
        raise ValueError(f"seed must be in [0, {top}] (env resets are seeded from seed * {RESET_STRIDE}, see rollout_seeds), got {cfg.seed}")
    task = dict(env_id=cfg.env_id, control_mode=cfg.control_mode)
    start_label = f"start checkpoint {cfg.start_checkpoint}"
    start = load_checkpoint(cfg.start_checkpoint, kind="policy", **task)
    check_fits_task(start, start_label, **task)

    def fits(ckpt: dict, label: str) -> None:
        check_fits_task(ckpt, label, **task)
        check_same_sizes(ckpt, label, start, start_label)

    if needs_expert(cfg):
        fits(load_checkpoint(cfg.expert_checkpoint, kind="policy", **task), f"expert checkpoint {cfg.expert_checkpoint}")
    if cfg.estimator in ("iql", "sarsa"):
        from algorithms.estimators.iql import load_trial_values

        if cfg.iql_checkpoint:
            fits(load_checkpoint(cfg.iql_checkpoint, kind="value", **task), f"{cfg.estimator} Q/V checkpoint {cfg.iql_checkpoint}")
        load_trial_values(cfg)  # also the expectile (sarsa: 0.5) and gamma the Q/V were trained with
    if cfg.gae_critic_checkpoint:
        from algorithms.agent import Agent
        from algorithms.value_functions import load_critic_into

        # a V-only critic of the right size and discount (an IQL Q/V file is refused here, not after the envs start)
        fits(load_checkpoint(cfg.gae_critic_checkpoint, kind="value", env_id=cfg.env_id), f"critic checkpoint {cfg.gae_critic_checkpoint}")
        load_critic_into(Agent(start["obs_dim"], start["act_dim"]), cfg.gae_critic_checkpoint, obs_dim=start["obs_dim"], gamma=cfg.gamma)


def prepare_trial_dir(out_dir: str | Path, cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False) -> Optional[Path]:
    """Decide what a ``finetune`` call may do with ``out_dir``, after the inputs are validated and before anything
    is written.  Returns the checkpoint directory to resume from (``resume``), else None.

    * a directory holding a trial (config.json, metrics.jsonl, tb/ or checkpoint/) is refused unless ``resume`` or ``overwrite``;
    * ``resume`` needs ``<out_dir>/checkpoint/trial_state.pt`` of a trial with this very config;
    * ``overwrite`` removes that trial's files (only those: config.json, metrics.jsonl, tb/, checkpoint/) and says so.
    Raises ValueError in one line; nothing is changed when it raises."""
    out = Path(out_dir)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: --resume continues the trial in --out-dir, --overwrite starts it again")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out-dir {out} is a file, not a directory; choose another --out-dir")
    check_writable_dir(out, "--out-dir")
    existing = [name for name in TRIAL_FILES if (out / name).exists()]
    if resume:
        state = out / CHECKPOINT_DIR / TRIAL_STATE
        if not state.is_file():
            raise ValueError(f"--resume: {state} does not exist, so there is no trial to continue; run without --resume to start one")
        try:
            saved = torch.load(state, map_location="cpu", weights_only=False)
            config, finished = saved["config"], saved["iteration"]
        except Exception as e:  # truncated file, not a trial state
            raise ValueError(f"--resume: {state} is not a readable trial state ({type(e).__name__}); pass --overwrite to start the trial again") from None
        _check_same_config(config, finished, cfg, state)
        return out / CHECKPOINT_DIR
    if existing and not overwrite:
        raise ValueError(f"--out-dir {out} already holds a trial ({', '.join(existing)}); pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --out-dir")
    if existing:
        for name in existing:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        print(f"--overwrite: removed the previous trial's {', '.join(existing)} from {out}", file=sys.stderr, flush=True)
    return None


def _check_same_config(saved: dict, finished: int, cfg: FinetuneConfig, state: Path) -> None:
    """``saved``: the config of the trial state at ``state``, which has finished ``finished`` iterations.
    ``num_iterations`` alone may differ, down to ``finished``: nothing in a trial depends on it but where its loop
    stops (reset seeds, schedules and the update use the iteration index only), so a trial resumed with more
    iterations continues as one started with that many would have (exactly so with eval_every 1; otherwise the old
    last iteration keeps the extra evaluation every trial makes at its end)."""
    new = cfg.to_dict()
    changed = [k for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k) and k != "num_iterations"]
    if changed:
        k = changed[0]
        raise ValueError(f"--resume: the trial in {state.parent.parent} was run with {k}={saved.get(k)!r}, this call asks for {new.get(k)!r}"
                         f"{f' (and {len(changed) - 1} more changes)' if len(changed) > 1 else ''}; "
                         "resume with the same flags, or pass --overwrite to start it again")
    if cfg.num_iterations < finished:
        raise ValueError(f"--resume: the trial in {state.parent.parent} has finished {finished} iterations, so --num-iterations "
                         f"must be at least {finished} (it may grow, to extend the trial), got {cfg.num_iterations}")


def needs_expert(cfg: FinetuneConfig) -> bool:
    return (cfg.estimator == "mc" and cfg.mc_policy == "expert") or (cfg.quality_every > 0 and cfg.quality_policy == "expert")


def load_expert(cfg: FinetuneConfig, device, obs_dim: int, act_dim: int):
    """pi* from ``cfg.expert_checkpoint`` in eval mode, its log-std [1, act_dim] set to ``cfg.expert_logstd`` if given."""
    expert, _ = load_policy(cfg.expert_checkpoint, device=device, env_id=cfg.env_id, obs_dim=obs_dim, act_dim=act_dim)
    if cfg.expert_logstd is not None:
        expert.set_logstd(cfg.expert_logstd)
    return expert.eval()


def _rng_state(gens: dict) -> dict:
    return {k: g.get_state() for k, g in gens.items()}


def run_trial(
    cfg: FinetuneConfig,
    out_dir: str | Path,
    report: Optional[ReportFn] = None,
    resume_from: Optional[str | Path] = None,
    progress: bool = False,
    cpus: Optional[int] = None,
    fork_server: Optional[EnvForkServer] = None,
) -> list[dict]:
    """Run (or continue) a trial; returns the list of per-iteration metric dicts (iteration 0 included).
    ``cpus``: CPUs granted to the trial, the most env worker processes its rollout and re-rollout envs each
    start (None: the CPUs this process may run on).  Rollouts and evaluations do not depend on it; MC re-rollouts
    run in the workers (``mc_in_workers``) do, through their chunk layout (``RerolloutEngine._returns_in_workers``):
    an MC trial replays bit for bit with the same CPUs (a grid's ``cpus_per_trial`` + ``mc_worker_cpus``).
    ``fork_server``: the server the cpu backend's env workers are forked from, kept by the caller across trials
    (None: the trial starts one, shared by its env sets, and closes it at its end)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    validate_trial_inputs(cfg)
    resumed = None
    if resume_from is not None:
        # checked before anything is written: a refused resume leaves the trial directory as it was
        if not (Path(resume_from) / TRIAL_STATE).is_file():
            raise ValueError(f"cannot resume from {resume_from}: it holds no {TRIAL_STATE}")
        resumed = torch.load(Path(resume_from) / TRIAL_STATE, map_location="cpu", weights_only=False)
        _check_same_config(resumed["config"], resumed["iteration"], cfg, Path(resume_from) / TRIAL_STATE)
        if resumed["config"].get("num_iterations") != cfg.num_iterations:
            print(f"resume: the trial runs to iteration {cfg.num_iterations} (it was set to {resumed['config'].get('num_iterations')}); "
                  f"{resumed['iteration']} are done", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_JSON).write_text(json.dumps(cfg.to_dict(), indent=2))
    if resumed is not None and resumed["iteration"] >= cfg.num_iterations:
        # a finished trial's state resumed: its final report reached storage but not the driver (a stop between
        # the two; Tune then restores the checkpoint before it, or this one where that is gone). Reporting the
        # final metrics again records them, with no env, estimator or update started.
        if report is not None:
            report(dict(resumed["history"][-1]), Path(resume_from))
        return resumed["history"]
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    agent, start_ck = load_policy(cfg.start_checkpoint, device=device, env_id=cfg.env_id, control_mode=cfg.control_mode)
    if cfg.start_logstd is not None:  # a resumed trial's own weights load later and replace this
        agent.set_logstd(cfg.start_logstd)
    expert = load_expert(cfg, device, agent.obs_dim, agent.act_dim) if needs_expert(cfg) else None

    slots = estimator_class(cfg.estimator).env_slots(cfg)
    # whatever this trial starts is closed however it ends, a failure while setting up included (the stack closes
    # in reverse order: progress bar, writer, probe, estimator, envs, env sets started and never claimed, the fork
    # server they share)
    with contextlib.ExitStack() as stack:
        if fork_server is None:
            fork_server = stack.enter_context(EnvForkServer())  # started only if a cpu-backend set asks for it
        make_env = EnvFactory(EnvConfig(cfg.env_id, cfg.num_envs, cfg.control_mode, "sparse", backend=cfg.backend,
                                        num_workers=cpus), fork_server)
        stack.callback(make_env.close)
        if slots is not None:  # the estimator's own envs start while the trial's do
            make_env.start(*slots)
        venv = make_env(cfg.num_envs)
        stack.callback(venv.close)
        # a task outside envs.task_spaces' table: its sizes are known only now
        check_policy_fits(start_ck, f"start checkpoint {cfg.start_checkpoint}", cfg.env_id, venv)
        gens = {
            "update": torch.Generator().manual_seed(cfg.seed),
            "action": torch.Generator(device=device).manual_seed(cfg.seed + 1),
            "eval": torch.Generator().manual_seed(cfg.seed + 2),
        }
        ctx = TrialContext(cfg=cfg, device=device, make_env=make_env, expert=expert, obs_dim=venv.obs_dim, act_dim=venv.act_dim)
        estimator = make_estimator(cfg.estimator, ctx)
        stack.callback(estimator.close)
        estimator.prepare(agent)
        joint_critic = estimator.has_critic and cfg.critic_training == "joint"
        rule = make_update(cfg.update, cfg, agent, gens["update"], train_critic=joint_critic)
        quality = None
        if cfg.quality_every:
            if cfg.quality_mode == "actions":
                from algorithms.action_ranking import ActionRankingProbe as Probe
            else:
                from algorithms.quality import QualityProbe as Probe
            quality = Probe(ctx)
            stack.callback(quality.close)

        history: list[dict] = []
        totals = {"env_steps": 0, "sim_steps": 0, "wall": 0.0}
        start_iter = 0
        offline_batch: Optional[dict] = None  # offline regime: the one batch, estimated once
        if resumed is not None:
            st = resumed
            agent.load_state_dict(st["agent"])
            agent.to(device)
            rule.load_state_dict(st["rule"])
            estimator.load_state_dict(st["estimator"])
            same_kind = [rng.restore(gens[k], s) for k, s in st["rng"].items()]
            if not all(same_kind):
                print(f"resumed on a {device.type} machine from a checkpoint saved on another kind: the random streams "
                      "continue from seeds derived from the saved ones (results stay valid; they do not replay the other "
                      "machine's draws)", flush=True)
            history, totals, start_iter = st["history"], st["totals"], st["iteration"]
            offline_batch = st.get("offline_batch")

        writer = SummaryWriter(str(out / TB_DIR))
        stack.callback(writer.close)

        def run_eval(metrics: dict) -> None:
            # evaluation episodes are a measurement, not finetuning cost: they count in neither env nor sim steps
            if cfg.eval_protocol == "episodes":
                ev = functools.partial(evaluate, in_workers=cfg.eval_in_workers)
            else:
                ev = evaluate_fixed_steps
            det = ev(agent, venv, cfg.num_eval_episodes, cfg.eval_seed, True, device)
            metrics["eval/success_rate"] = det.success_rate
            metrics["eval/episodes"] = det.episodes
            if cfg.eval_stochastic:
                sto = ev(agent, venv, cfg.num_eval_episodes, cfg.eval_seed, False, device)
                metrics["eval/success_rate_stochastic"] = sto.success_rate

        def emit(metrics: dict, it: int) -> None:
            for k, v in metrics.items():
                if "/" in k and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, metrics["charts/env_steps"])
            writer.flush()
            history.append(metrics)
            state = {
                "config": cfg.to_dict(), "agent": agent.state_dict(), "rule": rule.state_dict(),
                "estimator": estimator.state_dict(), "rng": _rng_state(gens), "history": history,
                "totals": totals, "iteration": it, "offline_batch": offline_batch,
            }
            atomic_torch_save(state, ckpt_dir / TRIAL_STATE)
            # the whole history each time, not appended: after a resume it is the trial state's, never a torn line
            atomic_write_text(out / METRICS_JSONL, "".join(json.dumps(h, default=float) + "\n" for h in history))
            save_policy(ckpt_dir / "policy.pt", agent, env_id=cfg.env_id, control_mode=cfg.control_mode,
                        config=cfg.to_dict(), metrics={k: v for k, v in metrics.items() if k.startswith("eval/")})
            if report is not None:
                report(dict(metrics), ckpt_dir)

        bar = tqdm(total=cfg.num_iterations, initial=start_iter, desc=cfg.label, unit="it", disable=not progress)
        stack.callback(bar.close)
        if start_iter == 0 and not history:
            m = {"iteration": 0, "charts/env_steps": 0, "charts/sim_steps": 0, "time/total": 0.0}
            run_eval(m)
            emit(m, 0)
        obs = None  # rollout_reset=once: the observation where the next rollout continues
        for it in range(start_iter + 1, cfg.num_iterations + 1):
            t0 = time.time()
            m: dict = {"iteration": it}
            probe = quality is not None and (it - 1) % cfg.quality_every == 0
            if cfg.offline and offline_batch is not None:
                # the fixed batch: no new data, no new estimate
                batch = UpdateBatch(**{k: None if v is None else v.to(device) for k, v in offline_batch.items()})
                ro = est = None
                new_steps, sim_steps = 0, 0
                t1 = t2 = time.time()
            else:
                if cfg.rollout_reset == "iteration" or obs is None:
                    obs = venv.reset(seeds=rollout_seeds(cfg, it))
                else:  # how far into their episodes the carried-over envs are
                    m["charts/rollout_start_elapsed"] = float(venv.get_state().elapsed.float().mean())
                ro = collect_rollout(agent, venv, obs, cfg.num_steps, device, save_states=estimator.needs_states or probe,
                                    generator=gens["action"], in_workers=cfg.rollout_in_workers)
                obs = ro.last_obs
                t1 = time.time()
                est = estimator.estimate(ro, agent)
                if cfg.advantage_detrend:
                    m["charts/advantage_value_corr_raw"] = pearson(est.advantages, est.v)
                    est = dataclasses.replace(est, advantages=detrend_on_values(est.advantages, est.v))
                t2 = time.time()
                returns = ro.flat(est.returns).to(device) if joint_critic else None
                batch = UpdateBatch(ro.flat(ro.obs), ro.flat(ro.actions), ro.flat(ro.logprobs), ro.flat(est.advantages).to(device), returns)
                if cfg.offline:
                    offline_batch = {k: getattr(batch, k).detach().cpu() if getattr(batch, k) is not None else None
                                     for k in ("obs", "actions", "logprobs", "advantages", "returns")}
                new_steps, sim_steps = cfg.batch_size, cfg.batch_size + est.sim_steps
                if probe:
                    m.update(quality.measure(ro, est, agent, estimator))
            if estimator.has_critic and it <= cfg.gae_warmup_iters and ro is not None:
                m.update(estimator.warm_up(ro, est, agent))
            else:
                m.update(rule.update(agent, batch))
                if ro is not None:
                    m.update(estimator.after_update(ro, est, agent))
            t3 = time.time()
            totals["env_steps"] += new_steps
            totals["sim_steps"] += sim_steps
            adv = batch.advantages
            if est is not None:
                m.update(est.diagnostics)
                m["charts/train_success"] = float(ro.success.any(0).float().mean())
                if est.v is not None:
                    # how much of the advantage is between-state structure, which batch normalisation turns into
                    # weights on states rather than on a state's actions
                    m["charts/advantage_value_corr"] = pearson(est.advantages, est.v)
            m.update({
                "charts/advantage_mean": float(adv.mean()), "charts/advantage_std": float(adv.std()),
                "charts/env_steps": totals["env_steps"], "charts/sim_steps": totals["sim_steps"],
                "time/rollout": t1 - t0, "time/estimate": t2 - t1, "time/update": t3 - t2,
            })
            m.setdefault("charts/pos_ratio", float((adv > 0).float().mean()))
            if it % cfg.eval_every == 0 or it == cfg.num_iterations:
                # rollout_reset=once carries the training episodes on: evaluation must not disturb them
                carried = venv.get_state() if cfg.rollout_reset == "once" else None
                run_eval(m)
                if carried is not None:
                    obs = venv.set_state(carried)
            totals["wall"] += time.time() - t0
            m["time/total"] = totals["wall"]
            m["charts/SPS"] = new_steps / max(1e-9, t3 - t0)
            emit(m, it)
            bar.update(1)
            if "eval/success_rate" in m:
                bar.set_postfix(success=f"{m['eval/success_rate']:.2f}")
    return history

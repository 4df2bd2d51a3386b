"""The grid on real Ray Tune: a tiny grid end to end, failed launches that touch nothing, a trial that
raises, a grid stopped by Ctrl+C, then killed mid-resume, then resumed, a moved run directory resumed.

Real local Ray (``num_cpus=2``), real ManiSkill CPU simulation, real files and real signals.  In-process
launches use this module's Ray; the CLI runs as a subprocess that starts its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator import launches, placement
from orchestrator.rundir import TRIAL_OUT
from orchestrator.spec import SpecError, expand_trials, parse_spec
from tests.sessions import kill_session, session_pids

REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 2


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def tiny_spec(start: Path, storage: Path, name: str, **extra) -> dict:
    """gae x {ppo, awr}, one seed, one env, ITERATIONS iterations, 2 deterministic eval episodes, awr_beta 0.5 for awr."""
    d = {
        "name": name,
        "checkpoints": {"start": str(start)},
        "estimators": ["gae"],
        "updates": ["ppo", "awr"],
        "seeds": 1,
        "shared": {"update_epochs": 2},
        "per_method": {"awr": {"awr_beta": 0.5}},  # a per-cell value: Tune resolves it from the cell
        "budget": {"num_envs": 1, "num_steps": 8, "num_iterations": ITERATIONS},
        "eval": {"num_eval_episodes": 2, "eval_stochastic": False},
        "resources": {"cpus_per_trial": 1},
        "max_failures": 0,
        "storage": str(storage),
    }
    d.update(extra)
    return d


def write_spec(d: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def tune_trials(run_dir: Path) -> dict[str, dict]:
    """Trial dir name -> {status, num_failures, config} from Tune's newest experiment state file."""
    state = json.loads(sorted(run_dir.glob("experiment_state-*.json"))[-1].read_text())
    out = {}
    for trial_json, meta_json in state["trial_data"]:
        t, meta = json.loads(trial_json), json.loads(meta_json)
        out[t["relative_logdir"]] = {"status": t["status"], "num_failures": meta["num_failures"], "config": t["config"]}
    return out


def reported_iterations(trial_dir: Path) -> list[int]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines() if line.strip()]


def trial_history(trial_dir: Path) -> list[dict]:
    """The trial's own record (run_trial's saved state): one entry per completed iteration."""
    import torch

    st = torch.load(trial_dir / "trial" / "checkpoint" / "trial_state.pt", map_location="cpu", weights_only=False)
    return st["history"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cell_key(config: dict) -> tuple:
    return (config["estimator"], config["update"], config["seed"])


@pytest.fixture(scope="module")
def tiny_grid(policy_checkpoint, tmp_path_factory):
    """The uninterrupted reference run, launched in-process."""
    from orchestrator.tune_runner import launch

    root = tmp_path_factory.mktemp("grid")
    spec = parse_spec(tiny_spec(policy_checkpoint, root / "runs", "tiny"))
    outcome = launch(spec)
    return spec, outcome


def test_export_final_policies_with_an_index(tiny_grid, tmp_path, run_cli):
    """export-policies on the real grid: each finished trial's last policy, loadable, and its last success, which
    the eval command reproduces on the trial's evaluation episodes."""
    from algorithms.checkpoint import load_policy
    from orchestrator.policy_export import export_policies

    spec, _ = tiny_grid
    out = tmp_path / "policies"
    res = export_policies(spec.run_dir, out, ["gae+ppo"])
    assert res.skipped == [] and list(res.index["file"]) == ["gae+ppo_s1.pt"]
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["cell", "seed", "file", "final_success"] and len(index) == 1
    trial = next(n for n, t in tune_trials(spec.run_dir).items() if t["config"]["update"] == "ppo")
    last = trial_history(spec.run_dir / trial)[-1]
    assert last["iteration"] == ITERATIONS and index["final_success"][0] == pytest.approx(last["eval/success_rate"])
    agent, ckpt = load_policy(out / "gae+ppo_s1.pt")  # hash-checked on load
    assert ckpt["kind"] == "policy" and agent.obs_dim == 42
    cfg = next(t["config"] for t in tune_trials(spec.run_dir).values() if t["config"]["update"] == "ppo")
    r = run_cli("eval", "--checkpoint", out / "gae+ppo_s1.pt", "--episodes", cfg["num_eval_episodes"], "--seed",
                cfg["eval_seed"], "--num-envs", 2, "--backend", "cpu", "--no-progress", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["deterministic"]["success_rate"] == index["final_success"][0]
    # every cell by default; bad input is one error before anything is written; nothing is overwritten silently
    assert len(export_policies(spec.run_dir, tmp_path / "all", None).index) == 2
    with pytest.raises(ValueError, match="has no cell 'mc16-expert\\+awr'"):
        export_policies(spec.run_dir, tmp_path / "none", ["mc16-expert+awr"])
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="exists .* --overwrite"):
        export_policies(spec.run_dir, out, ["gae+ppo"])
    assert len(export_policies(spec.run_dir, out, ["gae+ppo"], overwrite=True).index) == 1
    # exports add up in one folder (a grid run in pieces): another cell's export keeps gae+ppo's row
    other = "gae+awr"
    assert list(export_policies([spec.run_dir], out, [other]).index["cell"]) == [other]
    assert sorted(pd.read_csv(out / "index.csv")["cell"]) == sorted(["gae+ppo", other])
    with pytest.raises(ValueError, match="finished in both"):  # the same trial from two pieces is ambiguous
        export_policies([spec.run_dir, spec.run_dir], tmp_path / "twice", ["gae+ppo"])
    assert not (tmp_path / "twice").exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="is not a policy index"):
        export_policies(spec.run_dir, tmp_path / "junk", ["gae+ppo"])
    assert not (tmp_path / "junk" / "gae+ppo_s1.pt").exists()


def test_tiny_grid_runs_every_trial(tiny_grid):
    spec, outcome = tiny_grid
    assert outcome.ok and outcome.num_trials == 2 and outcome.num_finished == 2
    run_dir = spec.run_dir
    assert outcome.run_dir == run_dir
    trials = tune_trials(run_dir)
    assert len(trials) == 2 and all(t["status"] == "TERMINATED" for t in trials.values())
    # every trial reports iteration 0 (the start policy) .. N, each once, with SPEC's metric names
    expected = {cell_key(c.to_dict()): c.to_dict() for c in expand_trials(spec)}
    for dirname, t in trials.items():
        d = run_dir / dirname
        assert reported_iterations(d) == list(range(ITERATIONS + 1))
        last = json.loads((d / "result.json").read_text().splitlines()[-1])
        for key in ("eval/success_rate", "charts/env_steps", "charts/sim_steps", "time/rollout", "losses/policy_loss"):
            assert key in last
        assert last["charts/env_steps"] == ITERATIONS * 8
        assert [h["iteration"] for h in trial_history(d)] == list(range(ITERATIONS + 1))
        # Tune's config for the trial is the full FinetuneConfig the spec expands to
        assert {k: t["config"][k] for k in expected[cell_key(t["config"])]} == expected[cell_key(t["config"])]
        assert t["config"]["awr_beta"] == (0.5 if t["config"]["update"] == "awr" else 1.0)
        assert dirname.startswith(f"gae+{t['config']['update']}_s1_")
        assert (d / "trial" / "checkpoint" / "policy.pt").is_file()
    # the spec is saved beside the results; analysis wrote its report
    saved = json.loads((run_dir / "spec.resolved.json").read_text())
    assert saved["spec"]["name"] == "tiny" and len(saved["trials"]) == 2
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["name"] == "tiny"
    # the launch is recorded beside the results (command, code version, machine) and listed in the report
    start, end = launches.read(run_dir)
    assert start["event"] == "start" and start["commit"] and start["cpus"] == os.cpu_count()
    assert start["ray"] != "not installed" and start["mani_skill"] != "not installed"
    assert end == {**end, "event": "end", "trials": 2, "finished": 2, "failed": 0}
    if outcome.report is not None:
        text = outcome.report.read_text()
        assert "## Launches" in text and f"| {start['time']} | start | {end['time']} | 2/2 |" in text


def test_failed_launches_leave_the_run_directory_untouched(tiny_grid, policy_checkpoint, tmp_path, run_cli):
    from orchestrator.tune_runner import launch

    spec, _ = tiny_grid
    run_dir = spec.run_dir
    before = snapshot(run_dir)
    d = tiny_spec(policy_checkpoint, spec.storage, "tiny")
    with pytest.raises(SpecError, match=r"run directory .*tiny already exists; pass --resume"):
        launch(parse_spec(d))
    changed = tiny_spec(policy_checkpoint, spec.storage, "tiny", shared={"update_epochs": 3})
    with pytest.raises(SpecError, match=r"--resume: the spec differs .*update_epochs was 2, now 3"):
        launch(parse_spec(changed), resume=True)
    with pytest.raises(SpecError, match=r"resources: a trial needs 1000 \(cpus_per_trial\) = 1000 CPUs, but the Ray cluster has 2"):
        launch(parse_spec({**d, "name": "tiny2", "resources": {"cpus_per_trial": 1000}}))
    assert not (run_dir.parent / "tiny2").exists()
    with pytest.raises(SpecError, match=r"not a grid run directory"):
        from orchestrator.tune_runner import resume

        resume(run_dir.parent)
    # through the CLI: a bad spec naming the same run, and a relaunch without --resume
    bad = write_spec({**d, "budget": {"num_envs": 0}}, tmp_path / "bad.yaml")
    r = run_cli("grid", bad, timeout=120)
    assert r.returncode == 2 and "budget.num_envs: num_envs must be >= 1, got 0" in r.stderr
    same = write_spec(d, tmp_path / "same.yaml")
    r = run_cli("grid", same, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr.strip().splitlines()[-1]
    assert snapshot(run_dir) == before


def test_resume_of_a_moved_finished_grid_reruns_nothing(tiny_grid, tmp_path):
    from orchestrator.tune_runner import resume

    spec, _ = tiny_grid
    moved = tmp_path / "elsewhere" / "tiny_copy"
    shutil.copytree(spec.run_dir, moved)
    rows = {p.parent.name: p.read_bytes() for p in moved.glob("*/result.json")}
    outcome = resume(moved)
    assert outcome.ok and outcome.num_finished == 2 and outcome.run_dir == moved
    assert [e["event"] for e in launches.read(moved)] == ["start", "end", "resume", "end"]
    assert {p.parent.name: p.read_bytes() for p in moved.glob("*/result.json")} == rows
    assert all(Path(r.path).parent == moved for r in outcome.results)


def _cli(args: list, log: Path) -> subprocess.Popen:
    """``python -m orchestrator ARGS`` in its own session (so its Ray processes can be reaped as a group)."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *map(str, args)], cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdin=subprocess.DEVNULL,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _reap_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Kill the driver if it still runs, then wait for the processes of its session (the Ray it started, trial
    workers included) to end; kill leftovers."""
    if proc.poll() is None:
        proc.kill()
    deadline = time.time() + grace_s
    while time.time() < deadline and session_pids(proc.pid):
        time.sleep(0.5)
    kill_session(proc.pid)


def _wait_for(cond, timeout_s: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        if proc.poll() is not None:
            pytest.fail(f"driver exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_trial_that_raises_is_retried_then_failed_while_others_finish(policy_checkpoint, tmp_path):
    """A real failure: the start checkpoint of one sweep point is corrupted after validation, before its trial runs."""
    victim = tmp_path / "victim.pt"
    shutil.copy(policy_checkpoint, victim)
    d = tiny_spec(policy_checkpoint, tmp_path / "runs", "fails", updates=["awr"], max_failures=1,
                  sweep={"start_checkpoint": [str(policy_checkpoint), str(victim)]})
    d["checkpoints"] = {"start": str(policy_checkpoint)}
    log = tmp_path / "driver.log"
    proc = _cli(["grid", write_spec(d, tmp_path / "fails.yaml"), "--no-analysis"], log)
    try:
        run_dir = tmp_path / "runs" / "fails"
        _wait_for(lambda: (run_dir / "spec.resolved.json").exists(), 120, "the spec to be saved", proc, log)
        victim.write_bytes(b"corrupted after validation")
        rc = proc.wait(timeout=400)
    finally:
        _reap_group(proc)
    out = log.read_text()
    assert rc == 1, out[-3000:]
    trials = tune_trials(run_dir)
    by_start = {Path(t["config"]["start_checkpoint"]).name: (name, t) for name, t in trials.items()}
    ok_name, ok = by_start[Path(policy_checkpoint).name]
    bad_name, bad = by_start["victim.pt"]
    assert ok["status"] == "TERMINATED" and reported_iterations(run_dir / ok_name) == list(range(ITERATIONS + 1))
    assert bad["status"] == "ERROR" and bad["num_failures"] == 2  # the first attempt + max_failures=1 retry
    err = (run_dir / bad_name / "error.txt").read_text()
    assert "Failure # 1" in err and "Failure # 2" in err and "truncated or not a torch checkpoint" in err
    assert "1/2 trials finished, 1 failed" in out and "victim" in out
    assert "raised; retrying" in out and "FAILED" in out  # the live status lines


def test_grid_stopped_by_sigint_then_killed_then_resumed(tiny_grid, policy_checkpoint, tmp_path):
    """One grid interrupted twice on the real CLI, then finished.

    1. Ctrl+C (a real SIGINT to the driver) after the first checkpoint: Tune saves its state and stops; the command
       says the trials are unfinished (the running one and the one still pending: a never-started trial is not
       "finished"), how to resume, and exits 1.
    2. The resume, with other resources (a bigger or smaller machine), is SIGKILLed mid-grid together with the local
       Ray it started (the machine running it dies).
    3. A second resume finishes every trial exactly once, with the resources of the first resume, and the results
       match the uninterrupted run (same trials, same iterations, same numbers).
    One test rather than three: each CLI launch starts its own Ray, which dominates the cost."""
    # each trial takes every CPU: one runs, one waits
    d = tiny_spec(policy_checkpoint, tmp_path / "runs", "interrupted", resources={"cpus_per_trial": os.cpu_count()})
    run_dir = tmp_path / "runs" / "interrupted"
    log = tmp_path / "driver.log"
    proc = _cli(["grid", write_spec(d, tmp_path / "i.yaml"), "--no-analysis"], log)
    try:
        _wait_for(lambda: any(run_dir.glob("*/checkpoint_000000")), 300, "the first checkpoint", proc, log)
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        _reap_group(proc)
    out = log.read_text()
    assert rc == 1, out[-3000:]
    assert "0/2 trials finished, 0 failed" in out and f"continue with `python -m orchestrator resume {run_dir}`" in out
    assert "2 trials unfinished" in out and "2 stopped" in out
    assert [(e["event"], e.get("finished")) for e in launches.read(run_dir)] == [("start", None), ("end", 0)]
    from ray.tune import Tuner

    assert Tuner.can_restore(str(run_dir))

    def persisted(trial_dir: Path, it: int) -> bool:
        # Tune copies each reported checkpoint into the trial directory before report() returns
        return (trial_dir / f"checkpoint_{it:06d}").is_dir()

    def saved():
        return {c for c in run_dir.glob("*_s1_*/checkpoint_*") if c.is_dir()}

    before = saved()

    def mid_grid():
        # a checkpoint the resume made: on a loaded machine the interrupted run may have saved iteration 1 before it
        # stopped, and waiting for that alone killed the resume before it had printed anything (CI, session 30)
        dirs = list(run_dir.glob("*_s1_*"))
        return bool(saved() - before) and not all(persisted(p, ITERATIONS) for p in dirs)

    log2 = tmp_path / "resume.log"
    proc = _cli(["resume", run_dir, "--cpus-per-trial", "1", "--no-analysis"], log2)
    try:
        _wait_for(mid_grid, 300, "the first reported iteration of the resume", proc, log2)
        # the whole session at once, trial workers included: they run in process groups of their own and, left
        # alive, finish their trials before they notice Ray is gone (CI saw that twice), leaving nothing to resume
        kill_session(proc.pid)
        proc.wait(timeout=30)
    finally:
        _reap_group(proc)
    assert [p for p in run_dir.glob("*_s1_*") if not persisted(p, ITERATIONS)], "the kill came too late"
    out = log2.read_text()
    assert f"resources: {{'cpus_per_trial': {float(os.cpu_count())}," in out and "-> {'cpus_per_trial': 1.0," in out

    log3 = tmp_path / "resume2.log"
    proc = _cli(["resume", run_dir, "--no-analysis"], log3)
    try:
        rc = proc.wait(timeout=400)
    finally:
        _reap_group(proc)
    assert rc == 0, log3.read_text()[-3000:]
    # the killed resume left no end line; the last resume did
    events = launches.read(run_dir)
    assert [e["event"] for e in events] == ["start", "end", "resume", "resume", "end"] and events[-1]["finished"] == 2
    assert events[0]["command"].startswith("python -m orchestrator grid") and "resume" in events[2]["command"]
    # the first resume's resources stay the run's: recorded in its spec and used by the trials run after it
    assert json.loads((run_dir / "spec.resolved.json").read_text())["spec"]["resources"]["cpus_per_trial"] == 1

    _, reference = tiny_grid
    ref_trials = {cell_key(t["config"]): (name, t) for name, t in tune_trials(reference.run_dir).items()}
    trials = {cell_key(t["config"]): (name, t) for name, t in tune_trials(run_dir).items()}
    assert trials.keys() == ref_trials.keys() and len(trials) == 2
    for key, (name, t) in trials.items():
        assert t["status"] == "TERMINATED"
        assert json.loads((run_dir / name / TRIAL_OUT / placement.PLACEMENT_FILE).read_text())["cpus"] == 1
        history = trial_history(run_dir / name)
        ref_history = trial_history(reference.run_dir / ref_trials[key][0])
        assert [h["iteration"] for h in history] == list(range(ITERATIONS + 1))  # each iteration exactly once
        # Tune's rows: an iteration re-run after the kill may appear twice; the last attempt covers 0..N
        its = reported_iterations(run_dir / name)
        assert sorted(set(its)) == list(range(ITERATIONS + 1)) and its[-1] == ITERATIONS
        # resumed from its checkpoint with its RNG state: the same numbers as without the interruptions
        for h, ref in zip(history, ref_history):
            for k in ("eval/success_rate", "charts/env_steps", "losses/policy_loss"):
                if k in ref:
                    assert h[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), (key, h["iteration"], k)


def test_progress_line_counts_tune_statuses_and_trials_stopped_before_their_end():
    """The grid's one-line status, on Tune's own Trial objects: a trial Tune calls TERMINATED is done only when it
    reported its last iteration (an interrupted run terminates the others: stopped); the event's trial counts
    with the status it is about to take (Tune calls the hooks before updating it)."""
    from ray.tune.experiment import Trial

    from orchestrator.grid_progress import GridProgress

    trials = []
    for i, (status, last_iteration, success) in enumerate([(Trial.RUNNING, 1, 0.25), (Trial.TERMINATED, 3, 0.75),
                                                           (Trial.TERMINATED, 2, 0.5), (Trial.ERROR, 1, None),
                                                           (Trial.PENDING, None, None)]):
        t = Trial("grid_trial", config={"estimator": "mc", "update": "awr", "seed": i, "num_iterations": 3},
                  trial_id=f"t{i}", stub=True)
        t.set_status(status)
        if last_iteration is not None:
            t.run_metadata.last_result = {"iteration": last_iteration, **({"eval/success_rate": success} if success else {})}
        trials.append(t)
    progress = GridProgress("demo")
    assert progress.status_line(trials).split("] ")[1] == (
        "1 running | 1 done | 1 failed | 1 pending | 1 stopped | best mc+awr 0.50 (3 runs)")
    line = progress.status_line(trials, "mc+awr s4 started", (trials[4], Trial.RUNNING))
    assert line.split("] ")[1] == "2 running | 1 done | 1 failed | 0 pending | 1 stopped | best mc+awr 0.50 (3 runs) | mc+awr s4 started"

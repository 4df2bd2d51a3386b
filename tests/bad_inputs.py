"""The bad inputs of every command, the workspace they run in, and how one is run and observed.

Shared by ``tests/test_bad_input.py`` (what a refusal must be: one line, nothing started, nothing changed) and
``benchmarks/bad_input_refusal.py`` (how long a refusal takes).  Each case runs ``python -m orchestrator ...`` as a
user would (a subprocess, no stdin; for the tests, the same entry point forked from a server that has imported torch
and the CLI once, see :func:`run_case`) in a workspace of its own that holds an existing results tree: a real finished
``finetune`` trial (config.json, tb/, checkpoint/), the run directory of a launched grid (spec.yaml,
spec.resolved.json) and a dataset.  While it runs, its descendants are sampled every 20 ms from /proc; after it, the
workspace's tree is compared byte-for-byte (sha256 and mtime of every file).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml

from tests.cli_fork_server import ForkServer

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "experiments" / "checkpoints" / "pickcube"
FORBIDDEN = ("envs.worker", "envs.fork_parent", "ray", "raylet", "gcs_server")  # simulator workers (exec'd, or forked
# from their fork parent, whose command line they keep) and any Ray process
KILL_AFTER_S = 120  # a command still running then has not refused; it is killed

# The finished trial in every workspace: `finetune` with these flags (plus --start-checkpoint) made it.
TRIAL = dict(estimator="gae", update="awr", num_envs=1, num_steps=2, num_iterations=1, num_eval_episodes=1,
             eval_stochastic=False, update_epochs=1, minibatch_size=2, backend="cpu", device="cpu")


def trial_flags(start: Path, **changes) -> list[str]:
    d = dict(TRIAL, start_checkpoint=str(start), **changes)
    return [a for k, v in d.items() for a in ("--" + k.replace("_", "-"), str(v))] + ["--no-progress"]


@dataclass
class Case:
    id: str
    args: Callable[[dict], list]  # paths -> argv after `python -m orchestrator`
    words: tuple  # the one error line must contain each
    setup: Optional[Callable[[Path], None]] = None  # prepares the workspace copy (before the snapshot)
    teardown: Optional[Callable[[Path], None]] = None


@dataclass
class Outcome:
    returncode: int
    stderr: str
    stdout: str
    wall_s: float
    cpu_s: float  # user + system time of the command (its own process; it starts no children when it refuses); NaN when forked
    load: float  # highest 1-minute load average while it ran
    forbidden: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    timed_out: bool = False  # killed after KILL_AFTER_S



def tree(root: Path) -> dict:
    """Every path under ``root``: files by (sha256, mtime), directories by name."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink():
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out


def descendants(pid: int) -> list[str]:
    """Command lines of every process below ``pid``, read from /proc (psutil scans every process on the machine
    for each call, too slow to sample often on a busy 2-core box)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                kids = [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                try:
                    out.append(Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
                todo.append(k)
    return out


def _observe(pid: int, ended: Callable[[], bool], kill: Callable[[], None], t0: float) -> tuple[set, float, bool]:
    """Until ``ended()``: sample the command lines of ``pid``'s descendants and the 1-minute load every 20 ms, and
    ``kill()`` it once it has run KILL_AFTER_S since ``t0``.  Returns (command lines seen, highest load, killed)."""
    seen, load, timed_out = set(), os.getloadavg()[0], False
    while not ended():
        seen.update(descendants(pid))
        load = max(load, os.getloadavg()[0])
        if not timed_out and time.monotonic() - t0 > KILL_AFTER_S:
            timed_out = True
            kill()
        time.sleep(0.02)
    return seen, load, timed_out


def run_case(case: Case, paths: dict, ws: Path, log: Path, server: Optional[ForkServer] = None) -> Outcome:
    """Run one case in workspace ``ws``; its stdout/stderr go to ``log``.out/.err (outside ``ws``).

    Without ``server``: a new ``python -m orchestrator`` process, as a user runs it (what the benchmark times).  With
    one: the same entry point in a child that ``server`` forks, having imported torch and the CLI once; it is
    observed the same way (status, output, descendants, workspace) without paying the imports each time (the test
    suite's way; ``cpu_s`` is then NaN)."""
    if case.setup is not None:
        case.setup(ws)
    before = tree(ws)
    args = [str(a) for a in case.args(dict(paths, ws=ws))]
    t0 = time.monotonic()
    if server is not None:
        for stream in ("out", "err"):  # there even if the child dies before it opens them
            Path(f"{log}.{stream}").write_text("")
        pid = server.start(args, ws, f"{log}.out", f"{log}.err")
        # the server reaps the child as soon as it ends
        seen, load, timed_out = _observe(pid, lambda: not os.path.exists(f"/proc/{pid}/task"),
                                         lambda: os.kill(pid, signal.SIGKILL), t0)
        returncode, cpu_s = server.status(), float("nan")
    else:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        env.pop("RAY_ADDRESS", None)
        with open(f"{log}.out", "w") as fo, open(f"{log}.err", "w") as fe:
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=ws, env=env,
                                    stdin=subprocess.DEVNULL, stdout=fo, stderr=fe)
            reaped = {}

            def ended() -> bool:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped.update(status=status, usage=usage)
                return bool(pid)

            seen, load, timed_out = _observe(proc.pid, ended, proc.kill, t0)
        usage = reaped["usage"]
        returncode, cpu_s = os.waitstatus_to_exitcode(reaped["status"]), usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - t0
    try:
        after = tree(ws)
    finally:
        if case.teardown is not None:
            case.teardown(ws)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    forbidden = sorted(c for c in seen if any(f in c for f in FORBIDDEN))
    return Outcome(returncode, Path(f"{log}.err").read_text(), Path(f"{log}.out").read_text(), wall, cpu_s, load,
                   forbidden, changed, timed_out)


def build_workspace(root: Path, policy_checkpoint: Path) -> dict:
    """Inputs (shared, outside the workspaces, under ``root``) and the template workspace with its results tree.

    ``policy_checkpoint``: any PickCube-v1 policy in the project's format (the tests use an untrained one)."""
    from algorithms.agent import Agent
    from algorithms.checkpoint import save_policy
    from algorithms.config import FinetuneConfig
    from algorithms.data import save_dataset
    from algorithms.finetune import run_trial
    from algorithms.value_functions import IQLValues, save_iql
    from orchestrator.spec import expand_trials, parse_spec, resolved_record

    inp = root / "inputs"
    inp.mkdir()
    task = dict(env_id="PickCube-v1", control_mode="pd_joint_delta_pos")
    torch.manual_seed(0)
    save_policy(inp / "act7.pt", Agent(42, 7), **task)  # the reproduction: one action dim short
    bare = inp / "bare.pt"
    torch.save(torch.load(policy_checkpoint, weights_only=True)["model"], bare)
    (inp / "corrupt.pt").write_bytes(b"not a torch file")
    save_iql(inp / "iql_act7.pt", IQLValues(42, 7, 16), **task, config={"expectile": 0.7, "gamma": 0.8, "dataset_sha256": "-"})
    (inp / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (inp / "control.yaml").write_bytes(b"name: x\x00\x01\n")

    spec = {
        "name": "tiny", "checkpoints": {"start": str(policy_checkpoint)}, "estimators": ["gae"], "updates": ["awr"],
        "seeds": 1, "budget": {"num_envs": 1, "num_steps": 2, "num_iterations": 1},
        "eval": {"num_eval_episodes": 1, "eval_stochastic": False}, "resources": {"cpus_per_trial": 1},
        "storage": "results/runs",
    }

    def write_spec(filename: str, **changes) -> Path:
        d = {**spec, **changes}
        (inp / filename).write_text(yaml.safe_dump(d, sort_keys=False))
        return inp / filename

    write_spec("tiny.yaml")
    write_spec("tiny_changed.yaml", budget={"num_envs": 1, "num_steps": 3, "num_iterations": 1})
    write_spec("act7_start.yaml", checkpoints={"start": str(inp / "act7.pt")})
    write_spec("act7_expert.yaml", checkpoints={"start": str(policy_checkpoint), "expert": str(inp / "act7.pt")}, estimators=["mc"])
    write_spec("act7_iql.yaml", checkpoints={"start": str(policy_checkpoint), "iql": str(inp / "iql_act7.pt")}, estimators=["iql"])
    write_spec("no_such_env.yaml", checkpoints={"start": str(bare)}, env={"env_id": "NoSuchEnv-v0"})
    write_spec("huge.yaml", name="huge", resources={"cpus_per_trial": 100_000})
    write_spec("file_storage.yaml", storage="results/data.pt/runs")
    write_spec("locked_storage.yaml", storage="locked/runs")
    write_spec("relative.yaml")

    ws = root / "template"
    results = ws / "results"
    # a finished trial, made by the real trial loop (one env worker, one iteration)
    run_trial(FinetuneConfig(**TRIAL, start_checkpoint=str(policy_checkpoint)), results / "trial")
    # a launched grid's run directory, as `grid` writes it before Ray starts
    s = parse_spec(spec, base_dir=ws)
    (s.run_dir).mkdir(parents=True)
    (s.run_dir / "spec.yaml").write_text((inp / "tiny.yaml").read_text())
    (s.run_dir / "spec.resolved.json").write_text(json.dumps(resolved_record(s, expand_trials(s)), indent=1))
    (results / "not_a_run").mkdir()
    (results / "corrupt_run").mkdir()
    (results / "corrupt_run" / "spec.resolved.json").write_text("{not json")
    gen = torch.Generator().manual_seed(0)
    m = 16
    save_dataset(results / "data.pt", {
        "obs": torch.randn(m, 42, generator=gen), "actions": torch.rand(m, 8, generator=gen) * 2 - 1,
        "logprobs": torch.zeros(m), "rewards": torch.zeros(m), "next_obs": torch.randn(m, 42, generator=gen),
        "terminated": torch.zeros(m, dtype=torch.bool), "truncated": torch.zeros(m, dtype=torch.bool)}, **task)
    (ws / "empty_trial").mkdir()
    (ws / "a_file").write_text("in the way\n")
    return {"inp": inp, "template": ws, "start": Path(policy_checkpoint), "bare": bare, "iql": SHIPPED / "iql.pt",
            "root": root}


class CaseUnavailable(Exception):
    """This machine cannot set up the case (or has what the case needs to lack): it is not run."""


def _lock(ws: Path) -> None:
    """A storage directory this process cannot write: immutable (root ignores permission bits) or read-only."""
    d = ws / "locked"
    d.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
            raise CaseUnavailable("cannot make a read-only directory here (root, and chattr +i is refused)")
    else:
        d.chmod(0o555)


def _unlock(ws: Path) -> None:
    d = ws / "locked"
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    else:
        d.chmod(0o755)


def _gpu_sim_available() -> bool:
    from envs.backend import physx_gpu_library

    return torch.cuda.is_available() and physx_gpu_library().exists()



R = "results"
T = f"{R}/trial"
CASES = [
    # -- grid: checkpoint sizes (issue item 1), storage (item 4), spec files (item 4), kinds already handled
    Case("grid start checkpoint of the wrong size", lambda p: ["grid", p["inp"] / "act7_start.yaml"],
         ("start checkpoint", "act7.pt", "obs/act dims 42/7", "PickCube-v1 (pd_joint_delta_pos) has 42/8")),
    Case("grid expert checkpoint of the wrong size (mc)", lambda p: ["grid", p["inp"] / "act7_expert.yaml"],
         ("trial mc+awr seed 1", "expert checkpoint", "act7.pt", "42/7")),
    Case("grid iql checkpoint of the wrong size", lambda p: ["grid", p["inp"] / "act7_iql.yaml"],
         ("iql Q/V checkpoint", "iql_act7.pt", "42/7")),
    Case("grid unregistered env id", lambda p: ["grid", p["inp"] / "no_such_env.yaml"],
         ("env id 'NoSuchEnv-v0' is not a registered ManiSkill task",)),
    Case("grid storage below a file", lambda p: ["grid", p["inp"] / "file_storage.yaml"],
         ("storage", "data.pt is a file, not a directory",)),
    Case("grid storage not writable", lambda p: ["grid", p["inp"] / "locked_storage.yaml"],
         ("storage", "cannot write in", "locked"), setup=_lock, teardown=_unlock),
    Case("grid --storage below a file", lambda p: ["grid", p["inp"] / "tiny.yaml", "--storage", "a_file/runs", "--name", "new"],
         ("a_file is a file, not a directory",)),
    Case("grid binary spec file", lambda p: ["grid", p["inp"] / "binary.yaml"], ("binary.yaml is not a text file",)),
    Case("grid spec with control characters", lambda p: ["grid", p["inp"] / "control.yaml"], ("control.yaml is not a text file",)),
    Case("grid more CPUs than the machine", lambda p: ["grid", p["inp"] / "huge.yaml"], ("100000 CPUs, but this machine has",)),
    Case("grid existing run without --resume", lambda p: ["grid", p["inp"] / "tiny.yaml"], ("already exists; pass --resume",)),
    Case("grid --resume with a changed spec", lambda p: ["grid", p["inp"] / "tiny_changed.yaml", "--name", "tiny", "--resume"],
         ("--resume: the spec differs", "num_steps was 2, now 3")),
    Case("grid unknown flag", lambda p: ["grid", p["inp"] / "tiny.yaml", "--sedes", "3"], ("unrecognized arguments: --sedes 3",)),
    Case("grid --cells with a label the spec lacks", lambda p: ["grid", p["inp"] / "tiny.yaml", "--name", "new", "--cells", "gae+ppo"],
         ("--cells: 'gae+ppo' is not a cell of grid 'tiny'", "its cells: gae+awr")),
    Case("grid --cells with a seed the cell lacks", lambda p: ["grid", p["inp"] / "tiny.yaml", "--name", "new", "--cells", "gae+awr:2"],
         ("--cells: 'gae+awr:2'", "runs seeds [1]")),
    Case("grid --seeds no cell runs", lambda p: ["grid", p["inp"] / "tiny.yaml", "--name", "new", "--seeds", "1,5"],
         ("--seeds: no chosen cell of grid 'tiny' runs seed 5",)),
    Case("grid --seeds not numbers", lambda p: ["grid", p["inp"] / "tiny.yaml", "--name", "new", "--seeds", "one"],
         ("argument --seeds", "comma-separated seed values", "'one'")),
    Case("grid negative --mc-worker-cpus", lambda p: ["grid", p["inp"] / "tiny.yaml", "--name", "new", "--mc-worker-cpus", "-2"],
         ("mc_worker_cpus", "-2")),
    # -- resume
    Case("resume of a directory that is no run", lambda p: ["resume", f"{R}/not_a_run"], ("is not a grid run directory",)),
    Case("resume of a corrupt run record", lambda p: ["resume", f"{R}/corrupt_run"], ("spec.resolved.json is corrupt",)),
    Case("resume of a grid that never started", lambda p: ["resume", f"{R}/runs/tiny"], ("has no Tune state to restore",)),
    # -- finetune: devices and backends (item 4), checkpoints (item 1), the trial directory (item 3)
    Case("finetune --device cuda without CUDA", lambda p: ["finetune", "--device", "cuda", "--out-dir", "new"],
         ("device 'cuda' is not available", "--device cpu")),
    Case("finetune malformed device", lambda p: ["finetune", "--device", "gpu0", "--out-dir", "new"],
         ("device must be auto, cpu or cuda[:N], got 'gpu0'",)),
    Case("finetune --backend gpu without GPU simulation", lambda p: ["finetune", "--backend", "gpu", "--device", "cpu", "--out-dir", "new"],
         ("backend 'gpu' needs",)),
    Case("finetune unknown backend", lambda p: ["finetune", "--backend", "tpu", "--out-dir", "new"], ("unknown backend 'tpu'",)),
    Case("finetune start checkpoint of the wrong size", lambda p: ["finetune", *trial_flags(p["inp"] / "act7.pt"), "--out-dir", "new"],
         ("start checkpoint", "act7.pt has obs/act dims 42/7")),
    Case("finetune mc expert of the wrong size",
         lambda p: ["finetune", *trial_flags(p["start"], estimator="mc"), "--expert-checkpoint", p["inp"] / "act7.pt", "--out-dir", "new"],
         ("expert checkpoint", "act7.pt has obs/act dims 42/7")),
    Case("finetune corrupt start checkpoint", lambda p: ["finetune", *trial_flags(p["inp"] / "corrupt.pt"), "--out-dir", "new"],
         ("corrupt.pt is truncated or not a torch checkpoint",)),
    Case("finetune iql without a Q/V checkpoint", lambda p: ["finetune", *trial_flags(p["start"], estimator="iql"), "--out-dir", "new"],
         ("needs --iql-checkpoint",)),
    Case("finetune sarsa with IQL's expectile",
         lambda p: ["finetune", *trial_flags(p["start"], estimator="sarsa"), "--iql-checkpoint", p["iql"], "--out-dir", "new"],
         ("needs Q/V trained with expectile 0.5",)),
    Case("finetune Q/V file as GAE critic",
         lambda p: ["finetune", *trial_flags(p["start"]), "--gae-critic-checkpoint", p["iql"], "--out-dir", "new"],
         ("not a V-only critic",)),
    Case("finetune negative seed", lambda p: ["finetune", *trial_flags(p["start"], seed=-1), "--out-dir", "new"],
         ("seed must be in [0, 4294]", "got -1")),
    Case("finetune zero envs", lambda p: ["finetune", "--num-envs", "0", "--out-dir", "new"], ("num_envs must be >= 1, got 0",)),
    Case("finetune non-integer flag", lambda p: ["finetune", "--num-envs", "abc"], ("argument --num-envs: invalid int value: 'abc'",)),
    Case("finetune over a finished trial", lambda p: ["finetune", *trial_flags(p["start"]), "--out-dir", T],
         ("already holds a trial", "pass --resume", "--overwrite")),
    Case("finetune --resume with a changed config", lambda p: ["finetune", *trial_flags(p["start"], num_steps=3), "--out-dir", T, "--resume"],
         ("was run with num_steps=2, this call asks for 3",)),
    Case("finetune --resume without a checkpoint", lambda p: ["finetune", *trial_flags(p["start"]), "--out-dir", "empty_trial", "--resume"],
         ("trial_state.pt does not exist, so there is no trial to continue",)),
    Case("finetune --resume with --overwrite", lambda p: ["finetune", *trial_flags(p["start"]), "--out-dir", T, "--resume", "--overwrite"],
         ("exclude each other",)),
    Case("finetune --out-dir is a file", lambda p: ["finetune", *trial_flags(p["start"]), "--out-dir", "a_file"], ("a_file is a file",)),
    Case("quality over a finished trial",
         lambda p: ["quality", *trial_flags(p["start"]), "--expert-checkpoint", SHIPPED / "expert.pt", "--out-dir", T],
         ("already holds a trial",)),
    # -- eval (item 4: unknown env id, zero episodes) and the kinds already handled
    Case("eval unregistered env id", lambda p: ["eval", "--checkpoint", p["start"], "--env-id", "NoSuchEnv-v0"],
         ("env id 'NoSuchEnv-v0' is not a registered ManiSkill task",)),
    Case("eval zero episodes", lambda p: ["eval", "--checkpoint", p["start"], "--episodes", "0"], ("--episodes must be >= 1, got 0",)),
    Case("eval zero envs", lambda p: ["eval", "--checkpoint", p["start"], "--num-envs", "0"], ("--num-envs must be >= 1, got 0",)),
    Case("eval checkpoint of the wrong size", lambda p: ["eval", "--checkpoint", p["inp"] / "act7.pt"], ("has obs/act dims 42/7",)),
    Case("eval --backend gpu without GPU simulation", lambda p: ["eval", "--checkpoint", p["start"], "--backend", "gpu"], ("backend 'gpu' needs",)),
    # -- collect, pretrain-iql, pretrain-critic, pretrain, select
    Case("collect policy of the wrong size", lambda p: ["collect", "--policy", p["inp"] / "act7.pt", "--out", "new.pt"], ("has obs/act dims 42/7",)),
    Case("collect over an existing dataset", lambda p: ["collect", "--policy", p["start"], "--out", f"{R}/data.pt"],
         ("data.pt already exists; pass --overwrite",)),
    Case("collect --out is a directory", lambda p: ["collect", "--policy", p["start"], "--out", R], ("is a directory",)),
    Case("collect zero transitions", lambda p: ["collect", "--num-transitions", "0"], ("num_transitions must be >= 1",)),
    Case("pretrain-iql policy as dataset", lambda p: ["pretrain-iql", "--dataset", p["start"], "--out", "new.pt"],
         ("is a policy checkpoint, expected a dataset checkpoint",)),
    Case("pretrain-iql --device cuda without CUDA", lambda p: ["pretrain-iql", "--dataset", f"{R}/data.pt", "--device", "cuda", "--out", "new.pt"],
         ("device 'cuda' is not available",)),
    Case("pretrain-critic policy of the wrong size", lambda p: ["pretrain-critic", "--policy", p["inp"] / "act7.pt", "--out", "new.pt"],
         ("has obs/act dims 42/7",)),
    Case("pretrain --init-from of the wrong size", lambda p: ["pretrain", "--init-from", p["inp"] / "act7.pt", "--out-dir", "new"],
         ("--init-from", "has obs/act dims 42/7")),
    Case("pretrain --out-dir below a file", lambda p: ["pretrain", "--out-dir", "a_file/pretrain"], ("a_file is a file",)),
    Case("select without a ladder", lambda p: ["select", "--ladder-dir", R, "--out-dir", "new"], ("no ladder.csv in",)),
    # -- submit
    Case("submit with neither --address nor --slurm", lambda p: ["submit", p["inp"] / "tiny.yaml", "--working-dir", p["root"]],
         ("submit needs --address",)),
    Case("submit --slurm to a directory",
         lambda p: ["submit", p["inp"] / "tiny.yaml", "--working-dir", p["root"], "--storage", "/shared/runs", "--slurm", p["ws"] / R],
         ("is a directory",)),
    Case("submit relative storage", lambda p: ["submit", p["inp"] / "relative.yaml", "--working-dir", p["root"], "--slurm", "x.sbatch"],
         ("is relative",)),
    Case("submit zero nodes",
         lambda p: ["submit", p["inp"] / "tiny.yaml", "--working-dir", p["root"], "--storage", "/shared/runs", "--slurm", "x.sbatch", "--nodes", "0"],
         ("--nodes must be >= 1",)),
]
NEEDS_NO_GPU_SIM = {"finetune --backend gpu without GPU simulation", "eval --backend gpu without GPU simulation"}
NEEDS_NO_CUDA = {"finetune --device cuda without CUDA", "pretrain-iql --device cuda without CUDA"}


def unavailable_cases() -> dict:
    """Case id -> why this machine cannot run it (it has what the case needs to lack)."""
    why = {}
    if _gpu_sim_available():
        why |= dict.fromkeys(NEEDS_NO_GPU_SIM, "this machine has GPU simulation")
    if torch.cuda.is_available():
        why |= dict.fromkeys(NEEDS_NO_CUDA, "this machine has CUDA")
    return why


def run_cases(paths: dict, cases=CASES, workers: int = 2, forked: bool = False) -> dict:
    """Every case once, ``workers`` at a time (the CI machine has 2 cores; each call is one CPU-bound Python start-up),
    each in its own copy of the template workspace; ``forked``: each from one of ``workers`` fork servers (see
    :func:`run_case`).  Case id -> Outcome, or the reason (str) it was not run."""
    unavailable = unavailable_cases()
    servers = queue.Queue()
    for _ in range(workers if forked else 0):
        servers.put(ForkServer())

    def one(i_case):
        i, case = i_case
        if case.id in unavailable:
            return case.id, unavailable[case.id]
        ws = paths["root"] / f"ws{i:02d}"
        shutil.copytree(paths["template"], ws, symlinks=True)
        server = servers.get() if forked else None
        try:
            return case.id, run_case(case, paths, ws, paths["root"] / f"log{i:02d}", server)
        except CaseUnavailable as e:
            return case.id, str(e)
        finally:
            if server is not None:
                servers.put(server)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(pool.map(one, enumerate(cases)))
    finally:
        while not servers.empty():
            servers.get().close()

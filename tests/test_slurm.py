"""The generated SLURM batch script on a real single-node SLURM (munged, slurmctld, slurmd started on localhost
by ``tests/slurm_cluster.py``): the smoke grid end to end, cancelled once trials have reported and submitted
again, with every trial finished exactly once.

It starts root daemons, so it runs only when asked:

    sudo apt-get install -y slurm-wlm munge
    sudo O2O_SLURM=1 .venv/bin/python -m pytest -q -s tests/test_slurm.py      # about 6 minutes on 2 cores
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import INSTALL, local_slurm, missing

ENABLE = f"sudo {INSTALL} && sudo O2O_SLURM=1 .venv/bin/python -m pytest -q -s tests/test_slurm.py"
REPO = Path(__file__).resolve().parent.parent
SMOKE_TRIALS = 12
NUM_ITERATIONS = 1  # experiments/smoke.yaml's budget


def _skip_reason() -> str | None:
    why = missing()
    if why:
        return f"{why}; to run it: {ENABLE}"
    if os.environ.get("O2O_SLURM") != "1":
        return f"starts root SLURM daemons on localhost, so only on request: {ENABLE}"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_args(tmp: Path) -> str:
    """Ports of their own: other Ray clusters may run on this machine."""
    flags = ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")
    return " ".join([f"--temp-dir={tmp}"] + [f"{f}={_free_port()}" for f in flags])


def trial_records(run_dir: Path) -> dict[str, list[int]]:
    """Trial directory -> the iterations its result.json holds, in order (a rerun shows as a repeat)."""
    out = {}
    for params in sorted(run_dir.glob("*/params.json")):
        result = params.parent / "result.json"
        rows = [json.loads(l) for l in result.read_text().splitlines() if l.strip()] if result.is_file() else []
        out[params.parent.name] = [r["iteration"] for r in rows if "iteration" in r]
    return out


def finished(records: dict[str, list[int]]) -> set[str]:
    return {t for t, its in records.items() if its and its[-1] == NUM_ITERATIONS}


def _jobs(env: dict) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True, check=True)
    return [l for l in out.stdout.splitlines() if l.strip()]


def _wait(what: str, ok, timeout_s: float, log: Path) -> None:
    deadline = time.time() + timeout_s
    while not ok():
        if time.time() > deadline:
            pytest.fail(f"{what} after {timeout_s:g} s; job log:\n{log.read_text()[-4000:] if log.exists() else '(none)'}")
        time.sleep(3)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with local_slurm(tmp_path_factory.mktemp("slurm"), cpus=2, memory_mb=8000) as env:
        yield env


def test_smoke_grid_under_slurm_survives_cancel_and_resubmit(slurm, tmp_path):
    storage = tmp_path / "runs"
    storage.mkdir()
    script = tmp_path / "smoke.sbatch"
    made = subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", "experiments/smoke.yaml", "--slurm", str(script),
         "--storage", str(storage), "--cpus-per-node", "2", "--mem", "6G", "--time", "00:30:00",
         "--port", str(_free_port()), "--wait-timeout", "180", "--venv", str(Path(sys.executable).parent.parent),
         "--ray-args", _ray_args(Path("/tmp") / f"o2o-slurm-ray-{os.getpid()}")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    text = script.read_text()
    for line in ("#SBATCH --mem=6G", 'cd "${SLURM_SUBMIT_DIR:?', '--num-cpus="$SLURM_CPUS_PER_TASK"',
                 '--num-gpus="${SLURM_GPUS_ON_NODE:-0}"', "wait_for "):
        assert line in text, line
    env = dict(slurm, PYTHONPATH=str(REPO))  # the job's Ray workers import this checkout
    run_dir = storage / "smoke"

    def submit() -> tuple[str, Path]:
        out = subprocess.run(["sbatch", "--parsable", str(script)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
        job = out.stdout.strip().split(";")[0]
        return job, storage / f"smoke-slurm-{job}.out"

    first, log1 = submit()
    _wait("no trial finished", lambda: len(finished(trial_records(run_dir))) >= 3 if run_dir.is_dir() else False, 600, log1)
    subprocess.run(["scancel", first], env=env, check=True)
    _wait(f"job {first} did not end after scancel", lambda: not _jobs(env), 120, log1)
    before = trial_records(run_dir)
    done_before = finished(before)

    second, log2 = submit()
    _wait(f"job {second} did not end", lambda: not _jobs(env), 900, log2)
    after = trial_records(run_dir)
    done = finished(after)
    rerun = {t for t in done_before if after[t] != before[t]}
    repeated = {t for t, its in after.items() if len(its) != len(set(its))}
    figures = {"expected": SMOKE_TRIALS, "finished_before_cancel": len(done_before), "finished": len(done),
               "lost": SMOKE_TRIALS - len(done), "finished_trials_run_again": len(rerun),
               "trials_with_a_repeated_iteration": len(repeated)}
    print("\nSLURM requeue figures:", json.dumps(figures))
    (tmp_path.parent / "slurm_figures.json").write_text(json.dumps(figures))
    log = log2.read_text()
    assert f"{SMOKE_TRIALS}/{SMOKE_TRIALS} trials finished, 0 failed" in log, log[-4000:]
    assert re.search(r"2 CPUs and 0 GPUs per node, 6144 MB memory per node", log)
    assert len(after) == SMOKE_TRIALS and len(done) == SMOKE_TRIALS
    assert not rerun and not repeated, figures
    launches = [json.loads(l) for l in (run_dir / "launches.jsonl").read_text().splitlines()]
    assert [l["event"] for l in launches if l["event"] in ("start", "resume")] == ["start", "resume"]
    assert (run_dir / "analysis" / "report.md").is_file()

"""Cluster submission: a real Ray head (``ray start --head`` on 127.0.0.1, token authentication on) takes a
real grid job over the Job API; a wrong token is refused with a clear error; the SLURM script is valid bash.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.submit import SlurmConfig, SubmitError, job_client, sbatch_script, submit, wait_for_job, write_sbatch
from tests.sessions import kill_session

VENV_BIN = str(Path(sys.executable).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head in its own session, with token auth and a token of its own; stopped (its process group only) after."""
    tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # Ray's socket paths must stay short
    token = tmp / "token"
    token.write_text(os.urandom(16).hex())
    token.chmod(0o600)
    port, dash = _free_port(), _free_port()
    ports = {flag: _free_port() for flag in ("--ray-client-server-port", "--dashboard-agent-listen-port",
                                              "--dashboard-agent-grpc-port", "--metrics-export-port",
                                              "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")}
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    cmd = ["ray", "start", "--head", "--block", f"--port={port}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={tmp / 'ray'}",
           "--disable-usage-stats", "--include-dashboard=true"] + [f"{k}={v}" for k, v in ports.items()]
    log = tmp / "head.log"
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                job_client(address, str(token))
                break
            except SubmitError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"Ray head did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield {"address": address, "token": token, "tmp": tmp}
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        time.sleep(2)
        kill_session(proc.pid)  # anything of this head's session still there, its workers included
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def job_dir(tmp_path, policy_checkpoint) -> Path:
    """A working directory to ship: a one-trial grid spec and its start checkpoint."""
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copy(policy_checkpoint, wd / "start.pt")
    (wd / "job.yaml").write_text(yaml.safe_dump({
        "name": "job", "checkpoints": {"start": "start.pt"}, "estimators": ["gae"], "updates": ["awr"], "seeds": 1,
        "shared": {"update_epochs": 2},
        "budget": {"num_envs": 1, "num_steps": 8, "num_iterations": 1},
        "eval": {"num_eval_episodes": 1, "eval_stochastic": False},
    }))
    return wd


def test_grid_job_runs_on_the_cluster(ray_head, job_dir, tmp_path, capsys):
    storage = tmp_path / "shared_runs"
    sub = submit(job_dir / "job.yaml", ray_head["address"], storage=str(storage), working_dir=job_dir,
                 token_file=str(ray_head["token"]))
    assert sub.entrypoint == f"python -m orchestrator grid job.yaml --storage {storage} --resume"
    status = wait_for_job(ray_head["address"], sub.job_id, token_file=str(ray_head["token"]), timeout_s=400)
    logs = capsys.readouterr().out
    assert status == "SUCCEEDED", logs[-3000:]
    assert "1/1 trials finished, 0 failed" in logs
    run_dir = storage / "job"
    assert sub.run_dir == run_dir
    (trial,) = [p for p in run_dir.glob("gae+awr_s1_*") if p.is_dir()]
    rows = [json.loads(l)["iteration"] for l in (trial / "result.json").read_text().splitlines()]
    assert rows == [0, 1]
    assert json.loads((run_dir / "spec.resolved.json").read_text())["trials"][0]["update"] == "awr"


def test_wrong_token_is_refused_clearly(ray_head, job_dir, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 32)
    with pytest.raises(SubmitError, match=r"refused the request .*token used: .*wrong_token.*--token-file"):
        submit(job_dir / "job.yaml", ray_head["address"], storage=str(tmp_path / "runs"), working_dir=job_dir,
               token_file=str(wrong))


def test_submission_input_errors(job_dir, tmp_path):
    with pytest.raises(SubmitError, match=r"storage 'runs/grid' is relative"):
        submit(job_dir / "job.yaml", "http://127.0.0.1:1", working_dir=job_dir)
    outside = tmp_path / "outside.yaml"
    outside.write_text((job_dir / "job.yaml").read_text())
    with pytest.raises(SubmitError, match=r"spec .*outside.yaml is outside the working directory"):
        submit(outside, "http://127.0.0.1:1", storage=str(tmp_path), working_dir=job_dir)
    token = tmp_path / "token"
    token.write_text("abc")
    with pytest.raises(SubmitError, match=r"cannot reach the Ray dashboard at http://127.0.0.1:1"):
        submit(job_dir / "job.yaml", "http://127.0.0.1:1", storage=str(tmp_path), working_dir=job_dir,
               token_file=str(token))
    with pytest.raises(SubmitError, match=r"--token-file .*nope does not exist"):
        submit(job_dir / "job.yaml", "http://127.0.0.1:1", storage=str(tmp_path), working_dir=job_dir,
               token_file=str(tmp_path / "nope"))


def test_slurm_script(job_dir, tmp_path, run_cli):
    cfg = SlurmConfig(nodes=3, cpus_per_node=8, gpus_per_node=1, partition="gpu", time="02:00:00")
    out = write_sbatch(tmp_path / "grid.sbatch", job_dir / "job.yaml", cfg, storage="/shared/runs", working_dir=job_dir)
    text = out.read_text()
    assert subprocess.run(["bash", "-n", str(out)], capture_output=True).returncode == 0
    for line in ("#SBATCH --nodes=3", "#SBATCH --cpus-per-task=8", "#SBATCH --gpus-per-task=1", "#SBATCH --partition=gpu",
                 "#SBATCH --requeue", "export RAY_AUTH_MODE=token", "ray start --head", 'ray start --address="$0"', "#SBATCH --mem=64G", 'cd "${SLURM_SUBMIT_DIR',
                 'python -m orchestrator grid job.yaml --storage /shared/runs --resume --address "$head_ip:$port"'):
        assert line in text, line
    assert os.access(out, os.X_OK)
    with pytest.raises(SubmitError, match=r"a trial needs 1 CPUs, but --cpus-per-node is 0|--cpus-per-node must be >= 1"):
        sbatch_script(job_dir / "job.yaml", SlurmConfig(cpus_per_node=0), storage="/shared/runs", working_dir=job_dir)
    # the CLI: --slurm needs no cluster; a submission without --address or --slurm is a one-line error
    r = run_cli("submit", job_dir / "job.yaml", "--slurm", tmp_path / "cli.sbatch", "--storage", "/shared/runs",
                "--working-dir", job_dir, timeout=120)
    assert r.returncode == 0 and (tmp_path / "cli.sbatch").is_file(), r.stderr
    r = run_cli("submit", job_dir / "job.yaml", "--storage", "/shared/runs", "--working-dir", job_dir, timeout=120)
    assert r.returncode == 2 and "submit needs --address" in r.stderr

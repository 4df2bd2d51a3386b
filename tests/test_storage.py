"""Grid storage at a URI: a real S3-compatible server (moto's standalone server on localhost) holds a grid's Tune
experiment; the grid runs, resumes and is analysed from the URI, nothing of it landing in the working directory."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator.spec import SpecError, parse_spec
from tests.cli_fork_server import ForkServer

pytest.importorskip("moto", reason="the S3 storage test needs moto's server: pip install -e '.[test]'")
boto3 = pytest.importorskip("boto3", reason="the S3 storage test needs boto3 (installed with moto)")

BUCKET = "o2o"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free localhost port with one bucket; the environment a client needs to reach it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        deadline = time.time() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"moto server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield {"env": env, "client": client}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.parametrize("storage, words", [
    ("ftp://host/runs", "storage: ftp://host/runs has scheme 'ftp'; use a path, file://, or one of s3://"),
    ("s3:///runs", "storage: s3:///runs names no bucket or host"),
])
def test_bad_storage_uri_is_one_clear_error(policy_checkpoint, storage, words):
    spec = {"name": "t", "checkpoints": {"start": str(policy_checkpoint)}, "estimators": ["gae"], "updates": ["awr"],
            "storage": storage}
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(spec)


def test_file_uri_is_a_local_path(policy_checkpoint, tmp_path):
    spec = parse_spec({"name": "t", "checkpoints": {"start": str(policy_checkpoint)}, "estimators": ["gae"],
                       "updates": ["awr"], "storage": (tmp_path / "r").as_uri()})
    assert spec.storage == str(tmp_path / "r")


def test_grid_resume_and_analysis_on_s3(s3, policy_checkpoint, tmp_path, request):
    spec = tmp_path / "s3grid.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "s3grid", "checkpoints": {"start": str(policy_checkpoint)}, "estimators": ["gae"], "updates": ["awr"],
        "seeds": 1, "shared": {"update_epochs": 1}, "budget": {"num_envs": 1, "num_steps": 8, "num_iterations": 1},
        "eval": {"num_eval_episodes": 1, "eval_stochastic": False}, "max_failures": 0, "storage": f"s3://{BUCKET}/runs",
    }))
    workdir = tmp_path / "wd"
    workdir.mkdir()
    # each command its own process, forked from one that imported the CLI once (tests/cli_fork_server.py)
    server = ForkServer(dict(os.environ, **s3["env"], O2O_STAGING=str(tmp_path / "staging")))
    request.addfinalizer(server.close)

    def cli(*args, timeout=600):
        return server.run([str(a) for a in args], workdir, timeout)

    uri = f"s3://{BUCKET}/runs/s3grid"
    out = cli("grid", spec, "--no-figures")  # figures are analyze's own tests; here: where files go
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"grid {uri}: 1/1 trials finished, 0 failed" in out.stdout
    keys = _keys(s3["client"], "runs/s3grid/")
    for name in ("spec.resolved.json", "launches.jsonl", "tuner.pkl", "analysis/report.md", "analysis/results.csv"):
        assert f"runs/s3grid/{name}" in keys, (name, keys)
    trial_files = {k.split("/", 3)[3] for k in keys if k.startswith("runs/s3grid/gae+awr_s1_")}
    assert {"result.json", "params.json"} <= trial_files and any(f.endswith("trial/checkpoint/policy.pt") for f in trial_files)
    assert not any(workdir.iterdir())  # nothing in the working directory: the run lives in the bucket

    again = cli("grid", spec)  # a second launch without --resume must not touch the stored run
    assert again.returncode == 2 and f"error: run directory {uri} already exists; pass --resume" in again.stderr

    resumed = cli("resume", uri, "--no-figures")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"grid {uri}: 1/1 trials finished, 0 failed" in resumed.stdout and "report: " in resumed.stdout  # resume analyses the URI run
    launches = s3["client"].get_object(Bucket=BUCKET, Key="runs/s3grid/launches.jsonl")["Body"].read().decode()
    assert [yaml.safe_load(l)["event"] for l in launches.splitlines()] == ["start", "end", "resume", "end"]
    result = s3["client"].get_object(Bucket=BUCKET, Key=next(k for k in keys if k.endswith("/result.json")))["Body"].read()
    assert [yaml.safe_load(l)["iteration"] for l in result.decode().splitlines()] == [0, 1]  # the finished trial was not rerun

    analysis = cli("analyze", uri, "--out", tmp_path / "analysis", "--no-figures")
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    assert "gae+awr" in (tmp_path / "analysis" / "report.md").read_text()
    # several RUN_DIRs, a URI among them: the URI through its staging copy, the export as it is
    both = cli("analyze", uri, tmp_path / "analysis", "--compare", "--out", tmp_path / "both", "--no-figures")
    assert both.returncode == 0, both.stderr[-3000:]
    assert "2 run directories: `s3grid`, `analysis` (exported results table)" in (tmp_path / "both" / "report.md").read_text()

"""GPU placement through real Ray Tune: where the machine has GPUs, each trial computes on the GPU Ray gave it.

Skipped without CUDA (CI).  Run on the lent GPU machines: with one GPU, two trials share it by fractions
(0.5 each, each capped to half its memory); with several, each trial asks for a whole GPU and they get
distinct ones, concurrently.
"""
import json
import subprocess
import sys

import pytest
import torch
import yaml

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run_grid(tmp_path, seeds: int, gpus_per_trial: float) -> list[dict]:
    spec = yaml.safe_load(open("experiments/smoke.yaml"))
    spec.update(name="placement", estimators=["gae"], updates=["ppo"], seeds=seeds, max_failures=0)
    spec["shared"] = {**spec.get("shared", {}), "device": "cuda"}
    spec["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": gpus_per_trial, "mc_worker_cpus": 1}
    path = tmp_path / "placement.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = subprocess.run([sys.executable, "-m", "orchestrator", "grid", str(path), "--storage", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{seeds}/{seeds} trials finished, 0 failed" in out.stdout
    run_dir = tmp_path / "runs" / "placement"
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("*/trial/placement.json"))]
    assert len(records) == seeds
    report = (run_dir / "analysis" / "report.md").read_text()
    assert "## Placement" in report and "| cuda |" in report
    return records


def test_fractional_gpu_trials_share_one_gpu_each_capped(tmp_path):
    records = _run_grid(tmp_path, seeds=2, gpus_per_trial=0.5)
    total_mib = torch.cuda.get_device_properties(0).total_memory / 2 ** 20
    for r in records:
        assert r["device"] == "cuda" and len(r["ray_gpu_ids"]) == 1
        assert r["cuda_visible_devices"] == r["ray_gpu_ids"][0]
        assert r["memory_cap_mib"] == pytest.approx(total_mib / 2, rel=1e-3)
        assert 0 < r["peak_gpu_memory_mib"] < r["memory_cap_mib"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more GPUs")
def test_whole_gpu_trials_get_distinct_gpus(tmp_path):
    n = torch.cuda.device_count()
    records = _run_grid(tmp_path, seeds=n, gpus_per_trial=1)
    assert all(r["device"] == "cuda" and r["memory_cap_mib"] is None for r in records)
    # cpus_per_trial 1: all n trials run at once, so Ray must hand out n different GPUs
    assert len({r["cuda_visible_devices"] for r in records}) == n
    assert all(r["cuda_visible_devices"] == ",".join(r["ray_gpu_ids"]) for r in records)

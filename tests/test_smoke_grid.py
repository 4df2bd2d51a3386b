"""The shipped smoke grid end to end, as a user runs it: every estimator x update cell through real Ray Tune, and the
analysis the grid writes at its end."""
import json
import subprocess
import sys

import pandas as pd


def test_smoke_grid_runs_all_twelve_cells_and_analyzes(tmp_path):
    storage = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "orchestrator", "grid", "experiments/smoke.yaml", "--storage", str(storage)],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "12/12 trials finished, 0 failed" in out.stdout
    run_dir = storage / "smoke"
    # the grid's own analysis, written at its end (the `analyze` command itself: tests/test_analysis.py)
    analysis = run_dir / "analysis"
    summary = pd.read_csv(analysis / "summary.csv")
    cells = set(summary["estimator"] + "+" + summary["update"])
    assert cells == {f"{e}+{u}" for e in ("gae", "mc", "iql", "sarsa") for u in ("ppo", "awr", "recap")}
    frame = pd.read_csv(analysis / "results.csv")
    assert frame.groupby("trial_id")["iteration"].max().eq(1).all() and frame["trial_id"].nunique() == 12
    report = (analysis / "report.md").read_text()
    assert "## Summary" in report and "mc+awr" in report
    assert (analysis / "curves_by_update.png").stat().st_size > 1000
    # every trial recorded where it ran: smoke.yaml asks for no GPU, so Ray hides the GPUs and torch computes on the CPU
    records = [json.loads(p.read_text()) for p in run_dir.glob("*/trial/placement.json")]
    assert len(records) == 12 and {r["device"] for r in records} == {"cpu"}
    assert all(r["ray_gpu_ids"] == [] and r["memory_cap_mib"] is None for r in records)
    assert "## Placement" in report and "| cpu |" in report

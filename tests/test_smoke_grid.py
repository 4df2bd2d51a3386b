"""The shipped smoke grid end to end, as a user runs it: every estimator x update cell through real Ray Tune, and the
analysis the grid writes at its end.  It is also where the twelve estimator x rule cells it runs are checked for the
SPEC's metrics (tests/test_finetune.py runs the other combinations through ``run_trial`` directly)."""
import json
import math
import subprocess
import sys

import pandas as pd

from algorithms.finetune import TRIAL_STATE
from tests.spec_metrics import SPEC_METRICS

# the stochastic evaluation's metric is left out here (smoke.yaml turns that evaluation off): tests/test_finetune.py checks it
SMOKE_METRICS = [k for k in SPEC_METRICS if k != "eval/success_rate_stochastic"]


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

    # every cell's last iteration: the SPEC's metrics and the rule's and estimator's own
    last = frame.sort_values("iteration").groupby("trial_id").tail(1)
    for _, row in last.iterrows():
        est, upd = row["config/estimator"], row["config/update"]
        cell = f"{est}+{upd}"
        missing = [k for k in SMOKE_METRICS if k not in row or pd.isna(row[k])]
        assert not missing, (cell, missing)
        assert est != "gae" or not pd.isna(row["losses/value_loss"]), cell
        if upd == "recap":
            assert not pd.isna(row["losses/pos_loss"]) and not pd.isna(row["losses/neg_loss"]), cell
        if upd == "awr":
            assert 0.0 < row["charts/awr_weight_ess"] <= 1.0 + 1e-9, cell
        corr = row["charts/advantage_value_corr"]
        assert math.isnan(corr) or -1.0 - 1e-9 <= corr <= 1.0 + 1e-9, cell
        assert row["charts/env_steps"] == 1 * 10, cell  # smoke.yaml's budget: 1 env x 10 steps, one iteration
        if est == "mc":  # re-rollouts are counted
            assert row["charts/sim_steps"] > row["charts/env_steps"], cell
        else:
            assert row["charts/sim_steps"] == row["charts/env_steps"], cell
        assert 0.0 <= row["eval/success_rate"] <= 1.0
    for trial in [p for p in run_dir.iterdir() if (p / "trial").is_dir()]:
        assert (trial / "checkpoint_000001" / TRIAL_STATE).is_file(), trial.name  # each report carried the trial's state
        assert any((trial / "trial" / "tb").iterdir()), trial.name
        config = json.loads((trial / "trial" / "config.json").read_text())
        assert f"{config['estimator']}+{config['update']}" in cells

"""Trackers: one real grid (2 trials on the PickCube CPU simulation) logs to MLflow (a local SQLite store) and
to W&B in offline mode; every trial is there with its config, metrics over env steps and final checkpoint.
Each tracker's checks skip when its package is missing (`pip install -e '.[mlflow]'` / `'.[wandb]'`)."""
from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
import yaml

from orchestrator.spec import SpecError, parse_spec

HAVE = {m: importlib.util.find_spec(m) is not None for m in ("mlflow", "wandb")}
pytestmark = pytest.mark.skipif(not any(HAVE.values()), reason="neither mlflow nor wandb installed: pip install -e '.[mlflow,wandb]'")


def _spec(policy_checkpoint, tmp_path) -> dict:
    tracking = {}
    if HAVE["wandb"]:
        tracking["wandb"] = {"project": "o2o-test", "mode": "offline"}
    if HAVE["mlflow"]:
        tracking["mlflow"] = {"tracking_uri": str(tmp_path / "mlflow")}
    return {"name": "tracked", "checkpoints": {"start": str(policy_checkpoint)}, "estimators": ["gae"], "updates": ["awr"],
            "seeds": 2, "shared": {"update_epochs": 1}, "budget": {"num_envs": 1, "num_steps": 8, "num_iterations": 1},
            "eval": {"num_eval_episodes": 1, "eval_stochastic": False}, "max_failures": 0,
            "storage": str(tmp_path / "runs"), "tracking": tracking}


@pytest.mark.parametrize("block, words", [
    ({"wandb": {"mode": "offline"}}, "tracking.wandb.project: required"),
    ({"wandb": {"project": "p", "mode": "sometimes"}}, "tracking.wandb.mode: expected online or offline"),
    ({"mlflow": {"tracking_uri": "x", "colour": 1}}, "tracking.mlflow.colour: unknown key"),
    ({"neptune": {}}, "tracking.neptune: unknown key; allowed keys: wandb, mlflow"),
])
def test_bad_tracking_blocks_are_one_clear_error(policy_checkpoint, tmp_path, block, words):
    d = _spec(policy_checkpoint, tmp_path)
    d["tracking"] = block
    with pytest.raises(SpecError, match=words):
        parse_spec(d)


def test_local_mlflow_store_path(policy_checkpoint, tmp_path):
    if not HAVE["mlflow"]:
        pytest.skip("mlflow not installed: pip install -e '.[mlflow]'")
    spec = parse_spec(_spec(policy_checkpoint, tmp_path))
    assert spec.tracking.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert spec.tracking.mlflow.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()


def test_every_trial_reaches_the_trackers(policy_checkpoint, tmp_path, run_cli):
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(_spec(policy_checkpoint, tmp_path)))
    out = run_cli("grid", path, "--no-figures", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2/2 trials finished, 0 failed" in out.stdout
    run_dir = tmp_path / "runs" / "tracked"
    results = pd.read_csv(run_dir / "analysis" / "results.csv")
    expected = {tid: g.sort_values("iteration")[["charts/env_steps", "eval/success_rate"]].values.tolist()
                for tid, g in results.groupby("trial_id")}
    assert len(expected) == 2

    if HAVE["mlflow"]:
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("tracked")
        assert exp.artifact_location.startswith((tmp_path / "mlflow" / "artifacts").as_uri())
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
        for r in runs:
            assert r.data.params["update"] == "awr" and r.data.params["num_steps"] == "8"
            tid = r.data.tags["trial_name"]
            hist = client.get_metric_history(r.info.run_id, "eval/success_rate")
            seed_rows = results[results["config/seed"] == int(r.data.params["seed"])].sort_values("iteration")
            assert [(m.step, m.value) for m in hist] == list(zip(seed_rows["charts/env_steps"], seed_rows["eval/success_rate"])), tid
            assert {a.path for a in client.list_artifacts(r.info.run_id, "trial/checkpoint")} >= {"trial/checkpoint/policy.pt"}

    if HAVE["wandb"]:
        from tests.wandb_records import summary

        files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 2, files
        for f in files:
            s = summary(f)
            tid = f.stem[len("run-"):]
            assert s["exit_code"] == 0 and s["config"]["update"] == "awr"
            rows = [(h["charts/env_steps"], h["eval/success_rate"]) for h in s["history"] if "eval/success_rate" in h]
            assert [list(r) for r in rows] == expected[tid]
            assert s["artifacts"] == {f"checkpoint-{tid}": ["policy.pt", "trial_state.pt"]}

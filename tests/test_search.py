"""Per-cell hyperparameter search: the spec's ``search:``/``scheduler:`` blocks are validated before Ray starts,
and a tiny Optuna search with ASHA runs on real Ray Tune and the PickCube CPU simulation (the toy chain MDP
has no vector-env backend the trial loop can build), each cell sampled on its own, with the best config per
cell in the report."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml

from orchestrator.search import SearchSpec, best_per_cell
from orchestrator.spec import SpecError, parse_spec

pytest.importorskip("optuna", reason="the search test needs optuna: pip install -e '.[test]'")

SPACE = {"learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}, "awr_beta": {"uniform": [0.1, 2.0]}}


@pytest.fixture()
def base(policy_checkpoint, tmp_path) -> dict:
    return {
        "name": "s",
        "checkpoints": {"start": str(policy_checkpoint)},
        "estimators": ["gae"],
        "updates": ["ppo", "awr"],
        "seeds": 1,
        "shared": {"update_epochs": 1},
        "budget": {"num_envs": 1, "num_steps": 8, "num_iterations": 1},
        "eval": {"num_eval_episodes": 1, "eval_stochastic": False},
        "search": {"num_samples": 2, "seed": 3, "space": copy.deepcopy(SPACE)},
        "scheduler": {"type": "asha", "grace_period": 1},
        "resources": {"cpus_per_trial": 1},
        "max_failures": 0,
        "storage": str(tmp_path / "runs"),
    }


def test_search_blocks_parse_and_round_trip(base):
    spec = parse_spec(base)
    assert spec.search == SearchSpec(space=SPACE, num_samples=2, seed=3)
    assert (spec.scheduler.metric, spec.scheduler.mode, spec.scheduler.reduction_factor) == ("eval/success_rate", "max", 2)
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec  # spec.resolved.json re-validates to the same spec


@pytest.mark.parametrize("change, words", [
    (lambda d: d["search"]["space"].update(nope={"uniform": [0, 1]}), "search.space.nope: unknown FinetuneConfig field"),
    (lambda d: d["search"]["space"].update(update_epochs={"randint": [1, 4]}), "search.space.update_epochs: update_epochs is set by shared"),
    (lambda d: d["search"]["space"].update(seed={"randint": [1, 4]}), "search.space.seed: seed is set by seeds"),
    (lambda d: d["search"]["space"].update(awr_beta={"normal": [0, 1]}), "search.space.awr_beta: expected one of {uniform: [...]"),
    (lambda d: d["search"]["space"].update(awr_beta={"uniform": [2, 1]}), "search.space.awr_beta.uniform: low must be below high"),
    (lambda d: d["search"]["space"].update(learning_rate={"loguniform": [0, 1]}), "search.space.learning_rate.loguniform: bounds must be > 0"),
    (lambda d: d["search"]["space"].update(gamma={"uniform": [0.5, 1.5]}), "search.space.gamma.uniform[1]:"),
    (lambda d: d["search"].update(algorithm="hyperopt"), "search.algorithm: unknown search algorithm 'hyperopt'; choose from optuna"),
    (lambda d: d["search"].update(num_samples=0), "search.num_samples: expected an integer >= 1"),
    (lambda d: d["search"].update(mode="up"), "search.mode: expected max or min"),
    (lambda d: d.update(seeds=2), "search: each sampled config runs with one seed, but seeds lists 2"),
    (lambda d: d.update(sweep={"gamma": [0.8, 0.9]}), "search: a spec either sweeps or searches; move sweep.gamma"),
    (lambda d: d["scheduler"].update(type="pbt"), "scheduler.type: unknown scheduler type 'pbt'; choose from asha"),
    (lambda d: d["scheduler"].update(grace_period=0), "scheduler.grace_period: expected an integer >= 1"),
])
def test_bad_search_blocks_are_one_clear_error(base, change, words):
    change(base)
    with pytest.raises(SpecError) as e:
        parse_spec(base)
    assert words in str(e.value) and "\n" not in str(e.value)


def _named(base: dict, **cells) -> dict:
    """``base`` with named cells instead of estimators x updates."""
    d = {k: v for k, v in base.items() if k not in ("estimators", "updates")}
    return {**d, "cells": cells}


def test_search_over_named_cells_is_one_study_per_label(base):
    spec = parse_spec(_named(base, fast={"estimator": "gae", "update": "awr", "seeds": [7]},
                             slow={"estimator": "gae", "update": "awr", "awr_max_weight": 50.0}))
    assert list(spec.cell_table()) == ["fast", "slow"] and spec.search.num_samples == 2
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("cells, words", [
    ({"a": {"estimator": "gae", "update": "awr", "seeds": [1, 2]}},
     "search: each sampled config runs with one seed, but cells.a.seeds lists 2; give each cell one seed"),
    ({"a": {"estimator": "gae", "update": "awr", "awr_beta": 1.0}},
     "search.space.awr_beta: awr_beta is set by cells.a; a field is either searched or set"),
    ({"a": {"estimator": "gae", "update": "awr", "seeds": [1]}, "b": {"estimator": "gae", "update": "ppo"}},
     "search: each sampled config runs with one seed, but seeds lists 2"),
])
def test_search_with_named_cells_rejects_what_it_cannot_combine(base, cells, words):
    d = _named(base, **cells)
    d["seeds"] = 2  # only the cells without seeds of their own take the spec's (here: 2) seeds
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_search_is_exit_2_before_ray(base, tmp_path, run_cli):
    base["search"]["space"]["awr_beta"] = {"uniform": [2, 1]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base))
    out = run_cli("grid", path, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: search.space.awr_beta.uniform: low must be below high")
    assert not (tmp_path / "runs").exists()


def test_best_per_cell_picks_each_cells_best_final_report():
    rows = []  # cell a+x: trial 1 ends at 0.5 (peak 0.9 earlier), trial 2 ends at 0.7; cell a+y: one trial
    for tid, upd, lr, succ in (("t1", "x", 1e-4, [0.1, 0.9, 0.5]), ("t2", "x", 3e-4, [0.1, 0.2, 0.7]), ("t3", "y", 2e-4, [0.3, None, 0.4])):
        for it, s in enumerate(succ):
            rows.append({"trial_id": tid, "iteration": it, "config/estimator": "a", "config/update": upd,
                         "config/learning_rate": lr, "eval/success_rate": s})
    best = best_per_cell(pd.DataFrame(rows), SearchSpec(space={"learning_rate": {"uniform": [0, 1]}}))
    assert best[["cell", "trial_id", "eval/success_rate", "trials", "learning_rate"]].values.tolist() == [
        ["a+x", "t2", 0.7, 2, 3e-4], ["a+y", "t3", 0.4, 1, 2e-4]]
    low = best_per_cell(pd.DataFrame(rows), SearchSpec(space={"learning_rate": {"uniform": [0, 1]}}, mode="min"))
    assert low["trial_id"].tolist() == ["t1", "t3"]


def test_tiny_search_samples_each_cell_and_reports_its_best(base, tmp_path, run_cli):
    """Named cells (one with a seed of its own): each label is sampled by its own study and stopped by its own ASHA."""
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(_named(base, ppo={"estimator": "gae", "update": "ppo"},
                                          **{"awr-s7": {"estimator": "gae", "update": "awr", "seeds": [7]}})))
    out = run_cli("grid", path, "--no-figures", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4/4 trials finished, 0 failed" in out.stdout
    run_dir = tmp_path / "runs" / "s"
    results = pd.read_csv(run_dir / "analysis" / "results.csv")
    trials = results.drop_duplicates("trial_id")
    assert trials.groupby("config/cell")["trial_id"].nunique().to_dict() == {"awr-s7": 2, "ppo": 2}
    assert trials.set_index("config/cell")["config/seed"].to_dict() == {"awr-s7": 7, "ppo": 1}
    assert len(list(run_dir.glob("awr-s7_s7_*"))) == 2  # trial directories named by the cell's label and seed
    # every trial got its own sample, inside the space, and the cell's other settings
    lrs = trials["config/learning_rate"]
    assert lrs.nunique() == 4 and lrs.between(1e-5, 1e-3).all() and trials["config/awr_beta"].between(0.1, 2.0).all()
    assert (trials["config/update_epochs"] == 1).all() and (trials["config/num_steps"] == 8).all()
    assert results.groupby("trial_id")["iteration"].max().eq(1).all()
    report = (run_dir / "analysis" / "report.md").read_text()
    section = report.split("## Best config per cell", 1)[1].split("##", 1)[0]
    best = best_per_cell(results, SearchSpec(space=SPACE))
    for _, r in best.iterrows():
        assert f"| {r['cell']} | {r['trial_id']} | {r['eval/success_rate']:.3f} | 2 |" in section
    assert set(best["cell"]) == {"ppo", "awr-s7"}

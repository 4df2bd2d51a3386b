"""Grid specs: parsing, expansion into trial configs, and one clear error per kind of bad input.

No Ray here: everything below is checked before Ray starts.  Checkpoints are real files in the project's
format (conftest's untrained policy); corrupt and wrong-task checkpoints are real files too.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from algorithms.config import FinetuneConfig
from orchestrator.spec import (
    SpecError, check_resources, expand_trials, load_spec, local_machine_resources, parse_spec, read_yaml,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def base(policy_checkpoint, tmp_path) -> dict:
    """A valid spec mapping: gae x {ppo, awr}, tiny budget."""
    return {
        "name": "t",
        "checkpoints": {"start": str(policy_checkpoint), "expert": str(policy_checkpoint)},
        "estimators": ["gae"],
        "updates": ["ppo", "awr"],
        "seeds": 1,
        "budget": {"num_envs": 1, "num_steps": 10, "num_iterations": 2},
        "eval": {"num_eval_episodes": 2, "eval_stochastic": False},
        "storage": str(tmp_path / "runs"),
    }


def _with(d: dict, path: str, value) -> dict:
    """Copy of ``d`` with ``a.b.c`` set to ``value`` (``value is DELETE`` removes it)."""
    d = copy.deepcopy(d)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is DELETE:
        node.pop(keys[-1])
    else:
        node[keys[-1]] = value
    return d


DELETE = object()

# (what, key path, value, words the one-line error must contain)
MALFORMED = [
    ("unknown top-level key", "epochs", 3, ["epochs: unknown key", "allowed keys"]),
    ("unknown nested key", "budget.num_env", 4, ["budget.num_env: unknown key", "num_envs"]),
    ("unknown estimator", "estimators", ["gae", "tdx"], ["estimators[1]", "unknown estimator 'tdx'", "gae, td, mc, iql, sarsa, uniform"]),
    ("unknown update", "updates", ["ppo", "sac"], ["updates[1]", "unknown update 'sac'"]),
    ("empty estimator list", "estimators", [], ["estimators: expected a non-empty list"]),
    ("missing required key", "updates", DELETE, ["updates: required key is missing"]),
    ("string for an int", "budget.num_envs", "4", ["budget.num_envs: expected an integer", "'4'"]),
    ("bool for a number", "per_method.awr.awr_beta", True, ["per_method.awr.awr_beta: expected a number"]),
    ("negative count", "budget.num_iterations", -1, ["budget.num_iterations", "must be >= 1", "-1"]),
    ("negative seed count", "seeds", -2, ["seeds: must be >= 1"]),
    ("non-int seed", "seeds", [1, "two"], ["seeds[1]: expected an integer"]),
    ("duplicate seed", "seeds", [3, 3], ["seeds: lists a seed twice"]),
    ("missing start checkpoint file", "checkpoints.start", "nowhere/start.pt", ["checkpoints.start", "nowhere/start.pt does not exist"]),
    ("unknown checkpoint key", "checkpoints.dataset", "x.pt", ["checkpoints.dataset: unknown key"]),
    ("iql without value checkpoint", "estimators", ["gae", "iql"], ["checkpoints.iql: required by the iql trials", "pretrain-iql"]),
    ("sarsa without value checkpoint", "estimators", ["sarsa"], ["checkpoints.sarsa: required by the sarsa trials", "--expectile 0.5"]),
    ("unknown per_method key", "per_method.dqn", {"awr_beta": 1.0}, ["per_method.dqn: unknown method", "estimator+update"]),
    ("unknown per_method pair", "per_method.gae+sac", {"awr_beta": 1.0}, ["per_method.gae+sac: unknown method"]),
    ("unknown field in per_method", "per_method.awr.beta", 0.5, ["per_method.awr.beta: unknown FinetuneConfig field"]),
    ("section field in shared", "shared.num_envs", 4, ["shared.num_envs: set it with budget.num_envs"]),
    ("axis field in shared", "shared.seed", 3, ["shared.seed: set it with seeds"]),
    ("axis field in per_method", "per_method.awr.estimator", "mc", ["per_method.awr.estimator: set it with estimators"]),
    ("out-of-range value", "shared.gamma", 1.5, ["shared.gamma", "gamma must be in (0, 1]"]),
    ("sweep axis not a list", "sweep.awr_beta", 0.5, ["sweep.awr_beta: expected a non-empty list"]),
    ("bad sweep value", "sweep.awr_beta", [0.5, -1], ["sweep.awr_beta[1]", "awr_beta must be > 0"]),
    ("sweep over an axis", "sweep.update", ["ppo"], ["sweep.update: set it with updates"]),
    ("unknown resources key", "resources.cpus", 2, ["resources.cpus: unknown key", "cpus_per_trial"]),
    ("zero cpus", "resources.cpus_per_trial", 0, ["resources.cpus_per_trial: expected a number > 0"]),
    ("negative gpus", "resources.gpus_per_trial", -0.5, ["resources.gpus_per_trial: expected a number >= 0"]),
    ("fractional gpus above one", "resources.gpus_per_trial", 1.5, ["resources.gpus_per_trial", "whole number"]),
    ("negative mc worker cpus", "resources.mc_worker_cpus", -1, ["resources.mc_worker_cpus: must be >= 0"]),
    ("negative max_failures", "max_failures", -1, ["max_failures: must be >= 0"]),
    ("name with a slash", "name", "a/b", ["name: expected a directory name"]),
    ("storage URI", "storage", "ftp://host/runs", ["storage", "scheme 'ftp'"]),
    ("unknown backend", "shared.backend", "tpu", ["shared.backend: unknown backend 'tpu'"]),
    ("bad device", "shared.device", "gpu0", ["shared.device: device must be auto, cpu or cuda"]),
    ("env field in per_method", "per_method.gae.env_id", "PushCube-v1", ["per_method.gae.env_id: set it with env.env_id"]),
]


@pytest.mark.parametrize("what,path,value,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_is_one_clear_error(base, what, path, value, words):
    with pytest.raises(SpecError) as err:
        spec = parse_spec(_with(base, path, value))
        expand_trials(spec)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{what}: {w!r} not in {msg!r}"


def test_sweep_clashing_with_fixed_value(base):
    d = _with(_with(base, "shared.awr_beta", 1.0), "sweep.awr_beta", [0.5, 1.0])
    with pytest.raises(SpecError, match=r"sweep.awr_beta: awr_beta is also set in shared"):
        parse_spec(d)


def test_gpu_device_without_gpu_share(base):
    with pytest.raises(SpecError, match=r"trial gae\+ppo seed 1: device=cuda.*resources.gpus_per_trial is 0"):
        expand_trials(parse_spec(_with(base, "shared.device", "cuda")))


def test_corrupt_start_checkpoint_named_with_its_trial(base, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(SpecError) as err:
        expand_trials(parse_spec(_with(base, "checkpoints.start", str(bad))))
    assert "trial gae+ppo seed 1" in str(err.value) and "truncated or not a torch checkpoint" in str(err.value)


def test_checkpoint_of_another_task(base, tmp_path):
    from algorithms.agent import Agent
    from algorithms.checkpoint import save_policy

    other = tmp_path / "push.pt"
    save_policy(other, Agent(42, 8), env_id="PushCube-v1", control_mode="pd_joint_delta_pos")
    with pytest.raises(SpecError, match=r"was made for env_id='PushCube-v1', not 'PickCube-v1'"):
        expand_trials(parse_spec(_with(base, "checkpoints.start", str(other))))


def test_impossible_resources(base):
    spec = parse_spec(_with(base, "resources", {"cpus_per_trial": 2, "mc_worker_cpus": 3}))
    check_resources(spec, 2, 0, "this machine")  # no mc trial: 2 CPUs fit
    spec = parse_spec(_with(_with(base, "resources", {"cpus_per_trial": 2, "mc_worker_cpus": 3}), "estimators", ["gae", "mc"]))
    with pytest.raises(SpecError, match=r"resources: a trial needs 2 \(cpus_per_trial\) \+ 3 \(mc_worker_cpus\) = 5 CPUs, but this machine has 2"):
        check_resources(spec, 2, 0, "this machine")
    spec = parse_spec(_with(base, "resources.gpus_per_trial", 0.25))
    with pytest.raises(SpecError, match=r"resources.gpus_per_trial: 0.25 GPUs per trial requested, but this machine has no GPU"):
        check_resources(spec, 16, 0, "this machine")
    with pytest.raises(SpecError, match=r"but the Ray cluster has 0.2"):
        check_resources(parse_spec(_with(base, "resources.gpus_per_trial", 1)), 16, 0.2, "the Ray cluster")
    cpus, _ = local_machine_resources()
    assert cpus == len(os.sched_getaffinity(0))


def test_yaml_errors(tmp_path, base):
    p = tmp_path / "dup.yaml"
    p.write_text("name: a\nname: b\n")
    with pytest.raises(SpecError, match=r"name: duplicate key \(line 2\)"):
        read_yaml(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"is not valid YAML at line"):
        read_yaml(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match=r"must hold a mapping"):
        read_yaml(p)
    with pytest.raises(SpecError, match=r"spec file .*missing.yaml does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_expansion_precedence_and_counts(base, policy_checkpoint):
    d = copy.deepcopy(base)
    d.update({
        "estimators": ["gae", "mc"],
        "updates": ["ppo", "awr"],
        "seeds": 2,
        "shared": {"update_epochs": 3, "learning_rate": "1e-4"},  # a string is not a number...
    })
    with pytest.raises(SpecError, match=r"shared.learning_rate: expected a number, got '1e-4'"):
        parse_spec(d)
    d["shared"]["learning_rate"] = 1e-4
    d["per_method"] = {"mc": {"update_epochs": 5}, "awr": {"update_epochs": 7}, "mc+awr": {"awr_beta": 0.5}}
    d["sweep"] = {"gae_lambda": [0.8, 0.95]}
    d["resources"] = {"mc_worker_cpus": 2}
    spec = parse_spec(d)
    trials = expand_trials(spec)
    assert len(trials) == 2 * 2 * 2 * 2
    by = {(t.estimator, t.update, t.seed, t.gae_lambda): t for t in trials}
    assert len(by) == len(trials)
    assert {t.seed for t in trials} == {1, 2}
    assert all(isinstance(t, FinetuneConfig) and t.learning_rate == 1e-4 and t.num_envs == 1 for t in trials)
    # later keys win: shared < estimator < update < estimator+update
    assert by[("gae", "ppo", 1, 0.8)].update_epochs == 3
    assert by[("mc", "ppo", 1, 0.8)].update_epochs == 5
    assert by[("mc", "awr", 1, 0.8)].update_epochs == 7
    assert by[("mc", "awr", 2, 0.95)].awr_beta == 0.5 and by[("gae", "awr", 2, 0.95)].awr_beta == 1.0
    # the reserved re-rollout CPUs become the MC worker slots
    assert by[("mc", "ppo", 1, 0.8)].mc_workers == 2 and by[("gae", "ppo", 1, 0.8)].mc_workers == FinetuneConfig.mc_workers
    assert spec.resources.bundles("mc") == [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert spec.resources.bundles("gae") == [{"CPU": 1.0}]
    assert all(Path(t.start_checkpoint).is_absolute() for t in trials)


def test_yaml_float_and_relative_paths(tmp_path, policy_checkpoint):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "start.pt").write_bytes(Path(policy_checkpoint).read_bytes())
    p = tmp_path / "s.yaml"
    p.write_text("name: rel\ncheckpoints: {start: ck/start.pt}\nestimators: gae\nupdates: [awr]\n"
                 "shared: {learning_rate: 1e-4, awr_max_weight: 2e1}\nstorage: out\n")
    spec = load_spec(p, base_dir=tmp_path)
    assert spec.shared == {"learning_rate": 1e-4, "awr_max_weight": 20.0}
    assert spec.checkpoints.start == str(tmp_path / "ck" / "start.pt")
    assert spec.run_dir == tmp_path / "out" / "rel"
    assert spec.seeds == (1,) and spec.max_failures == 1


@pytest.mark.parametrize("preset", ["smoke", "local", "reference", "paper"])
def test_presets_are_valid(preset):
    path = REPO / "experiments" / f"{preset}.yaml"
    data = read_yaml(path)
    missing = [v for v in data["checkpoints"].values() if not (REPO / v).is_file()]
    if missing:
        pytest.skip(f"shipped checkpoints not there yet: {', '.join(missing)}")
    spec = load_spec(path, base_dir=REPO)
    assert set(spec.estimators) == {"gae", "mc", "iql", "sarsa"} and set(spec.updates) == {"ppo", "awr", "recap"}
    trials = expand_trials(spec)
    assert len(trials) == 12 * len(spec.seeds)
    if preset == "smoke":
        assert len(spec.seeds) == 1 and spec.budget["num_envs"] == 1 and spec.budget["num_iterations"] <= 2
        assert all(t.mc_samples == 1 for t in trials if t.estimator == "mc")
        check_resources(spec, 2, 0, "a 2-core laptop")
    if preset == "local":
        check_resources(spec, 2, 0, "a 2-core laptop")
    if preset == "paper":
        assert len(spec.seeds) == 5 and all(t.batch_size == 5000 and t.num_iterations == 10 for t in trials)
        assert all(t.mc_samples == 16 for t in trials if t.estimator == "mc")
        assert all(t.backend == "gpu" for t in trials)
    if preset in ("reference", "paper"):
        assert 0 < spec.resources.gpus_per_trial < 1
        with pytest.raises(SpecError, match="has no GPU"):
            check_resources(spec, 16, 0, "a CPU-only box")


def test_cli_errors_before_ray(run_cli, tmp_path, base):
    """Bad input through the real CLI: exit 2, one line naming the problem, no traceback, nothing written."""
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(_with(base, "estimators", ["gae", "tdx"])))
    r = run_cli("grid", p, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[-1] == "error: estimators[1]: unknown estimator 'tdx'; choose from gae, td, mc, iql, sarsa, uniform"
    assert "Traceback" not in r.stderr
    p.write_text(yaml.safe_dump(_with(base, "resources.cpus_per_trial", 100_000)))
    r = run_cli("grid", p, timeout=120)
    assert r.returncode == 2 and "resources: a trial needs 100000 (cpus_per_trial) = 100000 CPUs, but this machine has" in r.stderr
    assert "Started a local Ray instance" not in r.stderr + r.stdout
    p.write_text(yaml.safe_dump(base))
    r = run_cli("grid", p, "--address", "127.0.0.1:1", timeout=120)
    assert r.returncode == 2 and "error: cannot reach the Ray cluster at 127.0.0.1:1" in r.stderr
    r = run_cli("resume", tmp_path / "no_such_run", timeout=120)
    assert r.returncode == 2 and "no_such_run does not exist" in r.stderr
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------ named cells

def _cells_spec(base):
    d = copy.deepcopy(base)
    del d["estimators"], d["updates"]
    d["seeds"] = 3
    d["per_method"] = {"awr": {"update_epochs": 7, "awr_beta": 0.5}}
    d["cells"] = {
        "gae+ppo": {"estimator": "gae", "update": "ppo"},
        "td20+awr": {"estimator": "td", "update": "awr", "td_n": 20},
        "mc16-expert+awr": {"estimator": "mc", "update": "awr", "seeds": 1, "mc_samples": 16, "awr_beta": 0.25},
        "offline-mc4-expert+awr": {"estimator": "mc", "update": "awr", "seeds": [5], "mc_samples": 4, "offline": True},
    }
    return d


def test_named_cells_expand_with_their_own_seeds_and_overrides(base):
    spec = parse_spec(_cells_spec(base))
    assert spec.estimators == ("gae", "td", "mc") and spec.updates == ("ppo", "awr")
    trials = expand_trials(spec)
    by_cell = {}
    for c in trials:
        by_cell.setdefault(c.cell, []).append(c)
    assert {k: [c.seed for c in v] for k, v in by_cell.items()} == {
        "gae+ppo": [1, 2, 3], "td20+awr": [1, 2, 3], "mc16-expert+awr": [1], "offline-mc4-expert+awr": [5]}
    td = by_cell["td20+awr"][0]
    assert (td.estimator, td.td_n, td.update_epochs, td.awr_beta) == ("td", 20, 7, 0.5)  # per_method[awr] applies
    mc = by_cell["mc16-expert+awr"][0]
    assert (mc.mc_samples, mc.awr_beta, mc.update_epochs) == (16, 0.25, 7)  # the cell's own field wins
    assert by_cell["offline-mc4-expert+awr"][0].offline is True
    assert by_cell["gae+ppo"][0].label == "gae+ppo"
    # the resolved record round-trips (resume re-reads it)
    again = parse_spec(spec.to_dict())
    assert [c.to_dict() for c in expand_trials(again)] == [c.to_dict() for c in trials]


def test_named_cells_param_space_gives_the_expanded_trials(base):
    """Tune's grid over (cell, seed) pairs resolves to exactly expand_trials' configs."""
    from ray.tune.search.variant_generator import generate_variants

    from orchestrator.tune_runner import param_space

    spec = parse_spec(_cells_spec(base))
    expected = sorted((c.cell, c.seed, c.mc_samples, c.td_n, c.offline) for c in expand_trials(spec))
    got = sorted((cfg["cell"], cfg["seed"], cfg["mc_samples"], cfg["td_n"], cfg["offline"])
                 for _, cfg in generate_variants(param_space(spec)))
    assert got == expected


def test_select_runs_a_part_of_the_grid_with_the_same_trial_configs(base):
    """grid --cells/--seeds: the pieces of a grid are its own trials, config for config, and together all of them."""
    spec = parse_spec(_cells_spec(base))
    whole = {(c.cell, c.seed): c.to_dict() for c in expand_trials(spec)}
    piece = spec.select(["gae+ppo:2", "mc16-expert+awr", "td20+awr"], seeds=[1, 2])
    got = {(c.cell, c.seed): c.to_dict() for c in expand_trials(piece)}
    assert sorted(got) == [("gae+ppo", 2), ("mc16-expert+awr", 1), ("td20+awr", 1), ("td20+awr", 2)]
    assert all(got[k] == whole[k] for k in got)
    rest = spec.select([f"gae+ppo:{s}" for s in (1, 3)] + ["td20+awr:3", "offline-mc4-expert+awr"])
    assert {(t.cell, t.seed) for t in expand_trials(rest)} == set(whole) - set(got)  # together: the whole grid
    # an estimators x updates grid selects by est+upd labels; nothing chosen is the whole grid
    plain = parse_spec({**base, "seeds": 2})
    assert [(c.cell, c.seed) for c in expand_trials(plain.select(["gae+awr"], [2]))] == [("gae+awr", 2)]
    assert plain.select() is plain
    for cells, seeds, words in [(["gae+recap"], [], "'gae+recap' is not a cell of grid 't'"),
                                (["mc16-expert+awr:2"], [], "runs seeds [1], not '2'"),
                                (["gae+ppo:x"], [], "not 'x'"),
                                (["mc16-expert+awr"], [3], "no chosen cell of grid 't' runs seed 3")]:
        with pytest.raises(SpecError, match=re.escape(words)):
            spec.select(cells, seeds)


@pytest.mark.parametrize("change,words", [
    ({"estimators": ["gae"]}, "either named cells or estimators"),
    ({"cells": {"bad label!": {"estimator": "gae", "update": "ppo"}}}, "cells.bad label!"),
    ({"cells": {"x": {"update": "ppo"}}}, "cells.x.estimator: required"),
    ({"cells": {"x": {"estimator": "nope", "update": "ppo"}}}, "unknown estimator 'nope'"),
    ({"cells": {"x": {"estimator": "gae", "update": "ppo", "no_such_field": 1}}}, "cells.x.no_such_field: unknown FinetuneConfig field"),
    ({"cells": {"x": {"estimator": "gae", "update": "ppo", "cell": "y"}}}, "cells.x.cell: set it with"),
    ({"cells": {"x": {"estimator": "gae", "update": "ppo", "seeds": 0}}}, "cells.x.seeds: must be >= 1"),
    ({"cells": {}}, "cells: expected a mapping"),
])
def test_named_cell_errors(base, change, words):
    d = _cells_spec(base)
    d.update(change)
    with pytest.raises(SpecError) as err:
        parse_spec(d)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_seed_v2_preset_is_the_reference_protocol():
    """experiments/seed-v2.yaml: the reference's V2 table (SPEC.md) cell by cell."""
    spec = load_spec(REPO / "experiments" / "seed-v2.yaml", base_dir=REPO)
    trials = expand_trials(spec)
    seeds = {}
    for t in trials:
        seeds.setdefault(t.cell, []).append(t.seed)
    counts = {k: len(v) for k, v in seeds.items()}
    assert counts.pop("mc16-expert+awr") >= 1  # issue 9: at least one seed of MC16 (the costly cell)
    assert counts == {
        "gae+ppo": 3, "gae+awr": 3, "iql+awr": 3, "td20+awr": 3, "gae+recap": 3, "mc1-expert+awr": 3,
        "mc4-current+awr": 1, "offline-mc4-expert+awr": 1, "selfclone+awr": 3}
    # the MC16 seeds beyond the first are the same config, another seed
    mc16 = [t for t in trials if t.cell == "mc16-expert+awr"]
    assert all({**vars(t), "seed": 0} == {**vars(mc16[0]), "seed": 0} for t in mc16)
    for t in trials:
        assert (t.gamma, t.learning_rate, t.num_eval_episodes, t.eval_stochastic) == (0.8, 3e-4, 128, False)
        if t.offline:
            assert (t.batch_size, t.num_iterations, t.update_epochs, t.num_minibatches, t.awr_beta) == (25_600, 100, 4, 32, 1.0)
            continue
        assert (t.batch_size, t.num_iterations, t.effective_minibatch_size, t.eval_every) == (5000, 10, 1000, 1)
        assert t.rollout_reset == "once" and t.critic_training == "joint" and t.gae_reset_critic and t.critic_bootstrap_terminal
        if t.update == "ppo":
            assert (t.update_epochs, t.target_kl) == (100, 100.0)
        else:
            assert (t.update_epochs, t.awr_beta, t.awr_norm_adv, t.awr_mb_renorm) == (200, 0.5, True, True)
        if t.estimator == "mc":
            assert (t.mc_q, t.mc_time_limit) == ("rerollout", "reset")
    by = {t.cell: t for t in trials}
    assert (by["mc16-expert+awr"].mc_samples, by["mc16-expert+awr"].mc_policy) == (16, "expert")
    assert (by["mc1-expert+awr"].mc_samples, by["mc4-current+awr"].mc_policy) == (1, "current")
    assert by["td20+awr"].td_n == 20 and by["gae+recap"].recap_nll_clip is None
    assert (by["selfclone+awr"].estimator, by["selfclone+awr"].quality_every, by["gae+ppo"].quality_every) == ("uniform", 0, 9)
    # the reference's quality table is its action-ranking analysis: 8 policy actions per state, 10 re-rollouts of that policy each
    q = by["gae+awr"]
    assert (q.quality_mode, q.quality_policy, q.quality_actions, q.quality_samples) == ("actions", "current", 8, 10)


def test_seed_v2_refstart_is_seed_v2_with_the_reference_recipe_start():
    """experiments/seed-v2-refstart.yaml changes one thing from seed-v2: the start, pretrained by the reference's
    recipe (episodes end on success and GAE bootstraps there), at log-std -1.5; and with it the IQL, fitted to that
    start's data by the same recipe as seed-v2's."""
    from algorithms.value_functions import load_iql
    from algorithms.checkpoint import load_policy

    v2 = {(t.cell, t.seed): t for t in expand_trials(load_spec(REPO / "experiments" / "seed-v2.yaml", base_dir=REPO))}
    ref = expand_trials(load_spec(REPO / "experiments" / "seed-v2-refstart.yaml", base_dir=REPO))
    assert {(t.cell, t.seed) for t in ref} == set(v2)
    for t in ref:
        other = v2[(t.cell, t.seed)]
        assert {**vars(t), "start_checkpoint": None, "iql_checkpoint": None} == {**vars(other), "start_checkpoint": None, "iql_checkpoint": None}
        assert t.start_checkpoint.endswith("start-refrecipe.pt") and other.start_checkpoint.endswith("start.pt")
        if t.estimator == "iql":
            assert t.iql_checkpoint.endswith("iql-refrecipe.pt") and other.iql_checkpoint.endswith("iql.pt")
        else:
            assert t.iql_checkpoint == other.iql_checkpoint
    iqls = [load_iql(REPO / "experiments" / "checkpoints" / "pickcube" / f)[1] for f in ("iql.pt", "iql-refrecipe.pt")]
    assert [c["config"]["dataset_config"]["policy"].rsplit("/", 1)[-1] for c in iqls] == ["start.pt", "start-refrecipe.pt"]
    recipe = lambda c: {k: v for k, v in c["config"].items() if k not in ("dataset", "out", "dataset_sha256", "dataset_config")}
    assert recipe(iqls[0]) == recipe(iqls[1])
    agent, ck = load_policy(REPO / "experiments" / "checkpoints" / "pickcube" / "start-refrecipe.pt")
    assert torch.allclose(agent.actor_logstd, torch.full_like(agent.actor_logstd, -1.5))
    assert ck["config"]["terminate_on_success"] and ck["config"]["bootstrap_terminal"]

"""The reference's protocol pieces: TD(N) targets, distinct rollout starts, the offline regime, rollout_reset=once,
the reference's evaluation count, and the self-cloning diagnostic -- on real ManiSkill where the simulator matters."""
from __future__ import annotations

import pytest
import torch

from algorithms.config import FinetuneConfig
from algorithms.estimators.td import n_step_targets
from algorithms.finetune import rollout_seeds, run_trial

CK = "experiments/checkpoints/pickcube"
TINY = dict(num_envs=2, num_steps=5, num_iterations=2, num_eval_episodes=2, minibatch_size=5, update_epochs=1,
            eval_stochastic=False, backend="cpu", device="cpu")


def test_n_step_targets_by_hand():
    """One env, gamma 0.5, rewards [0, 1, 0, 0], V(successor) = [10, 20, 30, 40]; step 1 terminates, step 3 is
    truncated (time limit)."""
    r = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    nv = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    term = torch.tensor([[False], [True], [False], [False]])
    trunc = torch.tensor([[False], [False], [False], [True]])
    dones = term | trunc
    g1 = n_step_targets(r, nv, term, dones, 0.5, 1)
    assert g1.flatten().tolist() == [0 + 0.5 * 10, 1.0, 0 + 0.5 * 30, 0 + 0.5 * 40]  # TD(1): r + gamma V(s'), 0 after termination
    g2 = n_step_targets(r, nv, term, dones, 0.5, 2)
    # t=0: r0 + 0.5 r1, stops at the termination (no bootstrap); t=2: r2 + 0.5 r3 + 0.25 V(final obs of the truncation)
    assert g2.flatten().tolist() == [0.5, 1.0, 0.25 * 40, 0.5 * 40]
    g9 = n_step_targets(r, nv, term, dones, 0.5, 9)  # N beyond the rollout: the episode's own discounted return
    assert g9.flatten().tolist() == [0.5, 1.0, 0.25 * 40, 0.5 * 40]


def test_rollout_starts_are_distinct_across_iterations_and_envs():
    """10 iterations x 100 envs (the V2 budget): 1,000 distinct reset seeds, and different trials' seeds apart."""
    cfg = FinetuneConfig(num_envs=100, num_iterations=10)
    seeds = [s for it in range(1, 11) for s in rollout_seeds(cfg, it)]
    assert len(set(seeds)) == 1000
    other = {s for it in range(1, 11) for s in rollout_seeds(FinetuneConfig(num_envs=100, seed=2), it)}
    assert not other & set(seeds)


def test_rollout_initial_states_are_distinct_on_the_simulator(env_fork_server):
    """The seeds really give different cube and goal placements: 3 iterations x 2 envs = 6 distinct first observations."""
    from envs import EnvConfig, make_vector_env

    cfg = FinetuneConfig(num_envs=2)
    with make_vector_env(EnvConfig(num_envs=2, reward_mode="sparse", backend="cpu"), env_fork_server) as venv:
        firsts = torch.cat([venv.reset(seeds=rollout_seeds(cfg, it)) for it in (1, 2, 3)])
    assert len({tuple(torch.round(o * 1e4).tolist()) for o in firsts}) == 6


@pytest.mark.parametrize("estimator,extra", [
    ("gae", {}),
    # no critic: the saved batch has no returns (this once failed at the second iteration on the lent machine)
    ("mc", {"mc_samples": 1, "mc_policy": "expert", "expert_checkpoint": f"{CK}/expert.pt"}),
])
def test_offline_regime_trains_on_one_fixed_batch(env_fork_server, tmp_path, estimator, extra):
    """offline: env steps counted once, the same advantages every iteration, and a resume keeps the batch."""
    cfg = FinetuneConfig(estimator=estimator, update="awr", offline=True, **dict(TINY, num_iterations=3), **extra)
    hist = run_trial(cfg, tmp_path / "t", fork_server=env_fork_server)
    steps = [h["charts/env_steps"] for h in hist[1:]]
    assert steps == [10, 10, 10]
    assert len({round(h["charts/advantage_mean"], 9) for h in hist[1:]}) == 1
    assert len({round(h["losses/policy_loss"], 9) for h in hist[1:]}) == 3  # the policy moves, the batch does not
    st = torch.load(tmp_path / "t" / "checkpoint" / "trial_state.pt", weights_only=False)
    assert st["offline_batch"]["obs"].shape == (10, 42)


def test_advantage_detrend_ablation_on_a_real_trial(env_fork_server, tmp_path):
    """advantage_detrend: the trial trains on advantages uncorrelated with its V(s_t), and logs the raw correlation."""
    cfg = FinetuneConfig(estimator="gae", update="awr", advantage_detrend=True, **dict(TINY, num_iterations=1))
    h = run_trial(cfg, tmp_path / "d", fork_server=env_fork_server)[-1]
    assert abs(h["charts/advantage_value_corr"]) < 1e-5 and abs(h["charts/advantage_mean"]) < 1e-6
    assert -1 <= h["charts/advantage_value_corr_raw"] <= 1 and abs(h["charts/advantage_value_corr_raw"]) > 1e-3


def test_rollout_reset_once_carries_episodes_across_iterations(env_fork_server, tmp_path):
    """rollout_reset=once: the second rollout continues the first one's episodes (elapsed counters go on), and
    evaluation in between does not disturb them."""
    cfg = FinetuneConfig(estimator="uniform", update="awr", rollout_reset="once", **TINY)
    hist = run_trial(cfg, tmp_path / "once", fork_server=env_fork_server)
    assert [h["iteration"] for h in hist] == [0, 1, 2] and all("eval/success_rate" in h for h in hist)
    # iteration 2 starts where iteration 1 stopped: 5 steps into the episodes (4+ if one ended and restarted)
    assert "charts/rollout_start_elapsed" not in hist[1] and hist[2]["charts/rollout_start_elapsed"] >= 2


def test_reference_eval_count_counts_only_episodes_that_end(env_fork_server, tmp_path):
    from algorithms.checkpoint import load_policy
    from algorithms.evaluate import evaluate, evaluate_fixed_steps
    from envs import EnvConfig, make_vector_env

    expert, _ = load_policy(f"{CK}/expert.pt")
    with make_vector_env(EnvConfig(num_envs=2, reward_mode="sparse", backend="cpu"), env_fork_server) as venv:
        ref = evaluate_fixed_steps(expert, venv, 2, seed=123)
        ep = evaluate(expert, venv, 2, seed=123)
    # every slot ends at least one episode within 50 steps (a success or the time limit); successes may restart
    assert ref.episodes >= 2 and 0.0 <= ref.success_rate <= 1.0
    assert ep.episodes == 2


def test_selfclone_diagnostic_reports_before_and_after(env_fork_server, tmp_path):
    from algorithms.selfclone import self_clone

    cfg = FinetuneConfig(update="awr", **dict(TINY, num_eval_episodes=4))
    res = self_clone(cfg, tmp_path / "sc", fork_server=env_fork_server)
    assert [i for i, _ in res.curve] == [0, 1, 2]
    assert "self-cloning under gae+awr" in res.line() and ("holds" in res.line() or "collapses" in res.line() or "drifts" in res.line())
    assert res.episodes == 4 and "at 4 episodes per evaluation" in res.line()


def test_selfclone_change_interval_by_hand():
    """Start 50% and end 45% on 128 episodes each: the change is -5.0 points, its standard error
    sqrt(0.5*0.5/128 + 0.45*0.55/128) = 0.06235, so the 95% half-width is 1.96 * 6.235 = 12.22 points."""
    from algorithms.selfclone import SelfCloneResult

    res = SelfCloneResult("gae+awr", [(0, 0.5), (5, 0.47), (10, 0.45)], episodes=128)
    lo, hi = res.change_interval()
    assert abs(lo - (-5.0 - 12.221)) < 0.01 and abs(hi - (-5.0 + 12.221)) < 0.01
    assert res.holds and "[-17.2, +7.2] points at 128 episodes" in res.line()
    assert SelfCloneResult("gae+awr", [(0, 0.5), (10, 0.3)]).change_interval() is None
    assert "collapses" in SelfCloneResult("gae+awr", [(0, 0.5), (10, 0.3)]).line()


def test_critic_warmup_iterations_leave_the_policy_alone(env_fork_server, tmp_path):
    """gae_warmup_iters=1: iteration 1 trains only the critic (the reference's warmup_iters); iteration 2 updates the
    policy, with the critic trained inside the update rule's loss (critic_training=joint)."""
    from algorithms.checkpoint import load_policy

    cfg = FinetuneConfig(estimator="gae", update="awr", gae_warmup_iters=1, **dict(TINY, num_iterations=1))
    hist = run_trial(cfg, tmp_path / "w", fork_server=env_fork_server)
    assert hist[1]["charts/critic_warmup"] == 1.0 and "losses/policy_loss" not in hist[1]
    start, _ = load_policy(f"{CK}/start.pt")
    after, _ = load_policy(tmp_path / "w" / "checkpoint" / "policy.pt")
    assert all(torch.equal(a, b) for a, b in zip(start.actor_mean.parameters(), after.actor_mean.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(start.critic.parameters(), after.critic.parameters()))
    hist = run_trial(FinetuneConfig(estimator="td", update="ppo", gae_warmup_iters=1, td_n=3, **TINY), tmp_path / "w2", fork_server=env_fork_server)
    assert "charts/critic_warmup" not in hist[2] and "losses/value_loss" in hist[2] and "losses/policy_loss" in hist[2]


def test_selfclone_refuses_bad_input_in_one_line(run_cli, tmp_path):
    """An unknown cell, a missing spec, a bad count, or an earlier diagnostic in --out-dir (without --overwrite):
    exit 2, one line, and the earlier diagnostic untouched."""
    old = tmp_path / "old"
    (old / "checkpoint").mkdir(parents=True)
    (old / "config.json").write_text("{}")
    for args, words in (
        (["--spec", "experiments/seed-v2.yaml", "--cell", "nosuch"], "has no cell 'nosuch'"),
        (["--spec", str(tmp_path / "nope.yaml")], "does not exist"),
        (["--num-envs", "0"], "num_envs must be >= 1"),
        (["--out-dir", str(old)], "already holds a trial"),
    ):
        r = run_cli("selfclone", *args, timeout=60)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], (args, r.stderr)
    assert (old / "config.json").read_text() == "{}" and sorted(p.name for p in old.iterdir()) == ["checkpoint", "config.json"]
    r = run_cli("finetune", "--spec", "experiments/seed-v2.yaml", "--cell", "nosuch", timeout=60)
    assert r.returncode == 2 and "has no cell 'nosuch'" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_finetune_spec_cell_takes_the_cells_protocol_with_flags_on_top():
    """`finetune --spec S --cell C` runs the grid cell's own config (named-cell fields, per-method and shared
    settings); flags given on the command line override it, nothing else does."""
    import argparse

    from orchestrator.cli import _spec_cell_config

    ns = argparse.Namespace(spec="experiments/seed-v2.yaml", seed=2, num_iterations=1)
    cfg = _spec_cell_config(ns, FinetuneConfig(seed=2, num_iterations=1), "td20+awr")
    assert (cfg.estimator, cfg.update, cfg.td_n, cfg.cell) == ("td", "awr", 20, "td20+awr")
    assert (cfg.update_epochs, cfg.awr_beta, cfg.num_minibatches, cfg.gamma) == (200, 0.5, 5, 0.8)  # per_method, shared
    assert (cfg.seed, cfg.num_iterations, cfg.num_envs) == (2, 1, 100)  # flags on top of the budget

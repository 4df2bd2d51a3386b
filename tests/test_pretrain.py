"""The pretrain -> select -> eval path through the real CLI (``python -m orchestrator``), on the CPU simulation."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from algorithms.checkpoint import load_policy

TINY = ["--num-envs", 2, "--num-steps", 8, "--num-minibatches", 2, "--update-epochs", 1,
        "--eval-every", 1, "--eval-episodes", 2, "--backend", "cpu", "--no-progress"]


def read_ladder(folder):
    with open(folder / "ladder.csv", newline="") as f:
        return list(csv.DictReader(f))


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def tiny_ladder(tmp_path_factory, run_cli):
    """Two PPO iterations of 2 envs x 8 steps, evaluated (and saved) after each."""
    out = tmp_path_factory.mktemp("pretrain") / "ladder"
    r = run_cli("pretrain", *TINY, "--total-timesteps", 32, "--out-dir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ladder: {out / 'ladder.csv'}" in r.stdout
    return out


def test_pretrain_writes_a_ladder_of_loadable_checkpoints(tiny_ladder):
    rows = read_ladder(tiny_ladder)
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert [int(r["env_steps"]) for r in rows] == [16, 32]
    for r in rows:
        assert 0.0 <= float(r["success_det"]) <= 1.0 and int(r["eval_episodes"]) == 2
        agent, ck = load_policy(tiny_ladder / r["checkpoint"], env_id="PickCube-v1", control_mode="pd_joint_delta_pos", obs_dim=42, act_dim=8)
        assert ck["metrics"]["env_steps"] == int(r["env_steps"])
        assert ck["metrics"]["success_det"] == pytest.approx(float(r["success_det"]))
        assert ck["config"]["reward_mode"] == "normalized_dense"
    a1, _ = load_policy(tiny_ladder / rows[0]["checkpoint"])
    a2, _ = load_policy(tiny_ladder / rows[1]["checkpoint"])
    assert not torch.equal(a1.actor_mean[0].weight, a2.actor_mean[0].weight)  # the update changed the policy
    prov = json.loads((tiny_ladder / "provenance.json").read_text())
    assert prov["env_steps"] == 32 and prov["sessions"][0]["iterations"] == [0, 2]
    assert (tiny_ladder / "state.pt").is_file()


def test_pretrain_resumes_where_it_stopped(tiny_ladder, tmp_path, run_cli):
    out = tmp_path / "ladder"
    shutil.copytree(tiny_ladder, out)
    r = run_cli("pretrain", *TINY, "--total-timesteps", 48, "--out-dir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_ladder(out)
    assert [int(x["iteration"]) for x in rows] == [1, 2, 3]  # iterations 1-2 were not rerun
    assert int(rows[-1]["env_steps"]) == 48
    prov = json.loads((out / "provenance.json").read_text())
    assert [s["iterations"] for s in prov["sessions"]] == [[0, 2], [2, 3]]


def test_pretrain_from_a_checkpoint_with_a_fixed_logstd(policy_checkpoint, tmp_path, run_cli):
    """--init-logstd resets the loaded policy's noise and --fix-logstd keeps it through PPO while the mean learns."""
    out = tmp_path / "fixed"
    r = run_cli("pretrain", *TINY, "--total-timesteps", 16, "--init-from", policy_checkpoint,
                "--init-logstd", -1.3, "--fix-logstd", "true", "--eval-logstd", -1.1, "--out-dir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    init, _ = load_policy(policy_checkpoint)
    after, ck = load_policy(out / read_ladder(out)[0]["checkpoint"])
    assert torch.equal(after.actor_logstd, torch.full_like(after.actor_logstd, -1.3))
    assert not torch.equal(init.actor_mean[0].weight, after.actor_mean[0].weight)
    assert ck["config"]["fix_logstd"] is True and ck["config"]["init_logstd"] == -1.3
    assert ck["config"]["eval_logstd"] == -1.1  # the stochastic evaluation's noise; the saved policy keeps -1.3


def test_select_on_a_tiny_ladder_says_nothing_qualifies(tiny_ladder, tmp_path, run_cli):
    out = tmp_path / "selected"
    r = run_cli("select", "--ladder-dir", tiny_ladder, "--out-dir", out, "--num-envs", 1, "--confirm-episodes", 1, "--backend", "cpu")
    assert r.returncode != 0
    assert "no ladder checkpoint qualifies as start or expert" in last_line(r.stderr)
    assert not out.exists() or not any(out.iterdir())


def test_select_without_a_ladder(tmp_path, run_cli):
    r = run_cli("select", "--ladder-dir", tmp_path, "--out-dir", tmp_path / "sel")
    assert r.returncode == 2
    assert last_line(r.stderr) == f"error: no ladder.csv in {tmp_path}: run `pretrain` first"


def test_eval_prints_the_success_rate_of_the_expert(expert_checkpoint, run_cli):
    r = run_cli("eval", "--checkpoint", expert_checkpoint, "--episodes", 4, "--num-envs", 2, "--backend", "cpu", "--no-progress", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("deterministic: success ") and "% over 4 episodes" in lines[0]
    res = json.loads(lines[-1])
    assert res["backend"] == "cpu" and res["env_id"] == "PickCube-v1"
    assert res["deterministic"]["episodes"] == 4
    assert res["deterministic"]["success_rate"] >= 0.5  # the expert succeeds (>= 95% on 256 episodes)
    assert f"{res['deterministic']['success_rate'] * 100:.1f}%" in lines[0]


def test_eval_with_the_reference_count(expert_checkpoint, run_cli):
    """--protocol reference: 4 auto-resetting envs run one episode's steps; every episode that ends counts, so an
    expert that succeeds early may end more episodes than envs."""
    r = run_cli("eval", "--checkpoint", expert_checkpoint, "--episodes", 4, "--num-envs", 2, "--backend", "cpu",
                "--protocol", "reference", "--no-progress", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert "episodes ended in 4 envs x one episode's steps (reference count)" in lines[0]
    res = json.loads(lines[-1])
    assert res["protocol"] == "reference" and res["deterministic"]["episodes"] >= 4
    assert res["deterministic"]["success_rate"] >= 0.5


def test_eval_of_a_bare_state_dict_needs_an_env_id(tmp_path, run_cli, policy_checkpoint):
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(policy_checkpoint, weights_only=True)["model"], bare)
    r = run_cli("eval", "--checkpoint", bare, "--episodes", 1)
    assert r.returncode == 2
    assert last_line(r.stderr) == f"error: {bare} records no env id (a bare state_dict): pass --env-id"


def test_eval_of_a_corrupt_checkpoint_is_one_error_line(tmp_path, run_cli):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run_cli("eval", "--checkpoint", bad)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert last_line(r.stderr).startswith(f"error: checkpoint {bad} is truncated or not a torch checkpoint")


def test_eval_with_backend_gpu_names_what_is_missing(run_cli, policy_checkpoint):
    from envs.backend import physx_gpu_library

    if torch.cuda.is_available() and physx_gpu_library().exists():
        pytest.skip("GPU simulation is available on this machine")
    r = run_cli("eval", "--checkpoint", policy_checkpoint, "--episodes", 1, "--backend", "gpu")
    assert r.returncode != 0
    msg = last_line(r.stderr)
    assert "backend 'gpu' needs" in msg and ("CUDA" in msg or "libPhysXGpu_64.so" in msg)


def test_pretrain_gae_bootstraps_a_success_as_the_reference_does():
    """One step that succeeds and terminates: with bootstrap_terminal (the reference's ppo.py) its advantage is
    r + gamma V(final obs) - V(s); without, r - V(s), so under terminate_on_success the success of a dense-reward
    task pays less than staying just short of it (the 0% ladder of session 22)."""
    from algorithms.estimators.gae import gae
    from algorithms.pipeline_config import PretrainConfig
    from algorithms.pretrain import terminal_mask

    rewards, values = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    next_values, terminated = torch.tensor([[4.0]]), torch.tensor([[True]])
    for boot, expected in ((True, 1.0 + 0.8 * 4.0 - 2.0), (False, 1.0 - 2.0)):
        cfg = PretrainConfig(terminate_on_success=True, bootstrap_terminal=boot)
        adv, _ = gae(rewards, values, next_values, terminal_mask(terminated, cfg), terminated, 0.8, 0.9)
        assert adv.item() == pytest.approx(expected)


def test_pretrain_refuses_to_resume_a_success_terminating_ladder_with_the_other_bootstrap(tmp_path, run_cli):
    out = tmp_path / "term"
    r = run_cli("pretrain", *TINY, "--total-timesteps", 16, "--terminate-on-success", "true", "--out-dir", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["bootstrap_terminal"] is True
    before = (out / "ladder.csv").read_text()
    r = run_cli("pretrain", *TINY, "--total-timesteps", 32, "--terminate-on-success", "true",
                "--bootstrap-terminal", "false", "--out-dir", out)
    assert r.returncode != 0 and "bootstrap_terminal" in last_line(r.stderr)
    assert (out / "ladder.csv").read_text() == before  # the run is left as it was

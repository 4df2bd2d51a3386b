"""Offline data and value pretraining on the real ManiSkill task (CPU sim, tiny): collect -> Dataset -> pretrain-iql
-> value checkpoint -> estimator; pretrain-critic -> GAE critic; and every file check says precisely what is wrong."""
from __future__ import annotations

import pytest
import torch

from algorithms.agent import Agent
from algorithms.checkpoint import CheckpointError, load_checkpoint, save_policy

ENV_ID, CONTROL = "PickCube-v1", "pd_joint_delta_pos"


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks on a loaded 2-core machine: extra threads only spin
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pol") / "policy.pt"
    save_policy(path, Agent(42, 8), env_id=ENV_ID, control_mode=CONTROL)
    return path


@pytest.fixture(scope="module")
def dataset_path(policy_path, tmp_path_factory):
    from algorithms.data import CollectConfig, collect_dataset

    out = tmp_path_factory.mktemp("data") / "data.pt"
    collect_dataset(CollectConfig(policy=str(policy_path), out=str(out), num_transitions=100, num_envs=2, seed=3,
                                  save_states=True, backend="cpu", max_episode_steps=20))
    return out


def test_collect_writes_a_consistent_dataset(dataset_path, policy_path):
    from algorithms.data import TransitionDataset

    ds = TransitionDataset(dataset_path, obs_dim=42, act_dim=8, env_id=ENV_ID)
    t = ds.tensors
    assert len(ds) == 100 and ds.has_states and ds.obs_dim == 42 and ds.act_dim == 8
    assert t["obs"].shape == (100, 42) and t["next_obs"].shape == (100, 42) and t["actions"].shape == (100, 8)
    assert t["states.sim"].shape[0] == 100 and t["states.elapsed"].shape == (100,)
    assert set(t["rewards"].unique().tolist()) <= {0.0, 1.0}  # sparse reward
    # time-major rows (t * 2 + n): 20-step episodes from a reset, so every 20th step of each env is truncated
    T = 50
    trunc = t["truncated"].reshape(T, 2)
    assert trunc[19].all() and trunc[39].all() and int(trunc.sum()) == 4
    el = t["states.elapsed"].reshape(T, 2)
    assert el[:20].tolist() == [[k, k] for k in range(20)] and el[20].tolist() == [0, 0]
    # the successor of a step that did not end the episode is the next step's observation
    obs, nxt = t["obs"].reshape(T, 2, 42), t["next_obs"].reshape(T, 2, 42)
    cont = ~(t["terminated"] | t["truncated"]).reshape(T, 2)[:-1]
    assert torch.allclose(nxt[:-1][cont], obs[1:][cont])
    assert ds.config["policy_sha256"] == load_checkpoint(policy_path)["sha256"] and ds.config["reward_mode"] == "sparse"
    assert ds.metrics["num_transitions"] == 100
    item = ds[7]
    assert torch.equal(item["obs"], t["obs"][7]) and item["actions"].shape == (8,)


def test_pretrain_iql_and_estimator_on_maniskill_data(dataset_path, tmp_path):
    from algorithms.config import FinetuneConfig
    from algorithms.data import TransitionDataset
    from algorithms.estimators import TrialContext, make_estimator
    from algorithms.pretrain_values import IQLPretrainConfig, pretrain_iql
    from algorithms.rollout import Rollout
    from algorithms.value_functions import load_iql

    out = pretrain_iql(IQLPretrainConfig(dataset=str(dataset_path), out=str(tmp_path / "iql.pt"), expectile=0.7, steps=20, batch_size=32, hidden=64))
    values, ck = load_iql(out, obs_dim=42, act_dim=8, env_id=ENV_ID)
    ds = TransitionDataset(dataset_path)
    assert ck["config"]["expectile"] == 0.7 and ck["config"]["gamma"] == 0.8
    assert ck["config"]["dataset_sha256"] == ds.sha256 and ck["config"]["value_type"] == "iql"
    assert {"q_loss", "v_loss", "advantage_mean"} <= set(ck["metrics"])
    assert all(k.startswith(("q.", "v.")) for k in ck["model"])

    # the iql estimator on the dataset laid out as a [T, N] rollout
    t = ds.tensors
    T, N = 50, 2
    ro = Rollout(**{k: t[k].reshape(T, N, *t[k].shape[1:]) for k in ("obs", "actions", "logprobs", "rewards", "terminated", "truncated", "next_obs")},
                 values=torch.zeros(T, N), success=t["terminated"].reshape(T, N))
    cfg = FinetuneConfig(estimator="iql", iql_checkpoint=str(out), iql_expectile=0.7)
    ctx = TrialContext(cfg=cfg, device=torch.device("cpu"), make_env=None, obs_dim=42, act_dim=8)
    est = make_estimator("iql", ctx).estimate(ro, None)
    with torch.no_grad():
        direct = values.advantage(t["obs"], t["actions"]).reshape(T, N)
    assert torch.allclose(est.advantages, direct, atol=1e-6) and est.q.shape == (T, N) and est.v.shape == (T, N)
    # sarsa refuses it (needs expectile 0.5), precisely
    with pytest.raises(CheckpointError, match="sarsa needs Q/V trained with expectile 0.5, but .* expectile 0.7"):
        make_estimator("sarsa", TrialContext(cfg=FinetuneConfig(estimator="sarsa", iql_checkpoint=str(out)), device=torch.device("cpu"),
                                             make_env=None, obs_dim=42, act_dim=8))


def test_cli_pretrain_iql_sarsa_and_bad_input(dataset_path, policy_path, tmp_path, capsys):
    from orchestrator.cli import main

    out = tmp_path / "sarsa.pt"
    main(["pretrain-iql", "--dataset", str(dataset_path), "--out", str(out), "--expectile", "0.5", "--steps", "5",
          "--batch-size", "16", "--hidden", "32", "--no-progress"])
    assert "SARSA" in capsys.readouterr().out
    assert load_checkpoint(out, kind="value")["config"]["expectile"] == 0.5
    # a trial refuses the mismatch before any simulator starts
    from algorithms.config import FinetuneConfig
    from algorithms.finetune import validate_trial_inputs

    validate_trial_inputs(FinetuneConfig(estimator="sarsa", iql_checkpoint=str(out), start_checkpoint=str(policy_path)))
    with pytest.raises(CheckpointError, match="estimator iql needs Q/V trained with expectile 0.7"):
        validate_trial_inputs(FinetuneConfig(estimator="iql", iql_checkpoint=str(out), start_checkpoint=str(policy_path)))
    with pytest.raises(ValueError, match="needs --iql-checkpoint"):
        validate_trial_inputs(FinetuneConfig(estimator="iql", start_checkpoint=str(policy_path)))
    with pytest.raises(SystemExit) as e:
        main(["pretrain-iql", "--dataset", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt"), "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "missing.pt does not exist" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["pretrain-iql", "--dataset", str(dataset_path), "--expectile", "1.0", "--no-progress"])
    assert "expectile must be in (0, 1)" in capsys.readouterr().err


def test_corrupted_and_mismatched_files_are_refused(dataset_path, tmp_path):
    from algorithms.data import TransitionDataset
    from algorithms.pretrain_values import IQLPretrainConfig, pretrain_iql
    from algorithms.value_functions import load_critic_into, load_iql

    out = pretrain_iql(IQLPretrainConfig(dataset=str(dataset_path), out=str(tmp_path / "iql.pt"), steps=2, batch_size=16, hidden=32))
    # a tensor changed after saving: the hash check names it
    obj = torch.load(out, weights_only=True)
    obj["model"]["v.6.bias"] += 1.0
    bad = tmp_path / "tampered.pt"
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match="fails its hash check"):
        load_iql(bad)
    # a cut-off file
    cut = tmp_path / "cut.pt"
    cut.write_bytes(out.read_bytes()[: 2000])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_iql(cut)
    # wrong kinds, both ways
    with pytest.raises(CheckpointError, match="is a value checkpoint, expected a dataset checkpoint"):
        TransitionDataset(out)
    with pytest.raises(CheckpointError, match="is a dataset checkpoint, expected a value checkpoint"):
        load_iql(dataset_path)
    # a tampered dataset is refused too
    d = torch.load(dataset_path, weights_only=True)
    d["model"]["rewards"][0] = 5.0
    torch.save(d, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="fails its hash check"):
        TransitionDataset(tmp_path / "d.pt")
    # wrong dims / env, and an IQL file where a V-only critic is needed
    with pytest.raises(CheckpointError, match="obs_dim=42, but the env has obs_dim=41"):
        load_iql(out, obs_dim=41)
    with pytest.raises(CheckpointError, match="made for env_id='PickCube-v1', not 'StackCube-v1'"):
        load_iql(out, env_id="StackCube-v1")
    with pytest.raises(CheckpointError, match="holds IQL Q/V networks .*not a V-only critic"):
        load_critic_into(Agent(42, 8), out, obs_dim=42)


def test_pretrain_critic_loads_into_the_gae_critic(policy_path, tmp_path):
    from algorithms.pretrain_values import CriticPretrainConfig, pretrain_critic
    from algorithms.value_functions import load_critic_into, load_iql

    out = pretrain_critic(CriticPretrainConfig(policy=str(policy_path), out=str(tmp_path / "critic.pt"), num_envs=1, num_steps=25,
                                               max_episode_steps=10, steps=10, batch_size=16, backend="cpu"))
    ck = load_checkpoint(out, kind="value")
    assert ck["config"]["gamma"] == 0.8 and ck["config"]["reward_mode"] == "sparse" and ck["config"]["value_type"] == "critic"
    assert ck["metrics"]["num_samples"] == 20  # two complete 10-step episodes; the 5 steps of the cut one have no return
    agent = Agent(42, 8)
    load_critic_into(agent, out, obs_dim=42, gamma=0.8)
    assert all(torch.equal(agent.critic.state_dict()[k], v) for k, v in ((k[len("critic."):], v) for k, v in ck["model"].items()))
    with pytest.raises(CheckpointError, match="obs_dim=42, but the env has obs_dim=40"):
        load_critic_into(Agent(40, 8), out, obs_dim=40)
    with pytest.raises(CheckpointError, match="critic for gamma=0.8, the trial uses gamma=0.9"):
        load_critic_into(agent, out, obs_dim=42, gamma=0.9)
    with pytest.raises(CheckpointError, match="V-only critic .*need Q and V networks"):
        load_iql(out)

    # the GAE estimator starts from it
    from algorithms.config import FinetuneConfig
    from algorithms.estimators import TrialContext, make_estimator
    from algorithms.rollout import Rollout

    gae = make_estimator("gae", TrialContext(cfg=FinetuneConfig(gae_critic_checkpoint=str(out)), device=torch.device("cpu"), make_env=None, obs_dim=42, act_dim=8))
    fresh = Agent(42, 8)
    z = torch.zeros(2, 1)
    ro = Rollout(obs=torch.randn(2, 1, 42), actions=torch.zeros(2, 1, 8), logprobs=z, values=z, rewards=z,
                 terminated=z.bool(), truncated=z.bool(), success=z.bool(), next_obs=torch.randn(2, 1, 42))
    gae.prepare(fresh)  # the trial loop sets the critic up before the update rule is built
    e = gae.estimate(ro, fresh)
    with torch.no_grad():
        assert torch.allclose(e.v, agent.get_value(ro.obs.reshape(2, 42)).reshape(2, 1))

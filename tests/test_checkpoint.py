"""Checkpoint format: round trip, ManiSkill baseline state_dicts, and every way a file can be wrong."""
from __future__ import annotations

import random

import pytest
import torch

from algorithms.agent import Agent
from algorithms.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_policy,
    save_checkpoint,
    save_policy,
    tensor_hash,
)

ENV, MODE = "PickCube-v1", "pd_joint_delta_pos"

# ManiSkill's PPO baseline (examples/baselines/ppo/ppo.py) Agent: critic and actor_mean are
# nn.Sequential(Linear, Tanh, Linear, Tanh, Linear, Tanh, Linear), plus the actor_logstd parameter.
MANISKILL_BASELINE_KEYS = {f"{net}.{i}.{p}" for net in ("critic", "actor_mean") for i in (0, 2, 4, 6) for p in ("weight", "bias")} | {"actor_logstd"}


def make_agent(seed=0, obs_dim=42, act_dim=8):
    torch.manual_seed(seed)
    return Agent(obs_dim, act_dim)


@pytest.fixture
def saved(tmp_path):
    agent = make_agent()
    path = tmp_path / "policy.pt"
    digest = save_policy(path, agent, env_id=ENV, control_mode=MODE, config={"lr": 3e-4}, metrics={"success_det": 0.5})
    return path, agent, digest


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_agent_uses_maniskill_baseline_parameter_names():
    agent = make_agent()
    assert set(agent.state_dict()) == MANISKILL_BASELINE_KEYS
    assert agent.actor_mean[0].in_features == 42 and agent.actor_mean[6].out_features == 8
    assert agent.actor_mean[0].out_features == 256 and agent.critic[6].out_features == 1
    assert torch.all(agent.actor_logstd == -0.5)


def test_round_trip_keeps_weights_and_metadata(saved, tmp_path):
    path, agent, digest = saved
    loaded, ck = load_policy(path, env_id=ENV, control_mode=MODE, obs_dim=42, act_dim=8)
    assert same_weights(loaded, agent)
    assert ck["format"] == FORMAT and ck["kind"] == "policy"
    assert (ck["obs_dim"], ck["act_dim"], ck["env_id"], ck["control_mode"]) == (42, 8, ENV, MODE)
    assert ck["config"] == {"lr": 3e-4} and ck["metrics"] == {"success_det": 0.5}
    assert ck["sha256"] == digest == tensor_hash(agent.state_dict())
    obs = torch.randn(4, 42)
    assert torch.equal(loaded.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    # the write is atomic: no temp file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]


def test_hash_depends_on_contents_not_on_insertion_order():
    sd = make_agent().state_dict()
    reordered = dict(reversed(list(sd.items())))
    assert tensor_hash(reordered) == tensor_hash(sd)
    changed = dict(sd)
    changed["actor_logstd"] = sd["actor_logstd"] + 1e-3
    assert tensor_hash(changed) != tensor_hash(sd)


def test_bare_maniskill_state_dict_loads(tmp_path):
    agent = make_agent(seed=1)
    path = tmp_path / "ckpt_101.pt"
    torch.save(agent.state_dict(), path)  # what ManiSkill's PPO baseline writes
    loaded, ck = load_policy(path, obs_dim=42, act_dim=8, env_id=ENV, control_mode=MODE)
    assert same_weights(loaded, agent)
    assert ck["format"] == "bare-state-dict" and ck["env_id"] is None and ck["sha256"] is None
    assert (ck["obs_dim"], ck["act_dim"]) == (42, 8)
    with pytest.raises(CheckpointError, match="obs_dim=42, but the env has obs_dim=40"):
        load_policy(path, obs_dim=40)
    with pytest.raises(CheckpointError, match="bare policy state_dict, expected a value checkpoint"):
        load_checkpoint(path, kind="value")


@pytest.mark.parametrize("expect, message", [
    ({"obs_dim": 43}, "has obs_dim=42, but the env has obs_dim=43"),
    ({"act_dim": 7}, "has act_dim=8, but the env has act_dim=7"),
    ({"env_id": "PushCube-v1"}, "was made for env_id='PickCube-v1', not 'PushCube-v1'"),
    ({"control_mode": "pd_ee_delta_pose"}, "was made for control_mode='pd_joint_delta_pos', not 'pd_ee_delta_pose'"),
])
def test_mismatch_is_named(saved, expect, message):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match=message):
        load_policy(path, **expect)


def test_modified_weights_fail_the_hash_check(saved):
    path, _, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["model"]["actor_mean.6.bias"] += 0.1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="fails its hash check"):
        load_policy(path)


def test_truncated_file(saved):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_policy(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(0).randbytes(4096))  # fixed bytes: urandom sometimes began with a pickle opcode, and torch warned
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_policy(path)


def test_wrong_kind(tmp_path):
    path = tmp_path / "critic.pt"
    critic = make_agent().critic
    save_checkpoint(path, critic.state_dict(), kind="value", obs_dim=42, act_dim=8, env_id=ENV, control_mode=MODE)
    assert load_checkpoint(path, kind="value")["kind"] == "value"
    with pytest.raises(CheckpointError, match="is a value checkpoint, expected a policy checkpoint"):
        load_policy(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path)  # a directory is not a checkpoint either


def test_not_a_checkpoint_dict(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="neither an o2o checkpoint nor a policy state_dict"):
        load_policy(path)


def test_missing_fields_and_tensors(tmp_path):
    path = tmp_path / "partial.pt"
    sd = make_agent().state_dict()
    torch.save({"model": sd, "kind": "policy"}, path)
    with pytest.raises(CheckpointError, match="lacks the fields obs_dim, act_dim, env_id, control_mode, sha256"):
        load_policy(path)
    del sd["critic.6.weight"]
    save_checkpoint(path, sd, obs_dim=42, act_dim=8, env_id=ENV, control_mode=MODE)
    with pytest.raises(CheckpointError, match="lacks policy tensors critic.6.weight"):
        load_policy(path)


def test_declared_dims_that_do_not_fit_the_weights(tmp_path):
    path = tmp_path / "liar.pt"
    sd = make_agent(obs_dim=40).state_dict()
    save_checkpoint(path, sd, obs_dim=42, act_dim=8, env_id=ENV, control_mode=MODE)
    with pytest.raises(CheckpointError, match="does not fit the agent"):
        load_policy(path)


def test_shipped_policies_load_with_their_provenance(repo_root):
    import json

    folder = repo_root / "experiments" / "checkpoints" / "pickcube"
    if not (folder / "provenance.json").is_file():
        pytest.skip("shipped policies are not there yet")
    prov = json.loads((folder / "provenance.json").read_text())
    for role in ("start", "expert"):
        entry = prov["policies"][role]
        _, ck = load_policy(folder / entry["file"], env_id=ENV, control_mode=MODE, obs_dim=42, act_dim=8)
        assert ck["sha256"] == entry["sha256"]
        assert ck["metrics"]["success_det"] == entry["success_det"]
    assert 0.40 <= prov["policies"]["start"]["success_det"] <= 0.65
    assert prov["policies"]["expert"]["success_det"] >= 0.95

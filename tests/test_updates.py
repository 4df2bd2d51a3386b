"""Policy update rules on a fixed batch: they move log pi the way the advantages say, and RECAP's guard holds."""
from __future__ import annotations

import pytest
import torch

from algorithms.agent import Agent
from algorithms.config import FinetuneConfig
from algorithms.updates import UpdateBatch, make_update

OBS_DIM, ACT_DIM, B = 6, 2, 64


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: extra intra-op threads only spin on a loaded 2-core machine
    yield
    torch.set_num_threads(n)


def fixed_batch(signs: torch.Tensor, seed: int = 0):
    """An agent and a batch of B/2 distinct states, each twice: with a sampled action a = mu + sigma*z (rows i)
    and its mirror mu - sigma*z (rows B/2 + i).  advantage = signs * (1 + |noise|)."""
    torch.manual_seed(seed)
    agent = Agent(OBS_DIM, ACT_DIM)
    obs = torch.randn(B // 2, OBS_DIM).repeat(2, 1)
    with torch.no_grad():
        d = agent.dist(obs[: B // 2])
        z = torch.randn(d.mean.shape, generator=torch.Generator().manual_seed(seed))
        actions = torch.cat([d.mean + d.stddev * z, d.mean - d.stddev * z])
        logp = agent.log_prob(obs, actions)
    adv = signs * (1 + torch.rand(B, generator=torch.Generator().manual_seed(seed + 1)))
    return agent, UpdateBatch(obs, actions, logp, adv)


def alternating_signs() -> torch.Tensor:
    """+ for the sampled actions, - for their mirrors: each state has one good and one bad action."""
    s = torch.ones(B)
    s[B // 2 :] = -1
    return s


def run(rule: str, agent, batch, **cfg_kw):
    cfg = FinetuneConfig(update=rule, minibatch_size=32, **cfg_kw)
    upd = make_update(rule, cfg, agent, torch.Generator().manual_seed(0))
    return upd.update(agent, batch)


@torch.no_grad()
def logp(agent, batch):
    return agent.log_prob(batch.obs, batch.actions)


@pytest.mark.parametrize("rule,kw", [("ppo", {"update_epochs": 4}), ("awr", {"update_epochs": 10}), ("recap", {"update_epochs": 10})])
def test_rules_raise_log_prob_of_positive_actions(rule, kw):
    signs = alternating_signs()
    agent, batch = fixed_batch(signs)
    before = logp(agent, batch)
    metrics = run(rule, agent, batch, **kw)
    delta = logp(agent, batch) - before
    pos, neg = signs > 0, signs < 0
    # the network is shared across states, so single actions can move against their sign; the batch means cannot
    assert float(delta[pos].mean()) > 0.03, (rule, float(delta[pos].mean()))
    assert float(delta[neg].mean()) < -0.03, (rule, float(delta[neg].mean()))
    if rule == "recap":  # the push-away term acts on the negatives directly: they fall more than under AWR
        agent2, batch2 = fixed_batch(signs)
        run("awr", agent2, batch2, **kw)
        assert float(delta[neg].mean()) < float((logp(agent2, batch2) - before)[neg].mean())
    assert metrics["charts/pos_ratio"] == pytest.approx(0.5)
    assert all(torch.isfinite(p).all() for p in agent.parameters())


def test_recap_guard_bounds_push_away():
    """All-negative advantages for many epochs: with the guard the push-away stops soon after -log pi passes the
    clip (finite, and the guard reports acting); without it (clip out of reach) log pi runs away."""
    agent, batch = fixed_batch(-torch.ones(B))
    m = run("recap", agent, batch, update_epochs=100, recap_alpha=1.0, recap_nll_clip=3.0)
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    assert m["charts/recap_guard_frac"] > 0 and m["charts/recap_guard_acted"] == 1.0
    guarded = logp(agent, batch)
    assert torch.isfinite(guarded).all() and float(guarded.max()) < -3.0 + 0.5  # every action pushed to ~the clip

    agent, batch = fixed_batch(-torch.ones(B))
    m = run("recap", agent, batch, update_epochs=100, recap_alpha=1.0, recap_nll_clip=1e6)
    assert m["charts/recap_guard_frac"] == 0.0 and m["charts/recap_guard_acted"] == 0.0
    unguarded = logp(agent, batch)
    assert float(unguarded.max()) < 10 * float(guarded.min())  # an order of magnitude further away


def test_recap_min_logstd_floor():
    """Positive advantages only, many epochs at a high learning rate: behaviour cloning of single actions shrinks
    the std, and the floor recap_min_logstd holds it."""
    agent, both = fixed_batch(torch.ones(B))
    half = slice(0, B // 2)  # one action per state (with its mirror too, the best std would be |z|)
    batch = UpdateBatch(both.obs[half], both.actions[half], both.logprobs[half], both.advantages[half])
    m = run("recap", agent, batch, update_epochs=200, recap_min_logstd=-1.0, learning_rate=1e-2)
    assert agent.actor_logstd.detach().min().item() == pytest.approx(-1.0)  # reached and held
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    for k in ("losses/policy_loss", "losses/pos_loss", "losses/neg_loss"):
        assert torch.isfinite(torch.tensor(m[k]))

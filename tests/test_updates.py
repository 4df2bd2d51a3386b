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
    # raw advantages (no batch normalisation, which would turn half of them positive)
    m = run("recap", agent, batch, update_epochs=100, recap_alpha=1.0, recap_nll_clip=3.0, awr_norm_adv=False)
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    assert m["charts/recap_guard_frac"] > 0 and m["charts/recap_guard_acted"] == 1.0
    guarded = logp(agent, batch)
    assert torch.isfinite(guarded).all() and float(guarded.max()) < -3.0 + 0.5  # every action pushed to ~the clip

    agent, batch = fixed_batch(-torch.ones(B))
    m = run("recap", agent, batch, update_epochs=100, recap_alpha=1.0, recap_nll_clip=1e6, awr_norm_adv=False)
    assert m["charts/recap_guard_frac"] == 0.0 and m["charts/recap_guard_acted"] == 0.0
    unguarded = logp(agent, batch)
    assert float(unguarded.max()) < 10 * float(guarded.min())  # an order of magnitude further away


def test_recap_min_logstd_floor():
    """Positive advantages only, many epochs at a high learning rate: behaviour cloning of single actions shrinks
    the std, and the floor recap_min_logstd holds it."""
    agent, both = fixed_batch(torch.ones(B))
    half = slice(0, B // 2)  # one action per state (with its mirror too, the best std would be |z|)
    batch = UpdateBatch(both.obs[half], both.actions[half], both.logprobs[half], both.advantages[half])
    m = run("recap", agent, batch, update_epochs=200, recap_min_logstd=-1.0, learning_rate=1e-2, awr_norm_adv=False)
    assert agent.actor_logstd.detach().min().item() == pytest.approx(-1.0)  # reached and held
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    for k in ("losses/policy_loss", "losses/pos_loss", "losses/neg_loss"):
        assert torch.isfinite(torch.tensor(m[k]))


# ---------------------------------------------------------------------------- the reference's formulas, by hand

def test_awr_weights_and_loss_match_hand_computation():
    """A = [1, 2, 3, 6]: A_n = (A - 3) / std(A) with std = sqrt(14/3) (unbiased); w = min(exp(A_n / 0.5), 20);
    one minibatch re-normalises w to mean 1; loss = -mean(w * logp)."""
    from algorithms.updates.awr import awr_loss, awr_weights, batch_advantages

    cfg = FinetuneConfig(update="awr", awr_beta=0.5, awr_max_weight=20.0)
    adv = torch.tensor([1.0, 2.0, 3.0, 6.0])
    std = (14.0 / 3.0) ** 0.5
    a_n = [(-2) / std, (-1) / std, 0.0, 3 / std]
    assert batch_advantages(cfg, adv).tolist() == pytest.approx(a_n, abs=1e-6)
    w = awr_weights(batch_advantages(cfg, adv), 0.5, 20.0)
    import math
    hand = [min(math.exp(x / 0.5), 20.0) for x in a_n]  # exp(2.78) = 16.1, under the clamp
    assert w.tolist() == pytest.approx(hand, rel=1e-5)
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    s = sum(hand)
    w1 = [x / s * 4 for x in hand]
    expected = -sum(wi * li for wi, li in zip(w1, logp.tolist())) / 4
    assert float(awr_loss(w, logp, renorm=True)) == pytest.approx(expected, rel=1e-5)
    assert float(awr_loss(w, logp, renorm=False)) == pytest.approx(-sum(wi * li for wi, li in zip(hand, logp.tolist())) / 4, rel=1e-5)
    # the clamp: beta 0.1 makes exp(3/std/0.1) = exp(13.9) > 20
    assert float(awr_weights(batch_advantages(cfg, adv), 0.1, 20.0).max()) == pytest.approx(20.0)


def test_advantage_detrend_by_hand():
    """A = [1, 0, -1, -1.5] on V = [0, 1, 2, 3]: least-squares slope -0.85 around the means (-0.375, 1.5), so the
    residual is [0.1, -0.05, -0.2, 0.15]: mean 0, uncorrelated with V; a constant V only centres A."""
    from algorithms.detrend import detrend_on_values
    from algorithms.quality import pearson

    v = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    a = torch.tensor([[1.0, 0.0], [-1.0, -1.5]])
    d = detrend_on_values(a, v)
    assert d.shape == a.shape and torch.allclose(d, torch.tensor([[0.1, -0.05], [-0.2, 0.15]]), atol=1e-6)
    assert abs(pearson(d, v)) < 1e-6 and abs(float(d.mean())) < 1e-7
    assert torch.allclose(detrend_on_values(a, torch.ones(2, 2)), a - a.mean())
    with pytest.raises(ValueError, match="advantage_detrend needs an estimator with V"):
        FinetuneConfig(estimator="uniform", advantage_detrend=True)


def test_awr_weight_effective_fraction_by_hand():
    """Kish's effective sample size over B: (sum w)^2 / (B sum w^2)."""
    from algorithms.updates.awr import effective_fraction

    assert effective_fraction(torch.ones(4)) == pytest.approx(1.0)
    assert effective_fraction(torch.tensor([4.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert effective_fraction(torch.tensor([1.0, 2.0, 3.0, 6.0])) == pytest.approx(144.0 / 200.0)


def test_recap_split_weights_and_losses_match_hand_computation():
    """A_n = [-1.5, -0.5, 0.5, 1.5] (already normalised: mean 0; std = sqrt(5/3) is then divided out again).
    Positives {0.5, 1.5}/std, negatives {-1.5, -0.5}/std; each set's weights exp(|A_n|/beta) re-normalised to mean 1
    within the set; pos_loss = -mean_pos(w logp), neg_loss = +mean_neg(w logp)."""
    import math

    from algorithms.updates.awr import awr_weights, batch_advantages
    from algorithms.updates.recap import recap_losses

    cfg = FinetuneConfig(update="recap", awr_beta=1.0)
    adv = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    a_n = batch_advantages(cfg, adv)
    std = (5.0 / 3.0) ** 0.5
    assert a_n.tolist() == pytest.approx([x / std for x in (-1.5, -0.5, 0.5, 1.5)], abs=1e-6)
    pos = a_n > 0
    w = awr_weights(a_n.abs(), 1.0, 20.0)
    logp = torch.tensor([-2.0, -1.0, -0.5, -0.25])
    pos_loss, neg_loss = recap_losses(w, pos, logp, renorm=True)
    e = [math.exp(abs(x) / std) for x in (-1.5, -0.5, 0.5, 1.5)]
    wn = [e[0] / (e[0] + e[1]) * 2, e[1] / (e[0] + e[1]) * 2]
    wp = [e[2] / (e[2] + e[3]) * 2, e[3] / (e[2] + e[3]) * 2]
    assert float(pos_loss) == pytest.approx(-(wp[0] * -0.5 + wp[1] * -0.25) / 2, rel=1e-5)
    assert float(neg_loss) == pytest.approx((wn[0] * -2.0 + wn[1] * -1.0) / 2, rel=1e-5)
    # the guard clips a negative's log-likelihood from below
    _, clipped = recap_losses(w, pos, logp, renorm=True, nll_clip=1.5)
    assert float(clipped) == pytest.approx((wn[0] * -1.5 + wn[1] * -1.0) / 2, rel=1e-5)
    # an empty set contributes 0
    p0, n0 = recap_losses(w, torch.zeros(4, dtype=torch.bool), logp, renorm=True)
    assert float(p0) == 0.0 and float(n0) < 0


def test_reference_minibatch_count():
    """num_minibatches=5 over 100 x 50 transitions: minibatches of 1,000, five per epoch (the reference's V2)."""
    agent, batch = fixed_batch(alternating_signs())
    cfg = FinetuneConfig(update="awr", num_envs=100, num_steps=50, num_minibatches=5)
    assert cfg.effective_minibatch_size == 1000
    cfg = FinetuneConfig(update="awr", num_envs=8, num_steps=8, num_minibatches=4)
    rule = make_update("awr", cfg, agent, torch.Generator().manual_seed(0))
    sizes = [len(i) for i in rule.minibatches(batch)]
    assert sizes == [16, 16, 16, 16]


def test_joint_critic_training_steps_actor_and_critic_with_one_clip():
    """critic_training=joint: the rule's optimiser holds the critic too and the value loss falls."""
    agent, batch = fixed_batch(alternating_signs())
    batch.returns = torch.ones(B) * 2.0
    cfg = FinetuneConfig(update="ppo", update_epochs=20, minibatch_size=32, learning_rate=1e-3)
    rule = make_update("ppo", cfg, agent, torch.Generator().manual_seed(0), train_critic=True)
    critic_before = [p.detach().clone() for p in agent.critic.parameters()]
    with torch.no_grad():
        v0 = float(((agent.get_value(batch.obs) - 2.0) ** 2).mean())
    m = rule.update(agent, batch)
    with torch.no_grad():
        v1 = float(((agent.get_value(batch.obs) - 2.0) ** 2).mean())
    assert v1 < 0.5 * v0 and "losses/value_loss" in m
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    # without it the critic is untouched
    agent, batch = fixed_batch(alternating_signs())
    before = [p.detach().clone() for p in agent.critic.parameters()]
    make_update("ppo", cfg, agent, torch.Generator().manual_seed(0)).update(agent, batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.critic.parameters()))

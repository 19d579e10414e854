import numpy as np
import pytest
import torch

from mgral.strategies.rl.policy import LSTMPolicy
from mgral.strategies.rl.search import reinforce_update


@pytest.fixture()
def policy():
    torch.manual_seed(0)
    return LSTMPolicy()


def test_shapes_follow_the_paper(policy):
    assert policy.lstm.input_size == 257 and policy.lstm.hidden_size == 257


@pytest.mark.parametrize("n, b", [(1, 1), (5, 5), (40, 1), (40, 7), (40, 39), (200, 20)])
def test_rollouts_select_exactly_b(policy, n, b):
    emb = torch.randn(n, 256)
    policy.set_budget_prior(b, n)
    for s in range(5):
        r = policy.sample(emb, b, np.random.default_rng(s).random(n))
        assert r.decisions.sum() == b and set(np.unique(r.decisions)) <= {0.0, 1.0}
    assert policy.sample(emb, b, None).decisions.sum() == b


def test_forced_steps_are_exactly_the_budget_boundaries(policy):
    n, b = 30, 6
    emb = torch.randn(n, 256)
    with torch.no_grad():
        policy.decoder.bias.fill_(20.0)  # takes everything it can: budget exhausted at once
    r = policy.sample(emb, b, np.random.default_rng(0).random(n))
    assert r.decisions[:b].sum() == b and not r.forced[:b].any() and r.forced[b:].all()
    with torch.no_grad():
        policy.decoder.bias.fill_(-20.0)  # takes nothing: the last b are forced in
    r = policy.sample(emb, b, np.random.default_rng(0).random(n))
    assert r.decisions[-b:].sum() == b and r.forced[-b:].all() and not r.forced[:-b].any()


def test_fused_log_prob_and_gradient_equal_stepwise_autograd(policy):
    n, b = 50, 9
    emb = torch.randn(n, 256)
    policy.set_budget_prior(b, n)
    r = policy.sample(emb, b, np.random.default_rng(3).random(n))
    fused = policy.log_prob(emb, r)
    step = policy.log_prob_stepwise(emb, r)
    assert fused.item() == pytest.approx(step.item(), abs=1e-4)
    g1 = torch.autograd.grad(fused, list(policy.parameters()))
    g2 = torch.autograd.grad(step, list(policy.parameters()))
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_sampler_probabilities_match_the_fused_pass(policy):
    """The no-grad sampler and the fused pass compute the same probabilities: with uniforms just
    below / above p_i the decisions flip exactly where the fused probabilities say."""
    n, b = 30, 15
    emb = torch.randn(n, 256)
    policy.set_budget_prior(b, n)
    r = policy.sample(emb, b, np.full(n, 0.5))
    p = torch.sigmoid(policy.logits(emb, torch.as_tensor(r.decisions))).detach().numpy()
    free = ~r.forced
    np.testing.assert_array_equal(r.decisions[free] > 0, p[free] > 0.5)


def test_log_prob_is_exact_on_a_tiny_pool(policy):
    """Summing the probability of every exactly-b subset gives one."""
    from itertools import combinations

    n, b = 5, 2
    emb = torch.randn(n, 256)
    total = 0.0
    for subset in combinations(range(n), b):
        d = np.zeros(n, np.float32)
        d[list(subset)] = 1
        # forced steps of this decision sequence
        forced = np.zeros(n, bool)
        left = b
        for i in range(n):
            if left == 0 or left == n - i:
                forced[i:] = True
                break
            left -= int(d[i])
        from mgral.strategies.rl.policy import Rollout

        total += torch.exp(policy.log_prob(emb, Rollout(d, forced))).item()
    assert total == pytest.approx(1.0, abs=1e-5)


def test_reinforce_update_moves_towards_rewarded_rollouts_and_baseline(policy):
    n, b = 40, 5
    emb = torch.randn(n, 256)
    policy.set_budget_prior(b, n)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    r = policy.sample(emb, b, np.random.default_rng(0).random(n))
    before = policy.log_prob(emb, r).item()
    new_baseline = reinforce_update(policy, opt, emb, r, reward=0.6, baseline=0.4, decay=0.5)
    assert new_baseline == pytest.approx(0.5)
    assert policy.log_prob(emb, r).item() > before
    r2 = policy.sample(emb, b, np.random.default_rng(1).random(n))
    before = policy.log_prob(emb, r2).item()
    reinforce_update(policy, opt, emb, r2, reward=0.2, baseline=0.5, decay=0.5)
    assert policy.log_prob(emb, r2).item() < before


@pytest.mark.parametrize("n, b, advantage", [(50, 9, 0.7), (30, 29, -1.3), (40, 1, 0.2), (12, 12, 1.0)])
def test_hand_written_backward_equals_autograd(policy, n, b, advantage):
    """The gradient from the sampling pass's kept activations equals autograd through the fused LSTM."""
    emb = torch.randn(n, 256)
    policy.set_budget_prior(b, n)
    rollout = policy.sample(emb, b, np.random.default_rng(n).random(n), keep=True)
    policy.zero_grad()
    logp = policy.reinforce_grad(emb, rollout, advantage)
    manual = {k: v.grad.clone() for k, v in policy.named_parameters()}
    policy.zero_grad()
    ref = policy.log_prob(emb, rollout)
    (-advantage * ref).backward()
    assert logp == pytest.approx(float(ref.detach()), abs=1e-4)
    for k, v in policy.named_parameters():
        torch.testing.assert_close(manual[k], v.grad, rtol=1e-4, atol=1e-6)
    if b == n:  # every step forced: no free decision, no gradient
        assert all(float(g.abs().max()) == 0.0 for g in manual.values())


def test_update_from_kept_activations_equals_the_autograd_update():
    a, b = LSTMPolicy(seed=3), LSTMPolicy(seed=3)
    emb = torch.randn(40, 256)
    for p in (a, b):
        p.set_budget_prior(6, 40)
    # plain SGD: Adam's first step is +-lr for every element whatever its size, which turns float rounding
    # of near-zero gradients into visible differences
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=1e-2), torch.optim.SGD(b.parameters(), lr=1e-2)
    u = np.random.default_rng(0).random(40)
    kept = a.sample(emb, 6, u, keep=True)
    plain = b.sample(emb, 6, u)
    assert kept.activations is not None and plain.activations is None
    np.testing.assert_array_equal(kept.decisions, plain.decisions)
    reinforce_update(a, opt_a, emb, kept, 0.6, 0.4, 0.5)
    reinforce_update(b, opt_b, emb, plain, 0.6, 0.4, 0.5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

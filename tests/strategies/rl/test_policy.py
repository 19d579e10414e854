import numpy as np
import pytest
import torch

from mgral.strategies.rl.agent import reinforce_update
from mgral.strategies.rl.policy import LSTMPolicy


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

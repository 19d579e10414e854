"""The parts of MGRAL's search on their own: featurizers, agent state, rollouts, the final pick."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgral.strategies.base import MemoryStore, StrategyState
from mgral.strategies.rl.features import HistogramFeaturizer, MeanFeaturizer
from mgral.strategies.rl.policy import LSTMPolicy
from mgral.strategies.rl.search import (
    AgentState,
    collect_rollout,
    greedy_batch,
    pick_probabilities,
    polish,
    reinforce_update,
)


def test_histogram_and_mean_features():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(-5, 0.1, (20, 4)), rng.normal(5, 0.1, (20, 4))]).astype(np.float32)
    hist = HistogramFeaturizer(emb, clusters=2, seed=0)
    left, mixed = hist(np.arange(10)), hist(np.array([0, 1, 30, 31]))
    assert sorted(left.tolist()) == [0.0, 1.0] and sorted(mixed.tolist()) == [0.5, 0.5]
    np.testing.assert_allclose(MeanFeaturizer(emb)(np.array([0, 30])), emb[[0, 30]].mean(0))


def test_agent_state_round_trips_through_the_state_handle():
    policy = LSTMPolicy(seed=1)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    emb = torch.randn(30, 256)
    rollout, pos = collect_rollout(policy, emb, 5, np.random.default_rng(0).random(30))
    reinforce_update(policy, opt, emb, rollout, 0.6, 0.4, 0.5)
    state = AgentState(iteration=3, baseline=0.5, true_calls=4, truths={"1,2": 0.3},
                       history=[{"reward": 0.6, "kind": "true", "baseline": 0.5}], policy=policy.state_dict(),
                       optimizer=opt.state_dict(), records={"features": [[0.1, 0.2]], "rewards": [0.3], "groups": [0],
                                                            "kinds": ["random"]})  # fmt: skip
    state.remember(pos.tolist(), 0.61, "true", keep=2)
    handle = StrategyState(MemoryStore(), "s")
    handle.put("search", state.to_dict())  # safe formats only: loads with weights_only=True
    again = AgentState.from_dict(handle.get("search"))
    assert again.iteration == 3 and again.best == state.best and again.history == state.history
    assert again.truths == {"1,2": 0.3} and again.records == state.records
    restored = LSTMPolicy(seed=2)
    restored.load_state_dict(again.policy)
    for a, b in zip(policy.parameters(), restored.parameters()):
        assert torch.equal(a, b)
    opt2 = torch.optim.Adam(restored.parameters(), lr=1e-3)
    opt2.load_state_dict(again.optimizer)


def test_policy_seed_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = LSTMPolicy(seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = LSTMPolicy(seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("n, b", [(12, 1), (12, 6), (40, 39)])
def test_rollout_greedy_and_pick_probabilities(n, b):
    policy = LSTMPolicy(seed=0)
    policy.set_budget_prior(b, n)
    emb = torch.randn(n, 256)
    rollout, pos = collect_rollout(policy, emb, b, np.random.default_rng(1).random(n))
    assert len(pos) == b and rollout.decisions.sum() == b
    # the agent's rollouts carry the sampling pass's activations, so its update takes the hand-written
    # backward, not a second (autograd) pass over the pool
    assert rollout.activations is not None
    assert len(rollout.activations.logits) == int((~rollout.forced).sum())
    greedy = greedy_batch(policy, emb, b)
    assert len(greedy) == b and len(set(greedy.tolist())) == b
    probs = pick_probabilities(policy, emb, greedy)
    assert probs.shape == (n,) and ((probs > 0) & (probs < 1)).all()
    # the greedy decoding takes an unforced image exactly when its probability exceeds 1/2
    free = ~policy.sample(emb, b, None).forced
    np.testing.assert_array_equal(np.isin(np.arange(n), greedy)[free], probs[free] > 0.5)


def test_remember_keeps_the_best_distinct_batches():
    s = AgentState()
    for pos, v in (([1, 2], 0.1), ([3, 4], 0.5), ([2, 1], 0.9), ([5, 6], 0.3), ([7, 8], 0.2)):
        s.remember(pos, v, "table", keep=3)
    assert [c["positions"] for c in s.best] == [[3, 4], [5, 6], [7, 8]] or [c["value"] for c in s.best] == [
        0.5,
        0.3,
        0.2,
    ]
    # [2, 1] is [1, 2] again: not a new batch, whatever value it was given
    assert [c["positions"] for c in s.best] == [[3, 4], [5, 6], [7, 8]]
    assert [c["value"] for c in s.best] == [0.5, 0.3, 0.2]


def test_polish_climbs_to_the_optimum_of_an_additive_reward_and_never_falls():
    """Reward = sum of per-image values: the optimum is the b most valuable images, which enough swaps
    find; the batch size is kept, the record is faithful, and the same seed gives the same batch."""
    values = np.random.default_rng(3).permutation(50).astype(float)
    reward = lambda p: float(values[p].sum())  # noqa: E731
    start = np.arange(5)
    pos, rec = polish(reward, start, 50, 2000, np.random.default_rng(0))
    assert sorted(pos.tolist()) == sorted(np.argsort(-values)[:5].tolist())
    assert rec["start"] == reward(start) and rec["end"] == reward(pos) and rec["accepted"] >= 1
    again, _ = polish(reward, start, 50, 2000, np.random.default_rng(0))
    assert again.tolist() == pos.tolist()
    flat, frec = polish(lambda p: 1.0, start, 50, 100, np.random.default_rng(0))  # nothing strictly better
    assert flat.tolist() == start.tolist() and frec["accepted"] == 0
    none, nrec = polish(reward, start, 50, 0, np.random.default_rng(0))
    assert none.tolist() == start.tolist() and nrec["swaps"] == 0

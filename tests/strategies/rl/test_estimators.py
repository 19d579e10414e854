import numpy as np
import pytest

from mgral.strategies.base import MemoryStore, StrategyState
from mgral.strategies.rl.estimators import (
    GPEstimator,
    KernelEstimator,
    LookupTable,
    NoEstimator,
    Records,
    RidgeEstimator,
    fidelity,
    make_estimator,
)


def _records(points, group=0, kind="random"):
    r = Records()
    for x, y in points:
        r.add(np.atleast_1d(np.asarray(x, float)), y, group, kind)
    return r


def test_records_centre_rewards_on_their_cycle_and_round_trip():
    r = _records([(0.0, 0.10), (1.0, 0.30)], group=0)
    for x, y in [(0.0, 0.50), (1.0, 0.70)]:
        r.add(np.array([x]), y, 1, "random")
    r.add(np.array([2.0]), 0.9, 1, "policy")  # policy records do not move the cycle's offset
    assert r.offset(0) == pytest.approx(0.2) and r.offset(1) == pytest.approx(0.6) and r.offset(7) == 0.0
    x, y = r.centred()
    np.testing.assert_allclose(y, [-0.1, 0.1, -0.1, 0.1, 0.3])
    handle = StrategyState(MemoryStore(), "s")
    handle.put("records", r.state_dict())
    again = Records.from_state(handle.get("records"))
    assert again.kinds == r.kinds and np.allclose(again.centred()[1], y)


def test_inverse_distance_weighting():
    t = LookupTable(k=2)
    t.fit(_records([(0.0, 1.0), (4.0, 3.0), (40.0, 100.0)]))
    # standardised: features are divided by their std; weights are inverse distances either way
    x_scale = np.std([0.0, 4.0, 40.0])
    d1, d3 = 1.0 / x_scale, 3.0 / x_scale
    offset = np.mean([1.0, 3.0, 100.0])
    expected = ((1.0 - offset) / d1 + (3.0 - offset) / d3) / (1 / d1 + 1 / d3)
    assert t.estimate(np.array([1.0])) == pytest.approx(expected, rel=1e-6)


def test_table_declines_far_from_every_record_then_grows():
    recs = _records([(0.0, 0.1), (1.0, 0.2), (2.0, 0.3)])
    t = LookupTable(k=2)
    t.fit(recs)
    d = np.array([1.0, 2.0, 1.0]) / np.std([0.0, 1.0, 2.0])  # pairwise distances, standardised
    assert t.tau == pytest.approx(d.mean() - d.std())
    assert t.estimate(np.array([10.0])) is None  # every neighbour beyond mean - std: compute the true reward
    recs.add(np.array([10.0]), 0.9, 0, "policy")  # ... and the table grows
    t.fit(recs)
    assert t.estimate(np.array([10.1])) is not None


@pytest.mark.parametrize("name", ["ridge", "gp", "kernel", "table"])
def test_learned_estimators_rank_a_smooth_reward(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    recs = Records()
    for a in x:
        recs.add(a, 0.1 * a[0] - 0.05 * a[1], 0, "random")
    est = make_estimator(name)
    est.fit(recs)
    xt = rng.normal(size=(30, 3)) * 0.7
    pred = np.array([est.estimate(a) for a in xt], dtype=float)  # the table may decline (None -> nan)
    answered = ~np.isnan(pred)
    assert answered.mean() >= (0.5 if name == "table" else 1.0)
    f = fidelity(pred[answered], 0.1 * xt[answered, 0] - 0.05 * xt[answered, 1])
    assert f["spearman"] > (0.6 if name == "table" else 0.9), f


def test_estimators_decline_without_records():
    for est in (LookupTable(), RidgeEstimator(), GPEstimator(), KernelEstimator(), NoEstimator()):
        est.fit(Records())
        assert est.estimate(np.zeros(3)) is None

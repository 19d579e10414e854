import numpy as np
import pytest

from mgral.strategies.rl.estimators import KernelEstimator, LookupTable, NoEstimator, fidelity


def test_inverse_distance_weighting():
    t = LookupTable(k=2)
    t.add(np.array([0.0, 0.0]), 1.0)
    t.add(np.array([4.0, 0.0]), 3.0)
    t.add(np.array([40.0, 0.0]), 100.0)
    est = t.estimate(np.array([1.0, 0.0]))
    # neighbours at distances 1 and 3: weights 1 and 1/3
    assert est == pytest.approx((1.0 * 1 + 3.0 / 3) / (1 + 1 / 3))


def test_fallback_when_every_neighbour_is_far_then_growth():
    t = LookupTable(k=2)
    for x, r in ((0.0, 0.1), (1.0, 0.2), (2.0, 0.3)):
        t.add(np.array([x]), r)
    d = np.array([1.0, 2.0, 1.0])  # pairwise distances
    assert t.threshold() == pytest.approx(d.mean() - d.std())
    far = np.array([10.0])
    assert t.estimate(far) is None  # every neighbour beyond mean - std: compute the true reward
    t.add(far, 0.9)  # ... and the table grows
    assert len(t) == 4 and t.estimate(np.array([10.1])) == pytest.approx(0.9, abs=0.05)
    again = LookupTable.from_state(t.state_dict())
    assert again.estimate(np.array([0.2])) == t.estimate(np.array([0.2]))


def test_kernel_estimator_and_fidelity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = x[:, 0] * 0.1
    t = LookupTable()
    for a, b in zip(x, y):
        t.add(a, b)
    k = KernelEstimator(t)
    assert KernelEstimator(LookupTable()).estimate(x[0]) is None and NoEstimator().estimate(x[0]) is None
    xt = rng.normal(size=(20, 3)) * 0.5
    est = np.array([k.estimate(a) for a in xt])
    f = fidelity(est, xt[:, 0] * 0.1)
    assert f["spearman"] > 0.8 and f["mae"] < 0.05

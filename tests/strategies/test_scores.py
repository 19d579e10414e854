import numpy as np
import pytest

from mgral.data.structures import Prediction
from mgral.strategies.base import SelectionContext
from mgral.strategies.coreset import k_center_greedy
from mgral.strategies.entropy import EntropyStrategy, box_entropy


def test_box_entropy_softmax_and_sigmoid():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(box_entropy(p, softmax=True), [np.log(2), 0.0], atol=1e-9)
    q = np.array([[0.5, 0.1], [0.99, 0.2]])
    assert box_entropy(q, softmax=False)[0] == pytest.approx(np.log(2))


@pytest.mark.parametrize("aggregate, expected", [("mean", [np.log(2) / 2, 0.0, 0.0]), ("sum", [np.log(2), 0, 0]),
                                                 ("max", [np.log(2), 0, 0])])  # fmt: skip
def test_entropy_aggregates(aggregate, expected):
    def pred(rows):
        rows = np.array(rows, np.float32).reshape(-1, 3)
        return Prediction(np.zeros((len(rows), 4), np.float32), rows[:, 1:].max(1) if len(rows) else np.zeros(0, np.float32),
                          np.zeros(len(rows), np.int64), rows)  # fmt: skip

    preds = [pred([[0.5, 0.5, 0], [0, 1, 0]]), pred([[0, 0, 1]]), pred([])]
    ctx = SelectionContext(strategy="entropy", needs=frozenset({"predictions"}), dataset=None,  # type: ignore[arg-type]
                           unlabeled=np.arange(3), labeled=np.arange(0), seed=0, cycle=0, rng=np.random.default_rng(0),
                           inputs={"predictions": preds})  # fmt: skip
    np.testing.assert_allclose(
        EntropyStrategy(EntropyStrategy.Options(aggregate=aggregate)).score(ctx), expected, atol=1e-6
    )


def test_k_center_greedy_picks_far_points_first():
    labeled = np.zeros((1, 2))
    unlabeled = np.array([[1.0, 0], [10, 0], [0, 5], [10.5, 0]])
    picks, dists = k_center_greedy(unlabeled, labeled, 3, np.random.default_rng(0))
    assert picks.tolist() == [3, 2, 0]
    np.testing.assert_allclose(dists, [10.5, 5.0, 1.0])


def test_k_center_greedy_matches_brute_force():
    rng = np.random.default_rng(1)
    u, lab = rng.normal(size=(200, 8)), rng.normal(size=(20, 8))
    picks, _ = k_center_greedy(u, lab, 10, rng, chunk=7)
    centers = list(lab)
    for p in picks:
        d = np.min(np.linalg.norm(u[:, None] - np.array(centers)[None], axis=2), 1)
        assert np.isclose(d[p], d.max(), atol=1e-4)
        centers.append(u[p])

import numpy as np
import pytest

from mgral.data.structures import Prediction
from mgral.strategies.rl.agent import MgralOptions, MgralStrategy
from mgral.strategies.rl.features import CompositionFeaturizer

N_CLASSES = 3


def _prediction(scores: list[float], labels: list[int]) -> Prediction:
    k = len(scores)
    probs = np.full((k, N_CLASSES + 1), 1.0 / (N_CLASSES + 1), np.float32)
    return Prediction(np.zeros((k, 4), np.float32), np.asarray(scores, np.float32),
                      np.asarray(labels, np.int64), probs)  # fmt: skip


def _pool(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[Prediction]]:
    rng = np.random.default_rng(seed)
    emb_u, emb_l = rng.normal(size=(n, 8)), rng.normal(size=(10, 8))
    # image i: one detection of class i % 3 scoring 0.4, and one of class 0 scoring 0.9 on even images
    preds = [_prediction([0.4, 0.9] if i % 2 == 0 else [0.4], [i % 3, 0] if i % 2 == 0 else [i % 3])
             for i in range(n)]  # fmt: skip
    return emb_u, emb_l, preds


def test_composition_counts_pseudo_objects_at_its_threshold():
    emb_u, emb_l, preds = _pool()
    counts = np.array([5, 1, 0])
    batch = np.array([0, 1, 2, 3])  # classes 0,1,2,0 at 0.4; class 0 at 0.9 on images 0 and 2
    high = CompositionFeaturizer(emb_u, emb_l, preds, counts, softmax=True, threshold=0.5, clusters=4)
    low = CompositionFeaturizer(emb_u, emb_l, preds, counts, softmax=True, threshold=0.3, clusters=4)
    np.testing.assert_allclose(high(batch)[:N_CLASSES], [2 / 4, 0, 0])
    np.testing.assert_allclose(low(batch)[:N_CLASSES], [4 / 4, 1 / 4, 1 / 4])
    assert len(high(batch)) == high.dim == N_CLASSES + 4 + 8


def test_groups_add_distinct_and_new_group_shares():
    emb_u, emb_l, preds = _pool()
    groups = np.arange(40) // 4  # ten groups of four images
    held = np.zeros(10)
    held[[0, 1]] = 1  # the labeled set holds images of groups 0 and 1
    feat = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, clusters=4,
                                 groups=groups, groups_labeled=held)  # fmt: skip
    plain = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, clusters=4)
    same_group, spread = np.array([8, 9, 10, 11]), np.array([0, 4, 8, 12])
    assert feat.dim == plain.dim + 2 == len(feat(spread))
    np.testing.assert_allclose(feat(same_group)[-2:], [1 / 4, 1.0])  # one group, new to the labeled set
    np.testing.assert_allclose(feat(spread)[-2:], [4 / 4, 2 / 4])  # four groups, two of them labeled
    np.testing.assert_allclose(feat(spread)[:-2], plain(spread))  # the rest is the plain feature


def test_groups_must_cover_the_pool():
    emb_u, emb_l, preds = _pool()
    with pytest.raises(ValueError, match="groups has 39 entries for 40"):
        CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, clusters=4,
                              groups=np.zeros(39, np.int64))  # fmt: skip


@pytest.mark.parametrize(("proxy", "expected"), [("curve", 0.3), ("head", 0.5)])
def test_the_agent_counts_pseudo_objects_as_its_reward_does(proxy, expected):
    emb_u, emb_l, preds = _pool()

    class Dataset:
        num_classes = N_CLASSES

    class Ctx:  # the fields the featurizer reads (no labeled image: no ground truth to count)
        embeddings_unlabeled, embeddings_labeled, predictions, softmax, seed = emb_u, emb_l, preds, True, 0
        dataset, labeled = Dataset(), np.zeros(0, np.int64)

    strategy = MgralStrategy(MgralOptions(proxy=proxy, curve_threshold=0.3, pseudo_threshold=0.5))
    strategy_feat = strategy.featurizer(Ctx(), emb_u)  # type: ignore[arg-type]
    assert isinstance(strategy_feat, CompositionFeaturizer)
    reference = CompositionFeaturizer(
        emb_u, emb_l, preds, np.zeros(N_CLASSES), softmax=True, threshold=expected
    )
    np.testing.assert_allclose(strategy_feat.counts, reference.counts)

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
    np.testing.assert_allclose(high(batch)[:N_CLASSES], [2, 0, 0])
    np.testing.assert_allclose(low(batch)[:N_CLASSES], [4, 1, 1])
    assert len(high(batch)) == high.dim == N_CLASSES + 4 + 8


def test_composition_counts_the_batch_not_per_image():
    # the table holds records of 2b images too (pre-size records): a batch twice as large, with the same
    # images twice over in kind, must not look the same as the batch of b
    emb_u, emb_l, preds = _pool()
    common = {"softmax": True, "threshold": 0.3, "clusters": 4}
    totals = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), **common)
    per_image = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), per_image=True, **common)
    small, large = np.arange(6), np.arange(12)  # classes cycle every 3 images, class 0 on even ones
    assert not np.allclose(totals(small)[:N_CLASSES], totals(large)[:N_CLASSES])
    np.testing.assert_allclose(totals(large)[:N_CLASSES], 2 * totals(small)[:N_CLASSES])
    np.testing.assert_allclose(per_image(large)[:N_CLASSES], per_image(small)[:N_CLASSES])
    np.testing.assert_allclose(per_image(small)[:N_CLASSES], totals(small)[:N_CLASSES] / 6)


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


def test_discount_counts_each_group_once_as_the_curve_reward_does():
    emb_u, emb_l, preds = _pool()
    groups = np.arange(40) // 4  # ten groups of four images
    held = np.zeros(10)
    held[1] = 1  # the labeled set holds one image of group 1
    common = {"softmax": True, "clusters": 4, "threshold": 0.3, "groups": groups, "groups_labeled": held}
    feat = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), discount=True, **common)
    plain = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), **common)
    assert feat.dim == plain.dim + N_CLASSES
    batch = np.array([0, 1, 2, 4])  # images 0-2 in group 0 (weight 1/3), image 4 in group 1 (1/(1+1))
    # pseudo-objects at 0.3: image 0 -> classes 0,0; 1 -> 1; 2 -> 2,0; 4 -> 1,0
    expected = (np.array([2, 0, 0]) / 3 + np.array([0, 1, 0]) / 3 + np.array([1, 0, 1]) / 3
                + np.array([1, 1, 0]) / 2)  # fmt: skip
    np.testing.assert_allclose(feat(batch)[-N_CLASSES:], expected)
    np.testing.assert_allclose(feat(batch)[:-N_CLASSES], plain(batch))
    with pytest.raises(ValueError, match="discount needs the groups"):
        CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, discount=True)


def test_discounted_composition_is_the_curve_rewards_object_count():
    from mgral.strategies.rl.curve import CurveConfig, CurveReward

    emb_u, emb_l, preds = _pool()
    emb_u = np.repeat(emb_u[:10], 4, axis=0) + 1e-3 * np.random.default_rng(1).normal(size=(40, 8))  # scenes
    plain = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, threshold=0.3)
    reward = CurveReward(CurveConfig(duplicates="scenes"), unlabeled=np.arange(40), counts=plain.counts,
                         labeled_counts=np.array([5, 1, 0]), emb_unlabeled=emb_u, emb_labeled=emb_l)  # fmt: skip
    assert reward.scene is not None and len(np.unique(reward.scene)) < 40
    feat = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, threshold=0.3,
                                 groups=reward.scene, groups_labeled=reward.scene_labeled, discount=True)  # fmt: skip
    batch = np.array([0, 1, 2, 5, 9, 20, 21, 33])
    np.testing.assert_allclose(feat(batch)[-N_CLASSES:], reward.weights(batch) @ plain.counts[batch])
    rho = CurveReward(CurveConfig(duplicates="scenes", scene_correlation=0.5), unlabeled=np.arange(40),
                      counts=plain.counts, labeled_counts=np.array([5, 1, 0]), emb_unlabeled=emb_u,
                      emb_labeled=emb_l)  # fmt: skip
    feat_rho = CompositionFeaturizer(emb_u, emb_l, preds, np.array([5, 1, 0]), softmax=True, threshold=0.3,
                                     groups=rho.scene, groups_labeled=rho.scene_labeled, discount=True,
                                     correlation=0.5)  # fmt: skip
    np.testing.assert_allclose(feat_rho(batch)[-N_CLASSES:], rho.weights(batch) @ plain.counts[batch])
    assert not np.allclose(rho.weights(batch), reward.weights(batch))  # the two rules differ on this batch


def test_the_agent_counts_scenes_once_given_the_curve_reward():
    from mgral.strategies.rl.curve import CurveConfig, CurveReward

    emb_u, emb_l, preds = _pool()

    class Dataset:
        num_classes = N_CLASSES

    class Ctx:
        embeddings_unlabeled, embeddings_labeled, predictions, softmax, seed = emb_u, emb_l, preds, True, 0
        dataset, labeled = Dataset(), np.zeros(0, np.int64)

    reward = CurveReward(CurveConfig(duplicates="scenes", radius=0.8), unlabeled=np.arange(40),
                         counts=np.ones((40, N_CLASSES)), labeled_counts=np.zeros(N_CLASSES),
                         emb_unlabeled=emb_u, emb_labeled=emb_l)  # fmt: skip
    curve = MgralStrategy(MgralOptions(proxy="curve")).featurizer(Ctx(), emb_u, reward)  # type: ignore[arg-type]
    head = MgralStrategy(MgralOptions(proxy="head")).featurizer(Ctx(), emb_u, reward)  # type: ignore[arg-type]
    assert isinstance(curve, CompositionFeaturizer) and isinstance(head, CompositionFeaturizer)
    assert curve.discount and curve.groups is not None
    np.testing.assert_array_equal(curve.groups, reward.scene)
    assert not head.discount and head.groups is None  # a trained proxy has no scenes to count
    assert curve.correlation is None
    rho = MgralStrategy(MgralOptions(proxy="curve", curve_scene_correlation=0.5)).featurizer(
        Ctx(), emb_u, reward
    )  # type: ignore[arg-type]
    assert isinstance(rho, CompositionFeaturizer) and rho.correlation == 0.5  # counted as the reward counts

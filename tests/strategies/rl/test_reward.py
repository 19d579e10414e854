"""The proxy reward: cross-fitted folds, a paired control that makes an empty batch worth exactly 0, a
deterministic function of the batch, no unlabeled ground truth outside the oracle, and fold models reused
only for the labeled split they were trained on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.data.structures import Prediction
from mgral.strategies.base import TrainingSpec, pool_view
from mgral.strategies.rl import reward as reward_mod
from mgral.strategies.rl.reward import ProxyReward, RewardConfig, pseudo_target


@pytest.fixture(scope="module")
def spec(shapes):
    cfg = load_config(preset="smoke", overrides=["device=cpu"])
    base = TrainingSpec.from_config(cfg, shapes.num_classes, torch.device("cpu"))
    return replace(base, train=replace(cfg.train, iterations=4))


def _reward(shapes, spec, tmp_path, labeled=None, **kw):
    pool = Pool.with_initial(len(shapes), np.arange(16) if labeled is None else labeled)
    view = pool_view(shapes, pool)
    oracle = shapes if kw.get("kind") == "oracle" else None
    cfg = RewardConfig(passes=1.0, batch_per_step=4, labeled_per_step=4, **kw)
    return ProxyReward(cfg, spec, dataset=view, labeled=pool.labeled, unlabeled=pool.unlabeled, seed=0, cycle=0,
                       workdir=tmp_path, oracle=oracle)  # fmt: skip


@pytest.mark.parametrize("proxy", ["head", "semi"])
def test_paired_control_deterministic_and_cross_fitted(shapes, spec, tmp_path, proxy):
    r = _reward(shapes, spec, tmp_path, proxy=proxy)
    folds = r.folds
    assert len(folds) == 2
    assert sorted(np.concatenate([f.holdout for f in folds]).tolist()) == list(range(16))  # a partition
    for f in folds:
        assert set(f.train).isdisjoint(f.holdout)
    assert r(np.zeros(0, np.int64)) == 0.0  # an empty batch: the paired control itself
    batch = np.arange(20, 28)
    first, again = r(batch), r(batch[::-1].copy())
    assert first == again  # the same batch (in any order) has the same reward
    assert np.isfinite(first)
    other = r(np.arange(36, 44))
    assert np.isfinite(other)
    assert r.calls == 4


def test_pseudo_reward_reads_no_unlabeled_ground_truth(shapes, spec, tmp_path, monkeypatch):
    """Everything the pseudo reward reads of the unlabeled images is pixels: their annotations were
    removed from the dataset it gets, and the targets of batch images are pseudo-labels of a fold model."""
    r = _reward(shapes, spec, tmp_path)
    assert all(len(r.dataset[int(i)].boxes) == 0 and not r.dataset[int(i)].annotated for i in r.unlabeled)
    r.prepare()
    for fold in r.folds:
        for i in r.unlabeled:
            t = fold.targets[int(i)]
            assert "ignore_boxes" in t  # pseudo-labels carry an ignore band; ground truth does not
    o = _reward(shapes, spec, tmp_path / "o", kind="oracle")
    o.prepare()
    i = int(o.unlabeled[0])
    assert torch.equal(o.folds[0].targets[i]["labels"], torch.as_tensor(shapes[i].labels + 1))


def test_pseudo_target_ignore_band():
    p = Prediction(np.array([[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]], np.float32), np.array([0.9, 0.3, 0.1], np.float32),
                   np.array([2, 0, 1]), np.zeros((3, 4), np.float32))  # fmt: skip
    t = pseudo_target(p, hi=0.5, lo=0.2)
    assert t["labels"].tolist() == [3] and t["boxes"].shape == (1, 4) and t["ignore_boxes"].shape == (1, 4)


def test_fold_models_are_reused_only_for_their_labeled_split(shapes, spec, tmp_path, monkeypatch):
    """Regression: `mgral query` rounds share a work folder; a fold model saved after one round must not be
    loaded in the next, whose labeled set differs."""
    trained = []
    real = reward_mod.train_supervised

    def spy(det, dataset, indices, train_cfg, **kw):
        trained.append(len(indices))
        return real(det, dataset, indices, train_cfg, **kw)

    monkeypatch.setattr(reward_mod, "train_supervised", spy)
    first = _reward(shapes, spec, tmp_path)
    assert trained == []  # construction trains nothing
    first.prepare()
    assert trained == [8, 8] and len(list(tmp_path.glob("reward-fold0-*.pt"))) == 1
    _reward(shapes, spec, tmp_path).prepare()  # the same labeled set: reused
    assert trained == [8, 8]
    second = _reward(shapes, spec, tmp_path, labeled=np.arange(20))  # the next round: retrained
    second.prepare()
    assert trained == [8, 8, 10, 10]
    assert first.fingerprint(first.folds[0]) != second.fingerprint(second.folds[0])

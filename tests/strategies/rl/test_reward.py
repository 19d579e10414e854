"""The proxy reward's cache of its base detector: reused only for the labeled set it was trained on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mgral.config import load_config
from mgral.strategies.base import TrainingSpec
from mgral.strategies.rl import reward as reward_mod
from mgral.strategies.rl.reward import ProxyReward, RewardConfig


def test_a_base_detector_of_another_labeled_set_is_not_reused(shapes, tmp_path, monkeypatch):
    """Regression: `mgral query` rounds share a work folder; the base detector saved after one round must
    not be loaded in the next, whose labeled set differs."""
    cfg = load_config(preset="smoke", overrides=["device=cpu"])
    spec = replace(TrainingSpec.from_config(cfg, shapes.num_classes, torch.device("cpu")),
                   train=replace(cfg.train, iterations=3))  # fmt: skip
    trained = []
    real = reward_mod.train_supervised

    def spy(det, dataset, indices, train_cfg, **kw):
        trained.append(len(indices))
        return real(det, dataset, indices, train_cfg, **kw)

    monkeypatch.setattr(reward_mod, "train_supervised", spy)
    rcfg = RewardConfig(pseudo_labels="supervised", steps=2)

    def make(labeled):
        unlabeled = np.setdiff1d(np.arange(len(shapes)), labeled)
        r = ProxyReward(rcfg, spec, dataset=shapes, labeled=labeled, unlabeled=unlabeled, seed=0, cycle=0,
                        workdir=tmp_path)  # fmt: skip
        assert not trained or r.fingerprint()  # construction trains nothing
        r.prepare()
        return r

    first = make(np.arange(20))
    assert trained == [12] and (tmp_path / "reward-base.pt").is_file()
    make(np.arange(20))  # same labeled set: the saved base is reused
    assert trained == [12]
    second = make(np.arange(24))  # a new round: retrained, not loaded
    assert trained == [12, 16]
    assert first.fingerprint() != second.fingerprint()

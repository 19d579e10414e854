"""The baselines on small hand-worked cases: CDAL's distance, EBAL's ENMS and prototypes, PPAL's weights,
matching distance and k-Centroid, learning loss's ranking loss and module, MI-AOD's schedule and losses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.config import DetectorConfig
from mgral.data.structures import Prediction
from mgral.detectors.detector import Detector
from mgral.strategies.cdal import context, contextual_distance
from mgral.strategies.ebal import enms, prototypes
from mgral.strategies.learning_loss import LearningLossObjective, ranking_loss
from mgral.strategies.mial import MIALObjective, stage_at
from mgral.strategies.ppal import ccms_distance, difficulty_weights, k_centroid
from mgral.training.engine import fit
from tests.conftest import TINY_TRAIN


# ------------------------------------------------------------------------------------------------ CDAL
def _pred(rows):
    rows = np.asarray(rows, np.float32).reshape(-1, 4)  # softmax rows: background + 3 classes
    return Prediction(np.zeros((len(rows), 4), np.float32), rows[:, 1:].max(1), rows[:, 1:].argmax(1), rows)


def test_cdal_context_by_hand():
    p, valid = context(_pred([[0.0, 0.7, 0.2, 0.1], [0.5, 0.0, 0.5, 0.0]]), 3, softmax=True)
    # region 1 -> class 0 with its own (renormalised) distribution; region 2 -> class 1, distribution [0, 1, 0]
    assert valid.tolist() == [True, True, False]
    np.testing.assert_allclose(p[0], [0.7, 0.2, 0.1], atol=1e-6)
    np.testing.assert_allclose(p[1], [0, 1, 0], atol=1e-6)


def test_cdal_distance_zero_for_identical_symmetric_and_skips_absent_classes():
    rng = np.random.default_rng(0)
    p = torch.as_tensor(rng.dirichlet(np.ones(3), size=(4, 3)))  # 4 images, 3 classes, distributions over 3
    m = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=p.dtype)
    d = contextual_distance(p, m, p, m)
    np.testing.assert_allclose(np.diag(d.numpy()), 0.0, atol=1e-9)
    np.testing.assert_allclose(d.numpy(), d.numpy().T, atol=1e-9)
    # by hand between images 0 and 3: classes 0 and 1 are valid in both
    sym = lambda a, b: 0.5 * float((a * np.log(a / b)).sum() + (b * np.log(b / a)).sum())  # noqa: E731
    expected = sym(p[0, 0].numpy(), p[3, 0].numpy()) + sym(p[0, 1].numpy(), p[3, 1].numpy())
    assert float(d[0, 3]) == pytest.approx(expected, rel=1e-6)
    assert float(d[0, 2]) == pytest.approx(
        sym(p[0, 1].numpy(), p[2, 1].numpy()), rel=1e-6
    )  # only class 1 shared


# ------------------------------------------------------------------------------------------------ EBAL
def test_enms_suppresses_a_similar_instance_of_the_same_class_only():
    entropy = np.array([0.9, 0.5, 0.4, 0.3])
    labels = np.array([1, 1, 2, 1])
    f = np.array([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0], [0.0, 1.0]])  # 1 is like 0; 2 too but another class
    score, kept = enms(entropy, labels, f, t_enms=0.5)
    assert kept.tolist() == [0, 2, 3] and score == pytest.approx(0.9 + 0.4 + 0.3)


def test_prototypes_are_entropy_weighted_unit_means():
    protos = prototypes(
        np.array([3.0, 1.0, 1.0]), np.array([0, 0, 1]), np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    )
    np.testing.assert_allclose(protos[0], np.array([3.0, 1.0]) / np.sqrt(10), atol=1e-9)
    np.testing.assert_allclose(protos[1], np.array([1.0, 1.0]) / np.sqrt(2), atol=1e-9)


# ------------------------------------------------------------------------------------------------ PPAL
def test_ppal_difficulty_weights_span_one_to_one_plus_u():
    w = difficulty_weights(np.array([1.0, 0.5, 0.0]), alpha=0.3, upper=0.2)
    assert w[0] == pytest.approx(1.0) and w[2] == pytest.approx(1.2) and 1.0 < w[1] < 1.2
    b = np.exp(1 / 0.3) - 1
    assert w[1] == pytest.approx(1 + 0.06 * np.log(1 + b * 0.5))


def test_ccms_distance_matches_same_class_detections():
    e = np.eye(3)
    feats = [e[[0, 1]], e[[0, 1]], e[[2]], np.zeros((0, 3))]
    labels = [np.array([0, 1]), np.array([0, 1]), np.array([0]), np.array([], np.int64)]
    scores = [np.array([0.9, 0.5]), np.array([0.8, 0.8]), np.array([0.9]), np.array([])]
    d = ccms_distance(feats, labels, scores, torch.device("cpu"))
    assert d[0, 1] == pytest.approx(0.0, abs=1e-4)  # the same objects
    # image 0 against 2: class 0 matches with cosine 0 (distance 1), class 1 has no match (distance 2):
    # (0.9 * 1 + 0.5 * 2) / 1.4 one way; image 2 against 0: its class-0 detection, cosine 0, distance 1
    assert d[0, 2] == pytest.approx(0.5 * ((0.9 + 1.0) / 1.4 + 1.0), abs=1e-3)
    np.testing.assert_allclose(d, d.T, atol=1e-6)


def test_k_centroid_finds_one_medoid_per_cluster():
    pts = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.3]])
    dist = np.abs(pts - pts.T)
    centres = k_centroid(dist, 2, np.random.default_rng(0))
    assert sorted(centres.tolist()) == [1, 4]  # the medoids of {0, 0.1, 0.2} and {10, 10.1, 10.3}


# ------------------------------------------------------------------------------------------------ learning loss
def test_ranking_loss_by_hand():
    pred = torch.tensor([2.0, 0.0, 1.0, 3.0])
    true = torch.tensor([5.0, 1.0, 2.0, 4.0])
    # pairs (0, 3): l0 > l3, want p0 > p3 + 1: max(0, -(2 - 3) + 1) = 2; (1, 2): l1 < l2: max(0, (0 - 1) + 1) = 0
    assert float(ranking_loss(pred, true)) == pytest.approx(1.0)
    assert float(ranking_loss(torch.tensor([1.0]), torch.tensor([1.0]))) == 0.0


def test_learning_loss_objective_trains_its_module(shapes):
    det = Detector(DetectorConfig(name="tiny_ssd", image_size=64, width=16), shapes.num_classes, seed=0)
    obj = LearningLossObjective(shapes, np.arange(16), seed=0, detach_after=0.5)
    stats = fit(det, obj, replace(TINY_TRAIN, iterations=6), progress=False)
    assert np.isfinite(stats["final_loss"]) and set(obj.modules()) == {"lpm"}
    losses = obj.predict_losses(shapes, np.arange(16, 24))
    assert losses.shape == (8,) and np.isfinite(losses).all() and len(set(np.round(losses, 6))) > 1


# ------------------------------------------------------------------------------------------------ MI-AOD
def test_mial_schedule():
    stages = [stage_at(it, 260) for it in range(260)]
    assert stages[:60] == ["label"] * 60 and stages[60:80] == ["min"] * 20 and stages[80:100] == ["max"] * 20
    assert stages.count("label") == 180 and stages[-1] == "label"


@pytest.mark.parametrize("name", ["tiny_ssd", "tiny_retinanet"])
def test_mial_objective_losses_and_freezing(shapes, name):
    det = Detector(DetectorConfig(name=name, image_size=64, width=16), shapes.num_classes, seed=0)
    obj = MIALObjective(shapes, np.arange(16), np.arange(16, 48), seed=0, unlabeled_batch=4)
    obj.bind(det)
    assert len(obj.unlabeled) == 16  # X_U: as many random pool images as labeled ones
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    out = obj.forward(images)
    # f1 and f2 start apart (independent initialisations): a positive discrepancy; with f2 := f1, none
    assert float(obj.discrepancy(out, maximise=False).detach()) > 0
    obj.f2.load_state_dict(det.module.head.classification_head.state_dict())
    assert float(obj.discrepancy(obj.forward(images), maximise=False).detach()) == pytest.approx(
        0.0, abs=1e-7
    )
    scores = obj.instance_scores(out)
    assert all(torch.allclose(s.sum((1, 2)), torch.ones(2), atol=1e-5) for s in scores)  # a softmax per level
    f1 = det.module.head.classification_head
    obj._freeze("max")
    assert all(p.requires_grad for p in f1.parameters()) and not any(
        p.requires_grad for p in det.module.backbone.parameters()
    )
    obj._freeze("min")
    assert not any(p.requires_grad for p in obj.f2.parameters()) and all(
        p.requires_grad for p in obj.mil.parameters()
    )
    stats = fit(
        det,
        MIALObjective(shapes, np.arange(16), np.arange(16, 48), seed=0, unlabeled_batch=4),
        replace(TINY_TRAIN, iterations=13),
        progress=False,
    )  # every stage at least once
    assert np.isfinite(stats["final_loss"])

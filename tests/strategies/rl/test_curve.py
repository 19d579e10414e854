"""The curve reward: the mAP change of per-class learning curves, worked by hand; an empty batch is worth
0; near-duplicates count once; counts calibrated by cross-fitted precision and recall; no unlabeled
ground truth outside the oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.data.structures import Prediction
from mgral.detectors.detector import Detector
from mgral.strategies.base import TrainingSpec, pool_view
from mgral.strategies.rl.agent import MgralOptions, make_reward
from mgral.strategies.rl.curve import (
    PROBE_IMAGES,
    CurveConfig,
    CurveReward,
    _probe_share,
    class_counts,
    data_duplicate_share,
    order_near_duplicates,
    pixel_duplicate_share,
    precision_recall,
    probe_rows,
    scene_weights,
)
from mgral.training.supervised import train_supervised
from tests.conftest import TINY_DET, TINY_TRAIN


def _pred(labels, scores, boxes=None):
    n = len(labels)
    b = (
        np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))
        if boxes is None
        else np.asarray(boxes, np.float32)
    )
    return Prediction(
        b, np.asarray(scores, np.float32), np.asarray(labels, np.int64), np.zeros((n, 3), np.float32)
    )


def test_curve_reward_by_hand():
    """Two classes with 3 and 0 labeled objects (n = 4 and 1 after add-one); alpha = 1: the gain of m
    objects of a class is 1 - n / (n + m), and the reward is the mean over classes."""
    counts = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    r = CurveReward(CurveConfig(exponent=1.0, redundancy=False), unlabeled=np.array([10, 11, 12]), counts=counts,
                    labeled_counts=np.array([3, 0]))  # fmt: skip
    assert r(np.zeros(0, np.int64)) == 0.0
    assert r(np.array([12])) == 0.0  # an image with no object brings nothing
    assert r(np.array([10])) == pytest.approx((1 - 4 / 6) / 2)
    assert r(np.array([11])) == pytest.approx((1 - 1 / 2) / 2)  # one object of the class the labels lack
    assert r(np.array([11])) > r(np.array([10]))  # ... is worth more than two of a common one
    assert r(np.array([10, 11])) == pytest.approx(((1 - 4 / 6) + (1 - 1 / 2)) / 2)
    assert r(np.array([11, 10])) == r(np.array([10, 11])) and r.calls == 9
    # saturation: a class already at AP 0.8 has a fifth of the headroom
    s = CurveReward(CurveConfig(exponent=1.0, redundancy=False), unlabeled=np.array([10, 11, 12]), counts=counts,
                    labeled_counts=np.array([3, 0]), ap=np.array([0.8, 0.0]))  # fmt: skip
    assert s(np.array([10])) == pytest.approx(0.2 * (1 - 4 / 6) / 2) and s.base_map == pytest.approx(0.4)


def test_near_duplicates_count_once():
    """Images 0 and 1 are near-identical (in the batch together they bring one image's worth); image 2 is
    near a labeled image; image 3 stands alone."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 8)) * 5
    emb[1] = emb[0] + 1e-3
    labeled = emb[2:3] + 1e-3
    counts = np.ones((6, 1))
    cfg = CurveConfig(exponent=1.0, radius=0.25)
    r = CurveReward(cfg, unlabeled=np.arange(6), counts=counts, labeled_counts=np.array([10]), emb_unlabeled=emb,
                    emb_labeled=labeled)  # fmt: skip
    assert r.weights(np.array([0, 1, 3])).tolist() == [0.5, 0.5, 1.0]
    assert r.weights(np.array([2, 3])).tolist() == [0.5, 1.0]
    assert r(np.array([0, 1])) == pytest.approx(r(np.array([0])))
    off = CurveReward(replace(cfg, redundancy=False), unlabeled=np.arange(6), counts=counts,
                      labeled_counts=np.array([10]), emb_unlabeled=emb, emb_labeled=labeled)  # fmt: skip
    assert off(np.array([0, 1])) > off(np.array([0]))


def test_default_radius_catches_frames_of_a_scene_and_not_independent_images():
    """The scale is the median distance of two images, not of an image to its nearest neighbour: on a
    video-like pool (scenes of 5 frames) the nearest neighbour is a frame of the same scene, and a
    fraction of that distance would catch no frame at all."""
    rng = np.random.default_rng(0)
    scenes = rng.normal(size=(60, 64)) * 3
    video = np.repeat(scenes, 5, axis=0) + rng.normal(size=(300, 64)) * 0.5
    iid = rng.normal(size=(300, 64)) * 3
    counts = np.ones((300, 1))
    for emb, dup in ((video, True), (iid, False)):
        r = CurveReward(CurveConfig(), unlabeled=np.arange(300), counts=counts, labeled_counts=np.array([10]),
                        emb_unlabeled=emb)  # fmt: skip
        w = r.weights(np.arange(10))  # two whole scenes of the video pool
        assert w.tolist() == ([0.2] * 10 if dup else [1.0] * 10)


def test_scenes_join_a_drifting_video_that_no_radius_pair_joins():
    """Frames 0..5 drift along a line, each within the radius of the next but the ends far apart: the pair
    rule counts the ends as two images, the scene rule counts the whole chain once; a labeled frame of the
    chain counts against every frame of it; an image off the chain stands alone under both rules."""
    far = np.zeros((12, 2))
    far[6:, 0] = np.arange(6) * 100.0 + 1000.0  # spread images that set the median distance of two images
    far[6:, 1] = 500.0
    emb = far.copy()
    emb[:6, 0] = np.arange(6) * 1.0  # the video: steps of 1, ends 5 apart
    counts = np.ones((12, 1))
    kw = dict(unlabeled=np.arange(12), counts=counts, labeled_counts=np.array([10]), emb_unlabeled=emb)
    med = np.median([np.linalg.norm(a - b) for i, a in enumerate(emb) for b in emb[i + 1 :]])
    # about one and a half steps of the chain (the reward standardises each axis, so this is approximate;
    # the pair-rule assertion below checks that the ends stay apart)
    cfg = CurveConfig(exponent=1.0, radius=1.5 / med)
    pairs = CurveReward(cfg, **kw)
    scenes = CurveReward(replace(cfg, duplicates="scenes"), **kw)
    assert pairs.weights(np.array([0, 5])).tolist() == [1.0, 1.0]
    assert scenes.weights(np.array([0, 5, 7])).tolist() == [0.5, 0.5, 1.0]
    assert scenes(np.array([0, 5])) == pytest.approx(scenes(np.array([2])))
    labeled = CurveReward(replace(cfg, duplicates="scenes"), **kw, emb_labeled=emb[3:4] + 0.1)
    assert labeled.weights(np.array([0, 7])).tolist() == [0.5, 1.0]
    assert labeled(np.array([])) == 0.0
    with pytest.raises(ValueError, match="duplicates"):
        CurveConfig(duplicates="frames")  # type: ignore[arg-type]


def test_pixel_scenes_come_from_the_thumbnails_not_the_embedding():
    """With ``scene_space=pixels`` the scenes are the components of the thumbnails: images 0-2 share a
    thumbnail (one scene) although the embedding puts them far apart, and images 3 and 4, one point in the
    embedding, are two scenes; a labeled image with the first thumbnail counts against that scene only.
    Without thumbnails the pixel rule refuses to run rather than fall back to the embedding."""
    rng = np.random.default_rng(0)
    thumbs = rng.normal(size=(8, 64))
    thumbs[1] = thumbs[2] = thumbs[0] + 1e-3
    emb = rng.normal(size=(8, 4)) * 10
    emb[4] = emb[3]
    cfg = CurveConfig(exponent=1.0, duplicates="scenes", scene_space="pixels")
    kw = dict(unlabeled=np.arange(8), counts=np.ones((8, 1)), labeled_counts=np.array([10]), emb_unlabeled=emb,
              has_duplicates=True)  # fmt: skip
    pixels = CurveReward(cfg, **kw, thumbs_unlabeled=thumbs)
    assert pixels.weights(np.array([0, 1, 2, 3, 4])).tolist() == pytest.approx([1 / 3] * 3 + [1.0, 1.0])
    embedded = CurveReward(replace(cfg, scene_space="embeddings"), **kw)
    assert embedded.weights(np.array([0, 3, 4])).tolist() == pytest.approx([1.0, 0.5, 0.5])
    held = CurveReward(cfg, **kw, thumbs_unlabeled=thumbs, thumbs_labeled=thumbs[:1] + 2e-3)
    assert held.weights(np.array([0, 5])).tolist() == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError, match="thumbnail"):
        CurveReward(cfg, **kw)
    for bad in (
        {"scene_space": "colours"},
        {"pixel_scene_radius": 0.0},
        {"pixel_scene_radius": float("nan")},
    ):
        with pytest.raises(ValueError, match="scene"):
            replace(cfg, **bad)


def test_scene_correlation_counts_a_scene_by_its_effective_number_of_images():
    """Scene 0 holds 2 of the batch's frames and no labeled one, scene 1 one frame and 1 labeled, scene 2
    three frames and 2 labeled. With frames equicorrelated at rho, n frames are worth n / (1 + (n - 1) rho)
    images, and a scene's batch frames share what they add to the labeled ones, by hand at rho = 0.5:
    scene 0 (2 / 1.5) / 2, scene 1 (4/3 - 1), scene 2 (5/3 - 4/3) / 3."""
    scenes, labeled = np.array([0, 0, 1, 2, 2, 2]), np.array([0.0, 1.0, 2.0])
    assert scene_weights(scenes, labeled).tolist() == [0.5, 0.5, 0.5, 0.2, 0.2, 0.2]  # the share rule
    np.testing.assert_allclose(
        scene_weights(scenes, labeled, 0.5), [2 / 3, 2 / 3, 1 / 3, 1 / 9, 1 / 9, 1 / 9]
    )
    assert scene_weights(scenes, labeled, 0.0).tolist() == [1.0] * 6  # independent frames: no discount
    assert scene_weights(scenes, labeled, 1.0).tolist() == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]  # one image a scene
    w = [scene_weights(scenes, labeled, r) for r in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all((a >= b - 1e-12).all() for a, b in zip(w, w[1:]))  # more correlation, less worth
    emb = np.repeat(np.arange(4.0)[:, None] * 100.0, 3, axis=0) + np.tile([[0.0], [0.1], [0.2]], (4, 1))
    kw = dict(
        unlabeled=np.arange(12), counts=np.ones((12, 1)), labeled_counts=np.array([3]), emb_unlabeled=emb
    )
    cfg = CurveConfig(exponent=1.0, duplicates="scenes", radius=0.1)
    share, rho = CurveReward(cfg, **kw), CurveReward(replace(cfg, scene_correlation=0.5), **kw)
    assert len(np.unique(share.scene)) == 4  # four scenes of three frames
    np.testing.assert_allclose(rho.weights(np.array([0, 1, 3])), [2 / 3, 2 / 3, 1.0])
    assert rho(np.array([0, 1, 3])) > share(np.array([0, 1, 3]))  # a second frame is worth more than 1/2
    with pytest.raises(ValueError, match="scene_correlation"):
        CurveConfig(scene_correlation=1.5)


def test_class_counts_and_precision_recall_by_hand(shapes):
    p = _pred([0, 0, 2], [0.9, 0.2, 0.5])
    assert class_counts(p, 3, 0.3).tolist() == [1.0, 0.0, 1.0]
    i = 0
    rec = shapes[i]
    # one detection exactly on each object, plus one false positive of class 0 far away
    boxes = np.concatenate([rec.boxes, [[0, 0, 1, 1]]])
    labels = np.concatenate([rec.labels, [0]])
    pred = _pred(labels, np.full(len(labels), 0.9), boxes)
    precision, recall = precision_recall(shapes, np.array([i]), [pred], 0.5)
    c = shapes.num_classes
    gt = np.bincount(rec.labels, minlength=c)
    det = np.bincount(labels, minlength=c)
    assert np.allclose(recall, (gt + 1) / (gt + 2))  # every object found (add-one smoothed)
    assert np.allclose(precision, (gt + 1) / (det + 2))  # the extra detection is a false positive
    low = precision_recall(shapes, np.array([i]), [pred], 0.95)  # nothing scores that high
    assert np.allclose(low[1], 1 / (gt + 2))


@pytest.fixture(scope="module")
def setting(shapes):
    cfg = load_config(preset="smoke", overrides=["device=cpu"])
    spec = TrainingSpec.from_config(cfg, shapes.num_classes, torch.device("cpu"))
    spec = replace(spec, train=replace(cfg.train, iterations=4))
    pool = Pool.with_initial(len(shapes), np.arange(16))
    view = pool_view(shapes, pool)
    det = Detector(TINY_DET, shapes.num_classes, seed=0)
    train_supervised(det, view, pool.labeled, TINY_TRAIN, seed=0, progress=False)
    inf = det.infer(view, pool.unlabeled, predictions=True, embeddings=True, progress=False)
    return spec, pool, view, inf, det.embed(view, pool.labeled, progress=False)


@pytest.mark.parametrize("calibrate", [False, True])
def test_made_by_the_agent_deterministic_and_leak_free(shapes, setting, tmp_path, calibrate):
    """``make_reward`` from what the strategy sees: the pool view (no unlabeled annotations), the cycle's
    predictions; the calibrated version trains the fold models on the labeled folds only. The oracle
    counts the true objects."""
    spec, pool, view, inf, emb_l = setting
    assert all(len(view[int(i)].boxes) == 0 for i in pool.unlabeled)
    opts = MgralOptions(curve_calibrate=calibrate, curve_threshold=0.05)
    kw = dict(dataset=view, labeled=pool.labeled, unlabeled=pool.unlabeled, seed=0, cycle=0,
              predictions=inf.predictions, emb_unlabeled=inf.embeddings, emb_labeled=emb_l, workdir=tmp_path)  # fmt: skip
    r = make_reward(opts, spec, **kw)
    assert isinstance(r, CurveReward)
    batch = pool.unlabeled[:8]
    assert r(batch) == r(batch[::-1].copy()) == make_reward(opts, spec, **kw)(batch)
    assert r(np.zeros(0, np.int64)) == 0.0 and r(batch) >= 0.0
    if calibrate:
        assert r.base_map is not None and 0.0 <= r.base_map <= 1.0
        assert len(list(tmp_path.glob("reward-fold*.pt"))) == 2  # cross-fitted fold models, cached
    oracle = make_reward(replace(opts, reward="oracle"), spec, **{**kw, "oracle": shapes})
    truth = np.stack(
        [np.bincount(shapes[int(i)].labels, minlength=shapes.num_classes) for i in pool.unlabeled]
    )
    assert np.array_equal(oracle.counts, truth)
    assert opts.estimator_name() == "none" and replace(opts, proxy="head").estimator_name() == "kernel"


def test_the_probe_turns_the_discount_off_on_data_without_duplicates():
    """At a radius that joins chance pairs of i.i.d. images, the probe (a smaller radius, which pairs of
    independent images do not reach and frames of a video do) finds no duplicates in the i.i.d. pool and
    counts every image in full; on the video pool it keeps the discount. A decision passed in is kept."""
    rng = np.random.default_rng(0)
    scenes = rng.normal(size=(60, 64)) * 3
    video = np.repeat(scenes, 5, axis=0) + rng.normal(size=(300, 64)) * 0.5
    iid = rng.normal(size=(300, 64)) * 3
    kw = dict(unlabeled=np.arange(300), counts=np.ones((300, 1)), labeled_counts=np.array([10]))
    wide = CurveConfig(radius=0.85, duplicates="scenes")
    assert (CurveReward(wide, **kw, emb_unlabeled=iid).weights(np.arange(300)) < 1).any()  # chance pairs
    probed = replace(wide, probe=0.3, probe_share=0.1)
    off = CurveReward(probed, **kw, emb_unlabeled=iid)
    assert not off.has_duplicates and off.probe_share < 0.1 and off.emb is None
    assert off.weights(np.arange(300)).tolist() == [1.0] * 300
    assert off(np.arange(10)) == CurveReward(replace(wide, redundancy=False), **kw)(np.arange(10))
    on = CurveReward(replace(probed, radius=0.4), **kw, emb_unlabeled=video)
    assert on.has_duplicates and on.probe_share >= 0.1
    assert on.weights(np.arange(10)).tolist() == [0.2] * 10
    kept = CurveReward(replace(probed, radius=0.4), **kw, emb_unlabeled=video, has_duplicates=False)
    assert kept.weights(np.arange(10)).tolist() == [1.0] * 10
    for bad in ({"probe": -0.1}, {"probe": float("nan")}, {"probe_share": 1.5}):
        with pytest.raises(ValueError, match="probe"):
            replace(probed, **bad)


def _probe_context(setting, tmp_path):
    """A selection context over the module's setting with a fresh strategy state (what the agent's
    ``reward`` reads)."""
    from types import SimpleNamespace

    from mgral.strategies.base import MemoryStore, StrategyState

    spec, pool, view, inf, emb_l = setting
    return SimpleNamespace(workdir=tmp_path, state=StrategyState(MemoryStore(), "s"), training=spec, dataset=view,
                           labeled=pool.labeled, unlabeled=pool.unlabeled, seed=0, cycle=0,
                           predictions=inf.predictions, embeddings_unlabeled=inf.embeddings,
                           embeddings_labeled=emb_l, oracle=None, progress=False)  # fmt: skip


def test_the_agent_s_pixel_scenes_are_the_pool_s_thumbnail_components(setting, tmp_path):
    """``curve_scene_space=pixels``: the agent's reward groups the pool by its images' thumbnails (labeled
    ones included), and the estimators' feature counts those scenes; where the data has no near-duplicates
    no thumbnail is read for scenes and nothing is discounted."""
    from mgral.data.dataset import thumbnails
    from mgral.strategies.rl.agent import MgralStrategy
    from mgral.strategies.rl.curve import _median_distance, _scenes, pixel_scenes

    ctx = _probe_context(setting, tmp_path)
    strategy = MgralStrategy(MgralOptions(curve_probe=0.0, curve_scene_space="pixels"))
    reward = strategy.reward(ctx)  # type: ignore[arg-type]
    assert isinstance(reward, CurveReward) and reward.scene is not None
    tu, tl = thumbnails(ctx.dataset, ctx.unlabeled), thumbnails(ctx.dataset, ctx.labeled)
    scene, held = _scenes(tu, tl, (0.25 * _median_distance(np.concatenate([tu, tl]))) ** 2)
    assert reward.scene.tolist() == scene.tolist() and reward.scene_labeled.tolist() == held.tolist()
    assert [a.tolist() for a in pixel_scenes(tu, tl, 0.25)] == [scene.tolist(), held.tolist()]
    ctx.softmax = None
    feat = strategy.featurizer(ctx, ctx.embeddings_unlabeled, reward)  # type: ignore[arg-type]
    assert feat.groups is not None and feat.groups.tolist() == scene.tolist()
    ctx.state.put("curve/has_duplicates", False)
    ctx.state.put("curve/probe_settings", None)
    probed = MgralStrategy(MgralOptions(curve_scene_space="pixels")).reward(ctx)  # type: ignore[arg-type]
    assert isinstance(probed, CurveReward) and probed.scene is None and probed.emb is None


@pytest.mark.parametrize("probe_on", ["pixels", "embeddings"])
def test_the_agent_decides_on_duplicates_once_and_keeps_it(setting, tmp_path, probe_on):
    """The first selection's probe (on the images' thumbnails, or on the detector's embeddings) decides
    whether the data has near-duplicates; the decision, the probe's share and its settings live in the
    strategy's state (so they survive a resume) and later cycles keep them whatever their embedding. Other
    probe settings (a later annotation round) probe again; a state kept before the settings were keeps its
    decision."""
    from types import SimpleNamespace

    from mgral.strategies.base import MemoryStore, StrategyState
    from mgral.strategies.rl.agent import MgralStrategy

    ctx = _probe_context(setting, tmp_path)
    state = ctx.state
    opts = MgralOptions(curve_probe_on=probe_on)
    strategy = MgralStrategy(opts)
    first = strategy.reward(ctx)  # type: ignore[arg-type]
    assert isinstance(first, CurveReward)
    share = state.get("curve/probe_share")
    assert share == first.probe_share and not np.isnan(share)
    assert state.get("curve/probe_settings") == opts.probe_settings()
    if probe_on == "pixels":  # the share of the data's images, whichever of them a seed labeled first
        every = np.concatenate([ctx.unlabeled, ctx.labeled])
        assert share == data_duplicate_share(ctx.dataset, every[::-1], opts.curve_pixel_probe)
        assert first.has_duplicates == (share >= opts.curve_pixel_probe_share)
    assert state.get("curve/has_duplicates") == first.has_duplicates
    state.put("curve/has_duplicates", not first.has_duplicates)  # as if the first cycle had decided otherwise
    later = strategy.reward(ctx)  # type: ignore[arg-type]
    assert isinstance(later, CurveReward) and later.has_duplicates == (not first.has_duplicates)
    assert (later.emb is not None) == later.has_duplicates and np.isnan(later.probe_share)  # not probed again
    state.put("curve/probe_settings", None)  # a state from before the settings were kept: decision kept
    assert strategy.reward(ctx).has_duplicates == (not first.has_duplicates)  # type: ignore[union-attr]
    # other settings: probed again, and the new decision and settings replace the old
    state.put("curve/probe_settings", opts.probe_settings())
    other = MgralStrategy(replace(opts, curve_pixel_probe_share=0.0, curve_probe_share=0.0))
    again = other.reward(ctx)  # type: ignore[arg-type]
    assert isinstance(again, CurveReward) and again.has_duplicates and not np.isnan(again.probe_share)
    assert state.get("curve/has_duplicates") and state.get("curve/probe_settings")["share"] == 0.0
    never = MgralStrategy(MgralOptions(curve_probe=0.0)).reward(ctx)  # type: ignore[arg-type]
    assert isinstance(never, CurveReward) and never.has_duplicates and never.emb is not None
    if probe_on == "embeddings":  # it needs two unlabeled images' embeddings to run at all
        return
    # the probe's decision is kept even where this cycle's reward cannot discount (one unlabeled image)
    last = SimpleNamespace(**{**vars(ctx), "state": StrategyState(MemoryStore(), "t"),
                              "unlabeled": ctx.unlabeled[:1], "predictions": ctx.predictions[:1],
                              "embeddings_unlabeled": ctx.embeddings_unlabeled[:1]})  # fmt: skip
    alone = other.reward(last)  # type: ignore[arg-type]
    assert isinstance(alone, CurveReward) and not alone.has_duplicates and alone.probe_share >= 0.0
    assert last.state.get("curve/has_duplicates") is True


def test_a_pixel_decision_kept_before_the_order_comparison_is_read_as_its_rule(setting, tmp_path):
    """Pixel-probe settings stored before ``curve_pixel_order_probe`` existed hold no ``order``: they were
    probed without shifts, so they are read as ``order=0``. With that option the stored decision is kept
    (a resumed run selects as it did); with the default, the data is probed again."""
    from mgral.strategies.rl.agent import MgralStrategy

    ctx = _probe_context(setting, tmp_path)
    state = ctx.state
    probed = MgralStrategy(MgralOptions()).reward(ctx)  # type: ignore[arg-type]
    assert isinstance(probed, CurveReward)
    legacy = {"on": "pixels", "radius": 0.1, "share": 0.05}
    state.put("curve/probe_settings", legacy)
    state.put("curve/has_duplicates", not probed.has_duplicates)  # the old rule's decision, say
    old_rule = MgralStrategy(MgralOptions(curve_pixel_order_probe=0.0)).reward(ctx)  # type: ignore[arg-type]
    assert isinstance(old_rule, CurveReward) and old_rule.has_duplicates == (not probed.has_duplicates)
    assert np.isnan(old_rule.probe_share)  # not probed again
    assert state.get("curve/probe_settings") == legacy
    again = MgralStrategy(MgralOptions()).reward(ctx)  # type: ignore[arg-type]
    assert isinstance(again, CurveReward) and again.has_duplicates == probed.has_duplicates
    assert again.probe_share == probed.probe_share and state.get("curve/probe_settings")["order"] == 0.2


def test_the_probe_reads_a_fixed_subset_so_its_share_does_not_grow_with_the_pool():
    """The probe compares the images of a fixed random subset of 1,000 with each other. Searching among all
    N images would find chance neighbours of independent images ever closer as N grows, and the share that
    the thresholds were set on (pools of 1,000) would rise past them on any large pool."""
    rng = np.random.default_rng(0)
    rows = probe_rows(5000)
    assert (
        len(rows) == PROBE_IMAGES
        and np.array_equal(rows, np.sort(rows))
        and np.array_equal(rows, probe_rows(5000))
    )
    assert np.array_equal(probe_rows(300), np.arange(300))  # a small pool: all of it
    # by hand: the share of the subset's rows with another row of the subset within the radius
    z = rng.normal(size=(5000, 3))
    sub = z[rows]
    d = np.linalg.norm(sub[:, None] - sub[None], axis=2) + np.diag(np.full(len(sub), np.inf))
    assert _probe_share(z, 0.05**2) == pytest.approx((d.min(1) <= 0.05).mean())
    # i.i.d. points on a circle (a low-dimensional pool, where chance neighbours come fast): the same share
    # at 1,000 and at 16,000 images, where a search among all images reads 0.99
    circle = rng.normal(size=(16000, 2))
    circle /= np.linalg.norm(circle, axis=1, keepdims=True)
    small, large = _probe_share(circle[:1000], 0.002**2), _probe_share(circle, 0.002**2)
    assert small < 0.5 and abs(large - small) < 0.1
    # pairs of twins: every twin is found in a pool of 1,000, about 1,000 / N of them in a larger one
    twins = rng.normal(size=(2500, 16)) * 3
    pairs = np.concatenate([twins, twins + rng.normal(size=twins.shape) * 0.01])
    assert _probe_share(pairs[np.r_[0:500, 2500:3000]], 0.1**2) == 1.0
    assert 0.1 < _probe_share(pairs, 0.1**2) < 0.3
    assert _probe_share(rng.normal(size=(5000, 16)), 0.1**2) == 0.0
    assert _probe_share(pairs[:1], 1.0) == 0.0


class _Pictures:
    """A stand-in for a dataset: ``load_image(i)`` gives picture ``i`` of an array (the probe reads no
    more)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels, self.read = pixels, 0

    def load_image(self, i: int):
        from PIL import Image

        self.read += 1
        return Image.fromarray(self.pixels[i])


def test_the_pixel_probe_compares_each_image_with_its_neighbours_in_the_pool_s_order():
    """On a pool larger than the probe's subset, a frame's twin is rarely in the subset with it, but frames
    of a video usually sit next to each other in the pool's order: each sampled image is compared with its
    two neighbours too (shifts allowed). A pool of twin pairs in order reads 1; shuffled, about 1,000 / N, as the subset
    alone reads it; independent images read 0 either way. Only the subset and its neighbours are read, and
    the split into labeled and unlabeled images does not matter."""
    rng = np.random.default_rng(0)
    scenes = rng.integers(0, 256, size=(1200, 8, 8), dtype=np.uint8)
    noise = rng.integers(-3, 4, size=(2400, 8, 8))
    pairs = np.clip(np.repeat(scenes.astype(int), 2, axis=0) + noise, 0, 255).astype(np.uint8)
    pool = _Pictures(pairs)
    every = np.arange(2400)
    assert data_duplicate_share(pool, every, 0.1) == 1.0  # type: ignore[arg-type]
    assert pool.read <= 3 * PROBE_IMAGES
    # without shifts too: the comparison on the 8 x 8 thumbnails is kept under the one with shifts
    assert data_duplicate_share(pool, every, 0.1, order_probe=0.0) == 1.0  # type: ignore[arg-type]
    alone = data_duplicate_share(pool, every, 0.1, order=False)  # type: ignore[arg-type]
    assert 0.3 < alone < 0.55  # a twin in the subset: about 999 / 2,399
    shuffled = _Pictures(pairs[rng.permutation(2400)])
    assert abs(data_duplicate_share(shuffled, every, 0.1) - alone) < 0.1  # type: ignore[arg-type]
    iid = _Pictures(rng.integers(0, 256, size=(2400, 8, 8), dtype=np.uint8))
    assert data_duplicate_share(iid, every, 0.1) == 0.0  # type: ignore[arg-type]
    labeled, unlabeled = every[::7], np.setdiff1d(every, every[::7])
    split = np.concatenate([unlabeled, labeled])
    assert data_duplicate_share(pool, split, 0.1) == 1.0  # type: ignore[arg-type]
    assert data_duplicate_share(iid, np.concatenate([every, every]), 0.1) == 0.0  # type: ignore[arg-type]


def test_the_pixel_probe_sees_a_camera_pan_through_the_pool_s_order():
    """A pan moves each frame further than the 8 x 8 thumbnails forgive (real photographs panned by 8 px a
    frame of 128 read 0.000: benchmarks/duplicate_probe_real.py). Each image is also compared with its two
    neighbours in the pool's order, with shifts of up to 2 cells of a 16 x 16 thumbnail: a pan in order is
    seen; its frames shuffled, and independent images, are not; ``order_probe=0`` is the subset alone."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def texture() -> np.ndarray:  # a smooth random picture, 160 x 160
        noise = Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8))
        return np.asarray(noise.resize((160, 160), Image.Resampling.BICUBIC))

    # 40 pans of 10 frames: a 64-px window moving 6 px a frame (1.5 cells of a 16 x 16 thumbnail)
    pan = np.stack(
        [t[40:104, 10 + 6 * f : 74 + 6 * f] for t in (texture() for _ in range(40)) for f in range(10)]
    )
    every = np.arange(len(pan))
    alone = data_duplicate_share(_Pictures(pan), every, 0.1, order=False)  # type: ignore[arg-type]
    assert alone < 0.05  # the 8 x 8 thumbnails alone miss it
    assert data_duplicate_share(_Pictures(pan), every, 0.1, order_probe=0.0) == alone  # type: ignore[arg-type]
    assert data_duplicate_share(_Pictures(pan), every, 0.1) > 0.5  # type: ignore[arg-type]
    shuffled = _Pictures(pan[rng.permutation(len(pan))])
    assert data_duplicate_share(shuffled, every, 0.1) < 0.05  # type: ignore[arg-type]
    iid = _Pictures(np.stack([texture()[40:104, 40:104] for _ in range(len(pan))]))
    assert data_duplicate_share(iid, every, 0.1) == 0.0  # type: ignore[arg-type]
    # blank frames neither match each other nor set the scale: a pan with 50 of them reads as the pan alone
    blank = np.full((50, 64, 64), 90, np.uint8)
    with_blanks = _Pictures(np.concatenate([pan, blank]))
    share = data_duplicate_share(_Pictures(pan), every, 0.1)  # type: ignore[arg-type]
    assert data_duplicate_share(with_blanks, np.arange(len(pan) + 50), 0.1) == share  # type: ignore[arg-type]
    # two flat frames side by side in the pool's order, between textured ones, are no pair; a missing
    # neighbour (the ends of the pool) matches nothing
    grey = np.stack(
        [rng.normal(size=(16, 16)), np.full((16, 16), 7.0), np.full((16, 16), 7.0), rng.normal(size=(16, 16))]
    )
    nan = np.full((16, 16), np.nan)
    neighbours = np.stack([np.stack([nan, grey[1]]), np.stack([grey[0], grey[2]]), np.stack([grey[1], grey[3]]),
                           np.stack([grey[2], nan])])  # fmt: skip
    assert not order_near_duplicates(grey, neighbours, 0.2).any()
    assert order_near_duplicates(grey, np.stack([grey, grey], 1), 0.2)[[0, 3]].all()  # itself: a twin
    # no pool, or one image: nothing to compare
    assert data_duplicate_share(_Pictures(pan), np.zeros(0, np.int64), 0.1) == 0.0  # type: ignore[arg-type]
    assert data_duplicate_share(_Pictures(pan), np.array([3]), 0.1) == 0.0  # type: ignore[arg-type]
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="curve_pixel_order_probe"):
            MgralOptions(curve_pixel_order_probe=bad)
    assert MgralOptions(curve_pixel_order_probe=0.3).probe_settings()["order"] == 0.3


def test_the_pixel_probe_tells_videos_from_independent_images(tmp_path):
    """Frames of a video (shifted by a few pixels, with new noise) are near-duplicates of their thumbnails;
    independent images are not, even of one kind (the i.i.d. digits, where the detector's embedding finds
    duplicates: benchmarks/duplicate_probe.py). At the default probe, the two kinds fall on either side of
    the default share."""
    from mgral.data.dataset import thumbnails
    from mgral.data.synthetic import make_dataset, spec_for

    opts = MgralOptions()
    shares, thumbs = {}, {}
    for name, frames in (("iid", 1), ("video", 3)):
        ds = make_dataset("digits", 240, 0, tmp_path / name, spec_for("easy", image_size=64, frames=frames))
        thumbs[name] = thumbnails(ds, np.arange(len(ds)))
        assert thumbs[name].shape == (240, 64) and np.allclose(np.linalg.norm(thumbs[name], axis=1), 1.0)
        shares[name] = pixel_duplicate_share(thumbs[name], opts.curve_pixel_probe)
    assert shares["iid"] < opts.curve_pixel_probe_share <= shares["video"]
    # flat images (zero thumbnails) are left out: blank frames do not make a pool of duplicates
    flat = np.concatenate([np.zeros((60, 64)), thumbs["iid"]])  # and 60 blank images
    assert pixel_duplicate_share(flat, opts.curve_pixel_probe) == shares["iid"]
    # exact copies count even where they make the median distance 0
    assert pixel_duplicate_share(np.repeat(thumbs["iid"][:2], [3, 2], axis=0), opts.curve_pixel_probe) == 1.0
    with pytest.raises(ValueError, match="curve_probe_on"):
        MgralOptions(curve_probe_on="pixel")  # type: ignore[arg-type]
    for bad in (
        {"curve_pixel_probe": 0.0},
        {"curve_pixel_probe": float("nan")},
        {"curve_pixel_probe_share": 1.5},
    ):
        with pytest.raises(ValueError, match="curve_pixel_probe"):
            MgralOptions(**bad)  # type: ignore[arg-type]

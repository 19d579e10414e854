"""The registered strategy ``mgral``: MGRAL's REINFORCE search over exactly-b batches (paper III-C to III-F).

Per cycle:

1. **Features.** The pool's embeddings are standardised for the policy; a batch featurizer is built from
   the detector's predictions and embeddings (:mod:`.features`).
2. **Table.** ``table_size`` random batches get their true (proxy) reward (:mod:`.reward`) and join the
   records kept from earlier cycles (:class:`~.estimators.Records`); at the first selection, ``presize``
   random sets of each larger size (2b, 3b, ... up to the run's budget) are recorded too — the paper's
   table "for a series of labeled dataset sizes" — so the records span the sizes the run goes through.
3. **Search.** ``iterations`` times: collect an exactly-b rollout of the LSTM policy, take its estimated
   reward (the estimator fitted on the records), or its true reward when the estimator declines and every
   ``true_every`` iterations (those rollouts join the records, so the estimator is corrected where the
   policy goes), and take an Adam step on ``-(reward - baseline) * log pi(rollout)``, the baseline being
   the moving average ``baseline <- decay * baseline + (1 - decay) * reward`` (decay 0.5, after the step).
4. **Final batch.** The maximum of noisy estimates is biased upwards (the winner's curse), so by default
   (``final=rescore``) the ``rescore_top`` best batches seen and the policy's greedy decoding are scored
   with the true reward and the best of those is taken. ``best`` (the highest value seen) and ``greedy``
   (the trained policy decoded) are the alternatives; all three are recorded. Then ``polish_swaps``
   (3,000 by default with the curve reward, 0: none) climb from the chosen batch by swaps with the true reward
   (:func:`~.search.polish`): with scenes, ahead of the old default over 5 seeds on the hard shapes
   (+0.011 AUC, p 0.02) and, not established, on the video-like pool (``docs/design.md``, "The final batch").

The policy's weights carry over from one cycle to the next, and so do the records. Resume: the search's
:class:`~.search.AgentState` goes to ``ctx.state`` every ``checkpoint_every`` iterations; every draw comes
from a generator seeded by ``(seed, cycle, iteration)`` and a reward is a deterministic function of the
batch, so a search killed mid-way and resumed picks the same batch as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mgral.data.dataset import DetectionDataset, thumbnails
from mgral.data.structures import Prediction
from mgral.metrics.voc import evaluate_voc_dataset
from mgral.strategies.base import Selection, SelectionContext, Strategy, TrainingSpec, register_strategy
from mgral.strategies.rl.curve import (
    ORDER_PROBE,
    CurveConfig,
    CurveReward,
    class_counts,
    data_duplicate_share,
    precision_recall,
)
from mgral.strategies.rl.estimators import Estimator, Records, make_estimator
from mgral.strategies.rl.features import (
    BatchFeaturizer,
    CompositionFeaturizer,
    HistogramFeaturizer,
    MeanFeaturizer,
)
from mgral.strategies.rl.policy import LSTMPolicy
from mgral.strategies.rl.reward import ProxyReward, RewardConfig
from mgral.strategies.rl.search import (
    AgentState,
    collect_rollout,
    greedy_batch,
    pick_probabilities,
    polish,
    reinforce_update,
)
from mgral.utils import crash_point, derive_seed, make_dir, progress_bar, rng_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MgralOptions:
    """Options of ``mgral`` (CPU-sized defaults; the presets set the paper's)."""

    iterations: int = 200  # REINFORCE steps per cycle (paper: 2,200 VOC, 800 COCO)
    lr: float = 1e-3  # Adam's learning rate of the policy
    baseline_decay: float = 0.5  # of the moving-average baseline mAP_ref (paper: 0.5)
    table_size: int = 16  # random batches with true rewards per cycle (paper: 200 VOC, 30 COCO)
    presize: int = 2  # at the first selection: random sets per larger size (2b .. the budget), 0 = none
    true_every: int = 10  # every N-th search iteration the rollout's true reward is computed and recorded
    # auto: none (the true reward every iteration) for the curve reward, which is cheaper than any estimate;
    # kernel (best measured on held-out policy batches) for the proxies that train
    estimator: Literal["auto", "ridge", "table", "gp", "kernel", "none"] = "auto"
    neighbours: int = 5  # of the table's inverse-distance estimate
    feature: Literal["composition", "histogram", "mean"] = "composition"  # the batch feature
    clusters: int = 16  # k-means clusters of the batch features
    # greedy: the policy decoded greedily, degenerate with pick probabilities near b / N (it takes the pool's
    # last images; never the best of the re-scored candidates: docs/design.md "The final batch")
    final: Literal["rescore", "best", "greedy"] = "rescore"
    rescore_top: int = 4  # batches re-scored with the true reward for final=rescore (plus the greedy one)
    # swaps of hill climbing of the final batch with the true reward (0: none). None: 3,000 with the curve
    # reward (with curve_duplicates=scenes, ahead of pairs without polishing over 5 seeds: hard shapes
    # +0.011 AUC, p 0.02; video-like pool +0.009, not established; docs/design.md "The final batch"), 0 with
    # a proxy that trains (a swap would cost a training)
    polish_swaps: int | None = None
    reward: Literal["pseudo", "oracle"] = "pseudo"  # oracle: the batch's true labels (simulation only)
    # curve (default, best measured): the mAP change from per-class learning curves and the objects the
    # detector expects in the batch (strategies/rl/curve.py); head / semi / linear: a proxy detector
    # trained with the batch (strategies/rl/reward.py; semi is the paper's semi-supervised detector)
    proxy: Literal["curve", "linear", "head", "semi"] = "curve"
    head_init: Literal["fresh", "fold"] = "fresh"  # head proxy: a fresh head, or the fold model's own
    folds: int = 2  # cross-fitted hold-outs of the labeled set the reward is measured on
    base_iterations: int = 0  # the fold models' training iterations; 0: base_fraction of a cycle's
    base_fraction: float = 1.0
    passes: float = 2.0  # passes of the proxy over the batch
    batch_per_step: int = 8
    labeled_per_step: int = 8
    proxy_lr: float = 0.0  # 0 = the proxy's default
    pseudo_threshold: float = 0.5  # pseudo-boxes from detections scoring at least this
    ignore_threshold: float = 0.2  # ... and ignored regions from those between this and pseudo_threshold
    batch_negatives: bool = False  # linear proxy: pseudo-labeled images also give background anchors
    curve_threshold: float = 0.3  # curve: detections scoring at least this are the batch's objects
    curve_exponent: float = 0.5  # curve: exponent of the per-class learning curve
    curve_calibrate: bool = False  # curve: correct counts by cross-fitted precision/recall (fold models)
    curve_redundancy: bool = True  # curve: near-duplicates (in the batch or labeled) count once
    curve_radius: float = 0.4  # curve: near-duplicate radius, fraction of the median distance of two images
    # curve: an image's duplicates are those within the radius (pairs), or its connected component (scenes)
    curve_duplicates: Literal["pairs", "scenes"] = "scenes"
    # curve: discount only on data with near-duplicates (curve_probe=0: always discount), decided on the
    # first selection, then kept. Where the probe looks: "pixels" (the default since the session of
    # 2026-12-07), at least curve_pixel_probe_share of the images have another within curve_pixel_probe x
    # the median distance of two 8 x 8 grey thumbnails; "embeddings" (the rule before), at least
    # curve_probe_share within curve_probe x the median distance of the detector's embeddings. The pixel
    # probe (with curve_pixel_order_probe: real pans too) decided right on 17 generated kinds of 17 and on
    # 8 held-out kinds of 8 (real, filmed or generated) (benchmarks/duplicate_probe_real.py), the embedding probe on
    # 5 of 7 (it discounts the i.i.d. digits and easy shapes); both agree on the two benchmark pools
    # (docs/design.md, "The curve reward"; benchmarks/duplicate_probe.py)
    curve_probe_on: Literal["pixels", "embeddings"] = "pixels"
    curve_pixel_probe: float = 0.1
    curve_pixel_probe_share: float = 0.05
    # pixels: an image also counts when a neighbour in the pool's order is within this x the median distance
    # of two images' central 12 x 12 of their 16 x 16 thumbnails, shifts of up to 2 cells allowed (camera
    # pans; 0: the rule before it, without shifts)
    curve_pixel_order_probe: float = ORDER_PROBE
    curve_probe: float = 0.25
    curve_probe_share: float = 0.01
    # curve, duplicates=scenes: None, an image's share of its scene; rho in [0, 1], the scene worth its
    # effective number of images with frames equicorrelated at rho (curve.scene_weights)
    curve_scene_correlation: float | None = None
    # curve, duplicates=scenes: the scenes are the components of the images' 8 x 8 grey thumbnails within
    # curve_pixel_scene_radius x their median distance ("pixels", the default since the session of
    # 2026-12-08: closer to the video-like pool's true scenes, adjusted Rand index 0.94-0.95 against
    # 0.51-0.82, and ahead of Core-set there over 10 pre-registered seeds, +0.0055 AUC [+0.0001, +0.0109];
    # benchmarks/RESULTS.md), or of the detector's embeddings within curve_radius x theirs ("embeddings", the
    # rule before). Only where the probe finds near-duplicates; pixels decode every image of the pool once per
    # selection
    curve_scene_space: Literal["embeddings", "pixels"] = "pixels"
    curve_pixel_scene_radius: float = 0.25
    checkpoint_every: int = 1  # save the search state every N iterations

    def __post_init__(self) -> None:
        for key in ("iterations", "table_size", "presize", "true_every", "rescore_top"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.polish_swaps is not None and self.polish_swaps < 0:
            raise ValueError(f"polish_swaps must be >= 0, got {self.polish_swaps}")
        if self.curve_probe_on not in ("pixels", "embeddings"):
            raise ValueError(f"curve_probe_on must be 'pixels' or 'embeddings', got {self.curve_probe_on!r}")
        if not (np.isfinite(self.curve_pixel_probe) and self.curve_pixel_probe > 0):
            raise ValueError(f"curve_pixel_probe must be a positive number, got {self.curve_pixel_probe}")
        if not 0 <= self.curve_pixel_probe_share <= 1:
            raise ValueError(f"curve_pixel_probe_share must be in [0, 1], got {self.curve_pixel_probe_share}")
        if not (np.isfinite(self.curve_pixel_order_probe) and self.curve_pixel_order_probe >= 0):
            raise ValueError(
                f"curve_pixel_order_probe must be a number >= 0, got {self.curve_pixel_order_probe}"
            )
        self.reward_config()  # checks the reward's options
        self.curve_config()

    def swaps(self) -> int:
        """The polishing swaps this configuration makes (``polish_swaps``, or its default for the proxy)."""
        if self.polish_swaps is not None:
            return self.polish_swaps
        return 3000 if self.proxy == "curve" else 0

    def estimator_name(self) -> str:
        if self.estimator != "auto":
            return self.estimator
        return "none" if self.proxy == "curve" else "kernel"

    def probing(self) -> bool:
        """Whether the curve reward's near-duplicate discount is decided by a probe of the data."""
        return self.proxy == "curve" and self.curve_redundancy and self.curve_probe > 0

    def probe_settings(self) -> dict[str, Any]:
        """What a probe's decision depends on besides the data: kept with the decision, which is made again
        when they change (a later annotation round run with other options)."""
        if self.curve_probe_on == "pixels":
            return {"on": "pixels", "radius": self.curve_pixel_probe, "share": self.curve_pixel_probe_share,
                    "order": self.curve_pixel_order_probe}  # fmt: skip
        return {"on": "embeddings", "radius": self.curve_probe, "share": self.curve_probe_share}

    def curve_config(self) -> CurveConfig:
        return CurveConfig(kind=self.reward, threshold=self.curve_threshold, exponent=self.curve_exponent,
                           calibrate=self.curve_calibrate, redundancy=self.curve_redundancy,
                           radius=self.curve_radius, duplicates=self.curve_duplicates, probe=self.curve_probe,
                           probe_share=self.curve_probe_share,
                           scene_correlation=self.curve_scene_correlation,
                           scene_space=self.curve_scene_space,
                           pixel_scene_radius=self.curve_pixel_scene_radius)  # fmt: skip

    def reward_config(self) -> RewardConfig:
        return RewardConfig(kind=self.reward, proxy="head" if self.proxy == "curve" else self.proxy, head_init=self.head_init, folds=self.folds, base_iterations=self.base_iterations, base_fraction=self.base_fraction,
                            passes=self.passes, batch_per_step=self.batch_per_step,
                            labeled_per_step=self.labeled_per_step, lr=self.proxy_lr,
                            pseudo_threshold=self.pseudo_threshold, ignore_threshold=self.ignore_threshold,
                            batch_negatives=self.batch_negatives)  # fmt: skip


def labeled_class_counts(ctx: SelectionContext) -> np.ndarray:
    """Ground-truth objects per class in the labeled set."""
    return class_totals(ctx.dataset, ctx.labeled)


def class_totals(dataset: DetectionDataset, indices: np.ndarray) -> np.ndarray:
    """Objects per class in the ground truth of ``indices`` (labeled images only)."""
    counts = np.zeros(dataset.num_classes, np.int64)
    for i in indices:
        np.add.at(counts, dataset[int(i)].labels, 1)
    return counts


def make_reward(
    opts: MgralOptions, spec: TrainingSpec, *, dataset: DetectionDataset, labeled: np.ndarray,
    unlabeled: np.ndarray, seed: int, cycle: int, predictions: list[Prediction], emb_unlabeled: np.ndarray,
    emb_labeled: np.ndarray, workdir: Path | None = None, oracle: DetectionDataset | None = None,
    progress: bool = False, split_seed: int | None = None, has_duplicates: bool | None = None,
) -> ProxyReward | CurveReward:  # fmt: skip
    """The reward of ``opts.proxy``: a :class:`CurveReward` or a trained :class:`ProxyReward`.

    ``predictions`` (the cycle's detector on ``unlabeled``) give the curve reward its counts; with
    ``curve_calibrate`` they come from the cross-fitted fold models instead, corrected by each fold model's
    precision and recall on its own hold-out, and the classes' hold-out APs saturate the curves."""

    def trained_proxy() -> ProxyReward:  # also the calibrated curve reward's source of fold models
        return ProxyReward(opts.reward_config(), spec, dataset=dataset, labeled=labeled, unlabeled=unlabeled,
                           seed=seed, cycle=cycle, workdir=workdir, oracle=oracle, progress=progress,
                           split_seed=split_seed)  # fmt: skip

    if opts.proxy != "curve":
        return trained_proxy()
    cfg = opts.curve_config()
    pixel_share = float("nan")
    if has_duplicates is None and opts.probing() and opts.curve_probe_on == "pixels":
        # pixels only: no label is read
        pixel_share = data_duplicate_share(
            dataset, np.concatenate([unlabeled, labeled]), opts.curve_pixel_probe,
            order_probe=opts.curve_pixel_order_probe,
        )  # fmt: skip
        has_duplicates = pixel_share >= opts.curve_pixel_probe_share
        log.info("mgral: %.1f%% of the probed images have a near-duplicate (pixels): %s", 100 * pixel_share,
                 "scenes of near-duplicates count once" if has_duplicates else "every image counts in full")  # fmt: skip
    c = dataset.num_classes
    ap = None
    if cfg.kind == "oracle":
        assert oracle is not None, "the oracle reward needs the ground truth of the pool (simulation only)"
        counts = np.stack([np.bincount(oracle[int(i)].labels, minlength=c)[:c] for i in unlabeled]).astype(
            float
        )
    elif cfg.calibrate:
        per_fold, aps = [], []
        proxy = trained_proxy()
        for fold in proxy.folds:
            model = proxy.fold_model(fold)
            held = model.predict(dataset, fold.holdout, progress=False)
            precision, recall = precision_recall(dataset, fold.holdout, held, cfg.threshold)
            # per-class AP for the curves' saturation: VOC all-point AP whatever the loop's metric (the
            # COCO statistics have no per-class AP)
            aps.append(evaluate_voc_dataset(dataset, fold.holdout, held, use_07=False)["AP"])
            pool = model.predict(dataset, unlabeled, progress=False)
            per_fold.append(
                np.stack([class_counts(p, c, cfg.threshold) for p in pool]) * (precision / recall)
            )
        counts = np.mean(per_fold, axis=0)
        ap = np.nanmean([[np.nan if v is None else v for v in a.values()] for a in aps], axis=0)
    else:
        counts = (
            np.stack([class_counts(p, c, cfg.threshold) for p in predictions])
            if len(predictions)
            else np.zeros((0, c))
        )
    thumbs: dict[str, np.ndarray] = {}
    if (
        cfg.redundancy
        and cfg.duplicates == "scenes"
        and cfg.scene_space == "pixels"
        and has_duplicates is not False
    ):
        # pixels only: no label is read
        thumbs = {
            "thumbs_unlabeled": thumbnails(dataset, unlabeled),
            "thumbs_labeled": thumbnails(dataset, labeled),
        }
    reward = CurveReward(cfg, unlabeled=unlabeled, counts=counts, labeled_counts=class_totals(dataset, labeled),
                         ap=ap, emb_unlabeled=emb_unlabeled, emb_labeled=emb_labeled,
                         has_duplicates=has_duplicates, **thumbs)  # fmt: skip
    if not np.isnan(pixel_share):
        reward.probe_share = pixel_share
    return reward


@register_strategy
class MgralStrategy(Strategy):
    """Mean-AP guided reinforced selection (see the module docstring)."""

    name = "mgral"
    needs = frozenset({"predictions", "embeddings", "training"})  # + oracle, by the options
    Options = MgralOptions
    options: MgralOptions

    def __init__(self, options: MgralOptions | None = None) -> None:
        super().__init__(options)
        needs = {"predictions", "embeddings", "training"}
        if self.options.reward == "oracle":
            needs.add("oracle")
        self.needs = frozenset(needs)

    # ------------------------------------------------------------------ parts
    def featurizer(
        self, ctx: SelectionContext, emb: np.ndarray, reward: ProxyReward | CurveReward | None = None
    ) -> BatchFeaturizer:
        """The batch feature of the estimators; given the curve reward with its scenes (``reward``), the
        composition also counts each scene once, as the reward counts it."""
        opts = self.options
        if opts.feature == "mean":
            return MeanFeaturizer(emb)
        if opts.feature == "histogram":
            return HistogramFeaturizer(emb, opts.clusters, ctx.seed)
        # pseudo-objects counted as the reward counts them: on the curve reward's own policy batches this
        # threshold raised ridge's Spearman from 0.41 to 0.52 and the GP's from 0.25 to 0.49 (means over five
        # searches, chosen on one; benchmarks/reward_fidelity.py estimators, docs/design.md "The look-up table")
        threshold = opts.curve_threshold if opts.proxy == "curve" else opts.pseudo_threshold
        # ... and each scene once, as the reward counts it: on the search chosen on, ridge's Spearman 0.977
        # -> 0.987 (benchmarks/RESULTS.md, session of 2026-12-03, fifth)
        groups: dict[str, Any] = {}
        if opts.proxy == "curve" and isinstance(reward, CurveReward) and reward.scene is not None:
            groups = {"groups": reward.scene, "groups_labeled": reward.scene_labeled, "discount": True,
                      "correlation": opts.curve_scene_correlation}  # fmt: skip
        return CompositionFeaturizer(ctx.embeddings_unlabeled, ctx.embeddings_labeled, ctx.predictions,
                                     labeled_class_counts(ctx), softmax=ctx.softmax, threshold=threshold,
                                     clusters=opts.clusters, seed=ctx.seed, **groups)  # fmt: skip

    def estimator(self) -> Estimator:
        return make_estimator(self.options.estimator_name(), self.options.neighbours)

    def reward(self, ctx: SelectionContext) -> ProxyReward | CurveReward:
        """The cycle's reward. With ``curve_probe``, whether the data has near-duplicates is decided by the
        first selection's probe (on the images' thumbnails, or on the detector's embeddings) and kept in the
        strategy's state with the probe's share and settings: it is a property of the data, and the reward's
        form should not change between cycles with the detector's embedding. With other probe settings (a
        later annotation round), the data is probed again."""
        opts = self.options
        if ctx.workdir is not None:
            make_dir(ctx.workdir)
        decided = None
        if opts.probing() and ctx.state.get("curve/has_duplicates") is not None:
            stored = ctx.state.get("curve/probe_settings")  # None: a state written before it was kept
            if isinstance(stored, dict) and stored.get("on") == "pixels" and "order" not in stored:
                stored = {**stored, "order": 0.0}  # kept before the comparison with shifts: the rule then
            if stored is None or stored == opts.probe_settings():
                decided = bool(ctx.state.get("curve/has_duplicates"))
            else:
                log.info("mgral: the duplicate probe's options changed (%s, were %s): probing again",
                         opts.probe_settings(), stored)  # fmt: skip
        reward = make_reward(opts, ctx.training, dataset=ctx.dataset, labeled=ctx.labeled,
                             unlabeled=ctx.unlabeled, seed=ctx.seed, cycle=ctx.cycle, predictions=ctx.predictions,
                             emb_unlabeled=ctx.embeddings_unlabeled, emb_labeled=ctx.embeddings_labeled,
                             workdir=ctx.workdir, oracle=ctx.oracle if opts.reward == "oracle" else None,
                             progress=ctx.progress, has_duplicates=decided)  # fmt: skip
        # a probe ran (redundancy on, a pool of more than one image): its first decision is kept. The
        # decision is the probe's, not whether this cycle's reward discounts (it cannot with one image left)
        if isinstance(reward, CurveReward) and not np.isnan(reward.probe_share) and decided is None:
            ctx.state.put("curve/has_duplicates", bool(reward.probe_share >= opts.probe_settings()["share"]))
            ctx.state.put("curve/probe_share", reward.probe_share)
            ctx.state.put("curve/probe_settings", opts.probe_settings())
        return reward

    def presizes(self, ctx: SelectionContext, budget: int) -> list[int]:
        """Sizes of the first selection's extra records: 2b, 3b, ... while they fit in the pool."""
        if self.options.presize == 0 or ctx.cycle != 0 or ctx.state.get("records") is not None:
            return []
        return [k * budget for k in range(2, 8) if k * budget <= len(ctx.unlabeled) // 2][:3]

    # ------------------------------------------------------------------ select
    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        opts = self.options
        t0 = time.perf_counter()
        raw = ctx.embeddings_unlabeled.astype(np.float64)
        emb_np = ((raw - raw.mean(0)) / (raw.std(0) + 1e-6)).astype(np.float32)
        emb, n = torch.as_tensor(emb_np), len(emb_np)
        reward_fn = self.reward(ctx)
        featurize = self.featurizer(ctx, emb_np, reward_fn)
        key = f"search/cycle{ctx.cycle}"

        saved = ctx.state.get(key)
        policy = LSTMPolicy(seed=derive_seed(ctx.seed, "policy"))
        if saved is not None:
            state = AgentState.from_dict(saved)
            assert state.policy is not None
            policy.load_state_dict(state.policy)
            log.info("mgral: resuming the search of cycle %d at iteration %d", ctx.cycle + 1, state.iteration)
        else:
            carried = ctx.state.get("policy")  # the previous cycle's trained policy
            if carried is not None:
                policy.load_state_dict(carried)
            policy.set_budget_prior(budget, n)
            previous = ctx.state.get("records")
            state = AgentState(records=previous if previous is not None else Records().state_dict(),
                               presizes=self.presizes(ctx, budget))  # fmt: skip
        opt = torch.optim.Adam(policy.parameters(), lr=opts.lr)
        if state.optimizer is not None:
            opt.load_state_dict(state.optimizer)
        records = Records.from_state(state.records)
        estimator = self.estimator()
        estimator.fit(records)

        def checkpoint() -> None:
            ctx.state.put(key, replace(state, policy=policy.state_dict(), optimizer=opt.state_dict(),
                                       records=records.state_dict()).to_dict())  # fmt: skip

        def true_reward(positions: np.ndarray) -> float:
            """The proxy reward of a batch of positions, computed once per batch and cycle."""
            k = ",".join(map(str, np.sort(positions).tolist()))
            if k not in state.truths:
                state.true_calls += 1
                state.truths[k] = reward_fn(ctx.unlabeled[positions])
            return state.truths[k]

        # -------------------------------------------------------------- records: random batches (and sizes)
        t_setup = time.perf_counter()
        reward_fn.prepare()  # the fold models: set-up, like the table
        plan = [(budget, j) for j in range(opts.table_size)]
        plan += [(size, j) for size in state.presizes for j in range(opts.presize)]
        with progress_bar(len(plan), "mgral table", enabled=ctx.progress, initial=state.table_filled) as bar:
            while state.table_filled < len(plan):
                size, j = plan[state.table_filled]
                pos = np.sort(
                    rng_for(ctx.seed, "table", ctx.cycle, size, j).choice(n, size=size, replace=False)
                )
                records.add(
                    featurize(pos), true_reward(pos), ctx.cycle, "random" if size == budget else "presize"
                )
                state.table_filled += 1
                crash_point("mgral-table")
                bar.update(1)
                checkpoint()
        estimator.fit(records)
        offset = records.offset(ctx.cycle)
        setup_s = time.perf_counter() - t_setup
        if state.baseline is None:
            state.baseline = 0.0  # rewards are centred on the cycle's random records

        # -------------------------------------------------------------- REINFORCE
        with progress_bar(
            opts.iterations, "mgral search", enabled=ctx.progress, initial=state.iteration
        ) as bar:
            while state.iteration < opts.iterations:
                t = state.iteration
                rollout, pos = collect_rollout(
                    policy, emb, budget, rng_for(ctx.seed, "rollout", ctx.cycle, t).random(n)
                )
                feat = featurize(pos)
                value, kind = estimator.estimate(feat), opts.estimator_name()
                if value is None or (opts.true_every and (t + 1) % opts.true_every == 0):
                    truth = true_reward(pos)
                    if value is not None:  # the estimate of a policy batch next to its true reward
                        state.fidelity.append([float(value), truth - offset])
                    records.add(feat, truth, ctx.cycle, "policy")
                    estimator.fit(records)
                    value, kind = truth - offset, "true"
                state.baseline = reinforce_update(
                    policy, opt, emb, rollout, value, state.baseline, opts.baseline_decay
                )
                state.remember(pos.tolist(), float(value), kind, keep=max(opts.rescore_top, 1))
                state.history.append(
                    {"reward": float(value), "kind": kind, "baseline": float(state.baseline)}
                )
                state.iteration = t + 1
                crash_point("mgral-search")
                bar.update(1)
                bar.set_postfix(reward=f"{value:+.4f}", baseline=f"{state.baseline:+.4f}")
                if opts.checkpoint_every and state.iteration % opts.checkpoint_every == 0:
                    checkpoint()
        checkpoint()

        # -------------------------------------------------------------- final batch
        greedy = greedy_batch(policy, emb, budget)
        greedy_est = estimator.estimate(featurize(greedy))
        best = np.asarray(state.best[0]["positions"], np.int64) if state.best else greedy
        rescored: list[dict[str, Any]] = []
        chosen = best if opts.final == "best" else greedy
        if opts.final == "rescore":
            candidates = [np.asarray(c["positions"], np.int64) for c in state.best[: opts.rescore_top]] + [
                greedy
            ]
            for c in candidates:
                rescored.append({"batch": ctx.unlabeled[c].tolist(), "true": true_reward(c) - offset})
            chosen = candidates[int(np.argmax([r["true"] for r in rescored]))]
            checkpoint()
        # climb from it with the exact reward (not cached in the state: it is deterministic)
        polished, swaps = None, opts.swaps()
        if swaps:
            chosen, polished = polish(lambda p: reward_fn(ctx.unlabeled[p]), chosen, n, swaps,
                                      rng_for(ctx.seed, "polish", ctx.cycle))  # fmt: skip
        probs = pick_probabilities(policy, emb, chosen)
        ctx.state.put("policy", {k: v.clone() for k, v in policy.state_dict().items()})
        ctx.state.put("records", records.state_dict())
        kinds = [h["kind"] for h in state.history]
        info: dict[str, Any] = {
            "final": opts.final, "best_value": state.best[0]["value"] if state.best else None,
            "greedy_estimate": greedy_est, "best_batch": ctx.unlabeled[best].tolist(),
            "greedy_batch": ctx.unlabeled[greedy].tolist(), "rescored": rescored, "records": len(records),
            "polish": polished,
            "true_rewards": state.true_calls, "estimates": len(kinds) - kinds.count("true"),
            "base_map": reward_fn.base_map, "offset": offset, "rewards": [h["reward"] for h in state.history],
            "kinds": kinds, "fidelity": state.fidelity, "setup_s": setup_s, "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        # whether near-duplicates were discounted, and the probe's share
        if isinstance(reward_fn, CurveReward):
            info["duplicates"] = {
                "discounted": reward_fn.emb is not None,
                "probe": opts.curve_probe_on if opts.probing() else None,
                "probe_share": ctx.state.get("curve/probe_share") if opts.probing() else None,
            }
            if reward_fn.scene is not None:  # the reward's scenes: how many, and how many the batch reaches
                batch_scenes = np.unique(reward_fn.scene[chosen])
                info["duplicates"]["scenes"] = {
                    "space": opts.curve_scene_space, "pool": int(len(reward_fn.scene_labeled)),
                    "batch": int(len(batch_scenes)),
                    "new": int((reward_fn.scene_labeled[batch_scenes] == 0).sum()),
                }  # fmt: skip
        log.info("mgral: cycle %d search done: %d iterations, %d true rewards, %d records", ctx.cycle + 1,
                 opts.iterations, state.true_calls, len(records))  # fmt: skip
        order = np.argsort(-probs[chosen], kind="stable")
        return Selection(ctx.unlabeled[chosen[order]], probs[chosen[order]], info)


__all__ = ["MgralOptions", "MgralStrategy"]

"""The true MGRAL reward (paper III-D): the mAP change a proxy detector shows when trained with the batch.

The paper: "we combine the current labeled dataset with the newly selected unlabeled samples. A new
detector is then trained on this combined set", a semi-supervised detector, and the reward is the mAP
change. What mgral makes of it (``docs/design.md`` gives the reasons and the measurements):

* **Cross-fitted hold-outs.** The labeled images are split into ``folds`` folds (seeded by
  ``(seed, cycle)``). For each fold a *fold model* is trained with the run's recipe on the other folds
  only; the proxy starts from it and is measured on its fold, which it has never trained on. The reward
  averages the folds. Nothing that saw a fold's labels touches that fold's measurement.
* **The batch is the proxy's unlabeled input.** ``proxy=semi`` (the paper's): the fold model is trained
  on its labeled images plus the candidate batch as unlabeled data with the semi-supervised objective
  (ISD for SSD-style, SED for RetinaNet-style detectors). ``proxy=head``: the batch's images get
  pseudo-labels from the fold model (the teacher) and a *fresh* detection head is trained on the fold
  model's frozen, cached features with the labeled images plus the pseudo-labeled batch — the student is
  distinct from the teacher that labels for it, and it is cheap. Hard pseudo-labels have an ignore band:
  detections scoring between ``ignore_threshold`` and ``pseudo_threshold`` are neither object nor
  background. ``kind=oracle`` gives the batch its true labels instead (an ablation, simulation only).
* **Every image of the batch contributes.** The proxy makes ``passes`` passes over the batch,
  ``batch_per_step`` batch images per step beside ``labeled_per_step`` labeled ones; the order of the batch's
  images is keyed by image (:func:`~mgral.data.torch_data.keyed_batch_schedule`) and everything else (the
  labeled minibatches, the fresh head's initial weights) is the same for every batch of the cycle: common
  random numbers, so two batches' rewards differ by what they hold.
* **A paired control.** The reward is the proxy's metric minus that of the same run with an empty batch
  (same steps, same labeled minibatches), i.e. the paper's mAP change; an empty batch scores exactly 0.
* **The metric follows the loop's**: all-point VOC AP for ``voc07`` and ``voc`` loops (the 11-point
  interpolation is coarse on a few dozen held-out images), COCO AP for ``coco``.

A reward is a deterministic function of the batch (same batch, same value), which the exact resume of a
search relies on.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mgral.config import TrainConfig
from mgral.data.dataset import DetectionDataset
from mgral.data.structures import Prediction
from mgral.data.torch_data import batch_schedule, keyed_batch_schedule, target_for
from mgral.detectors.detector import Detector
from mgral.metrics.evaluate import evaluate_predictions
from mgral.strategies.base import TrainingSpec
from mgral.strategies.rl.linear_proxy import LinearHead
from mgral.training.engine import fit, num_iterations
from mgral.training.head_only import FeatureCache, HeadOnly
from mgral.training.semi_supervised import semi_objective
from mgral.training.supervised import TwoStream, train_supervised
from mgral.utils import derive_seed, rng_for, stable_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardConfig:
    kind: Literal["pseudo", "oracle"] = "pseudo"  # oracle: the batch's true labels (simulation only)
    proxy: Literal["linear", "head", "semi"] = "head"  # see the module docstring
    head_init: Literal["fresh", "fold"] = "fresh"  # head proxy: a fresh head, or the fold model's own
    folds: int = 2  # cross-fitted hold-outs of the labeled set
    base_iterations: int = 0  # training iterations of the fold models; 0: base_fraction of the run's
    base_fraction: float = 1.0  # ... the fold models train for this fraction of a cycle's iterations
    passes: float = 2.0  # passes of the proxy over the batch
    batch_per_step: int = 8  # batch images per proxy step
    labeled_per_step: int = 8  # labeled images per proxy step
    lr: float = 0.0  # 0 = the default of the proxy: Adam 1e-2 for a fresh head, the run's lr for semi
    pseudo_threshold: float = 0.5  # pseudo-boxes: detections scoring at least this
    ignore_threshold: float = 0.2  # detections between this and pseudo_threshold are ignored regions
    batch_negatives: bool = False  # linear proxy: pseudo-labeled batch images also give background anchors
    cache_mb: int = 2048  # backbone features kept in memory (head proxy)

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if not 0 <= self.ignore_threshold <= self.pseudo_threshold <= 1:
            raise ValueError("need 0 <= ignore_threshold <= pseudo_threshold <= 1")
        if self.passes <= 0 or self.batch_per_step < 1 or self.labeled_per_step < 1:
            raise ValueError("passes, batch_per_step and labeled_per_step must be positive")


def reward_metric(loop_metric: str) -> str:
    """The metric of the reward: COCO AP on COCO loops, all-point VOC AP otherwise."""
    return "coco" if loop_metric == "coco" else "voc"


def pseudo_target(pred: Prediction, hi: float, lo: float) -> dict[str, torch.Tensor]:
    """A torchvision target from detections: boxes scoring ``>= hi`` are objects, those in ``[lo, hi)``
    are ignored regions (``ignore_boxes``); labels shifted by one (0 = background)."""
    obj, ign = pred.scores >= hi, (pred.scores >= lo) & (pred.scores < hi)
    return {
        "boxes": torch.as_tensor(pred.boxes[obj], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(pred.labels[obj] + 1, dtype=torch.int64),
        "ignore_boxes": torch.as_tensor(pred.boxes[ign], dtype=torch.float32).reshape(-1, 4),
    }


class _Fold:
    """One cross-fitted fold: its labeled training images, its hold-out, its model and what hangs on it."""

    def __init__(self, k: int, train: np.ndarray, holdout: np.ndarray) -> None:
        self.k, self.train, self.holdout = k, train, holdout
        self.model: Detector
        self.cache: FeatureCache
        self.head_state: dict[str, torch.Tensor]
        self.fresh_head: dict[str, torch.Tensor]
        self.linear: LinearHead
        self.targets: dict[int, dict[str, torch.Tensor]] = {}
        self.controls: dict[int, float] = {}  # batch size -> metric of the run with an empty batch


class ProxyReward:
    """``reward(batch) -> float``: the proxy's metric change from adding ``batch`` (see the module docstring).

    Construction records the inputs only; :meth:`prepare` trains (or loads from ``workdir``, when trained
    on the same labeled split with the same settings) the fold models and builds what the proxy needs.
    """

    def __init__(
        self, cfg: RewardConfig, spec: TrainingSpec, *, dataset: DetectionDataset, labeled: np.ndarray,
        unlabeled: np.ndarray, seed: int, cycle: int, workdir: Path | None = None,
        oracle: DetectionDataset | None = None, progress: bool = False, split_seed: int | None = None,
    ) -> None:  # fmt: skip
        if cfg.kind == "oracle" and oracle is None:
            raise ValueError("the oracle reward needs the ground truth of the pool (simulation only)")
        if len(labeled) < 2 * cfg.folds:
            raise ValueError(f"the reward's {cfg.folds} folds need at least {2 * cfg.folds} labeled images")
        self.cfg, self.spec, self.dataset, self.seed, self.cycle = cfg, spec, dataset, seed, cycle
        self.labeled, self.unlabeled = np.sort(np.asarray(labeled)), np.asarray(unlabeled)
        self.workdir, self.oracle, self.progress = workdir, oracle, progress
        self.metric = reward_metric(spec.metric)
        split = seed if split_seed is None else split_seed
        perm = rng_for(split, "reward-folds", cycle).permutation(self.labeled)
        parts = np.array_split(perm, cfg.folds)
        self.folds = [
            _Fold(k, np.sort(np.concatenate([p for j, p in enumerate(parts) if j != k])), np.sort(parts[k]))
            for k in range(cfg.folds)
        ]
        self.calls = 0
        self.base_map: float | None = None
        self._ready = False

    # ------------------------------------------------------------------ set-up
    def fingerprint(self, fold: _Fold) -> str:
        """What a fold model depends on: its training images, the settings and the seeds."""
        parts = (fold.train.tolist(), self.fold_iterations(fold), repr(self.spec.train), repr(self.spec.detector),
                 self.seed, self.cycle, fold.k)  # fmt: skip
        return f"{stable_hash(json.dumps(parts, default=str)):016x}"

    def fold_iterations(self, fold: _Fold) -> int:
        if self.cfg.base_iterations:
            return self.cfg.base_iterations
        return max(1, round(self.cfg.base_fraction * num_iterations(self.spec.train, len(fold.train))))

    def fold_model(self, fold: _Fold) -> Detector:
        """The fold's model: trained on the fold's training images, or loaded when trained before."""
        spec = self.spec
        det = Detector(
            spec.detector, spec.num_classes, seed=derive_seed(self.seed, "init"), device=spec.device
        )
        key = self.fingerprint(fold)
        ckpt = self.workdir / f"reward-fold{fold.k}-{key}.pt" if self.workdir else None
        if ckpt is not None and ckpt.is_file():  # trained before on this very split with these settings
            det.load(ckpt)
            return det
        cfg = replace(spec.train, iterations=self.fold_iterations(fold), checkpoint_every=0)
        log.info(
            "reward: fold model %d on %d labeled images (%d held out)",
            fold.k,
            len(fold.train),
            len(fold.holdout),
        )
        train_supervised(det, self.dataset, fold.train, cfg, seed=derive_seed(self.seed, "reward-fold", self.cycle,
                                                                              fold.k), progress=self.progress)  # fmt: skip
        if ckpt is not None:
            det.save(ckpt)
        return det

    def prepare(self) -> None:
        """Train (or load) the fold models; cache features, pseudo-labels and the paired controls."""
        if self._ready:
            return
        cfg = self.cfg
        for fold in self.folds:
            fold.model = self.fold_model(fold)
            for i in fold.train:
                fold.targets[int(i)] = target_for(self.dataset, int(i))
            if cfg.proxy in ("head", "linear"):
                fold.cache = FeatureCache(fold.model, self.dataset, cache_mb=cfg.cache_mb)
            if cfg.proxy == "linear":
                fold.linear = LinearHead(fold.model, fold.cache, self.dataset)
                fold.linear.standardise([int(i) for i in fold.train], fold.targets)
                fold.head_state = {}
            elif cfg.proxy == "head":
                head = fold.model.module.head
                fold.head_state = copy.deepcopy(head.state_dict())
                fresh = copy.deepcopy(head)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(self.seed, "reward-head", self.cycle, fold.k))
                    for mod in fresh.modules():
                        if hasattr(mod, "reset_parameters") and mod is not fresh:
                            mod.reset_parameters()
                fold.fresh_head = copy.deepcopy(fresh.state_dict())
            else:
                fold.head_state = copy.deepcopy(fold.model.model.state_dict())
            if cfg.kind == "oracle":
                assert self.oracle is not None
                for i in self.unlabeled:
                    fold.targets[int(i)] = target_for(self.oracle, int(i))
            elif cfg.proxy in (
                "head",
                "linear",
            ):  # the teacher: the fold model, which never saw this fold's labels
                preds = fold.cache.predict(self.unlabeled)
                for i, p in zip(self.unlabeled, preds):
                    fold.targets[int(i)] = pseudo_target(p, cfg.pseudo_threshold, cfg.ignore_threshold)
        self._ready = True
        self.base_map = float(np.mean([self._measure(f) for f in self.folds]))

    # ------------------------------------------------------------------ one proxy run
    def steps_for(self, size: int) -> int:
        """Proxy steps for a batch of ``size`` images (the control of that size runs as many)."""
        return max(1, math.ceil(self.cfg.passes * size / self.cfg.batch_per_step))

    def _measure(self, fold: _Fold) -> float:
        if self.cfg.proxy in ("head", "linear"):
            preds = fold.cache.predict(fold.holdout)
        else:
            preds = fold.model.predict(self.dataset, fold.holdout, progress=False)
        return float(evaluate_predictions(self.dataset, fold.holdout, preds, self.metric)[0])

    def _run(self, fold: _Fold, batch: np.ndarray, size: int) -> float:
        """Train the fold's proxy with ``batch`` (possibly empty: the control) for the steps of ``size``."""
        cfg, steps = self.cfg, self.steps_for(size)
        if cfg.proxy == "linear":  # a convex problem solved to its optimum: no steps, no seeds
            parts = [fold.linear.samples(int(i), fold.targets[int(i)], 0) for i in fold.train]
            negatives = cfg.kind == "oracle" or cfg.batch_negatives
            parts += [fold.linear.samples(int(i), fold.targets[int(i)], 1, negatives) for i in batch]
            return fold.linear.evaluate(fold.linear.fit(parts), fold.holdout, self.metric)
        lseed = derive_seed(self.seed, "reward-labeled", self.cycle, fold.k)
        bseed = derive_seed(self.seed, "reward-batch", self.cycle, fold.k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "reward-torch", self.cycle, fold.k))
            if cfg.proxy == "head":
                head = fold.model.module.head
                head.load_state_dict(fold.fresh_head if cfg.head_init == "fresh" else fold.head_state)

                def schedule(it: int) -> list[int]:
                    lab = batch_schedule(fold.train, cfg.labeled_per_step, lseed, it)
                    return lab + (
                        keyed_batch_schedule(batch, cfg.batch_per_step, bseed, it) if len(batch) else []
                    )

                train_cfg = TrainConfig(iterations=steps, optimizer="adam", lr=cfg.lr or 1e-2, weight_decay=0.0,
                                        lr_steps=(0.75,), batch_size=cfg.labeled_per_step)  # fmt: skip
                fit(
                    fold.model, HeadOnly(fold.cache, fold.targets, schedule, steps), train_cfg, progress=False
                )
                value = self._measure(fold)
                head.load_state_dict(fold.head_state)
                return value
            train_cfg = replace(self.spec.train, iterations=steps, batch_size=cfg.labeled_per_step, warmup_iters=0,
                                lr_steps=(), checkpoint_every=0, lr=cfg.lr or self.spec.train.lr)  # fmt: skip
            augment = self.spec.train.augment
            objective: Any
            if (
                len(batch) and cfg.kind == "pseudo"
            ):  # the paper's: the batch as the semi-supervised unlabeled data
                semi = replace(self.spec.semi, unlabeled_batch=max(2, cfg.batch_per_step - cfg.batch_per_step % 2),
                               rampup=0.0, rampdown=0.0)  # fmt: skip
                objective = semi_objective(fold.model, self.dataset, fold.train, batch, semi, seed=lseed, augment=augment,
                                           unlabeled_schedule="keyed", iterations=steps)  # fmt: skip
            else:  # the paired control (empty batch) and the oracle (the batch with its true labels)
                source = self.oracle if len(batch) and self.oracle is not None else self.dataset
                objective = TwoStream(source, fold.train, batch, seed=lseed,
                                      batch_seed=bseed, iterations=steps, batch_per_step=cfg.batch_per_step,
                                      augment=augment)  # fmt: skip
            fit(fold.model, objective, train_cfg, progress=False)
            value = self._measure(fold)
            fold.model.model.load_state_dict(fold.head_state)
            return value

    def control(self, fold: _Fold, size: int) -> float:
        if size not in fold.controls:
            fold.controls[size] = self._run(fold, np.zeros(0, np.int64), size)
        return fold.controls[size]

    def __call__(self, batch: np.ndarray) -> float:
        """The mean over folds of (proxy metric with ``batch``) - (the same with an empty batch)."""
        self.prepare()
        self.calls += 1
        batch = np.sort(np.asarray(batch, np.int64))
        if len(batch) == 0:
            return 0.0
        gains = [self._run(f, batch, len(batch)) - self.control(f, len(batch)) for f in self.folds]
        return float(np.mean(gains))


__all__ = ["ProxyReward", "RewardConfig", "pseudo_target", "reward_metric"]

"""The true MGRAL reward (paper III-D): the mAP of a proxy detector trained with the candidate batch.

Leak-free by default: the batch's images carry pseudo-labels, and the mAP is measured on a held-out part
``V`` of the *labeled* set. The ``oracle`` kind uses the true labels of the batch instead (simulation
only), to measure what pseudo-labels cost.

Making one true reward cheap: a *base* detector is trained once per cycle (:meth:`ProxyReward.prepare`)
on the labeled images minus ``V``; its backbone is frozen and its features cached
(:class:`~mgral.training.head_only.FeatureCache`). A reward then fine-tunes only the head
(:class:`~mgral.training.head_only.HeadOnly`) from the base head on ``(labeled - V) + batch`` and
evaluates on ``V``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mgral.data.dataset import DetectionDataset
from mgral.data.structures import Prediction
from mgral.data.torch_data import target_for
from mgral.detectors.detector import Detector
from mgral.metrics.voc import evaluate_voc_dataset
from mgral.strategies.base import TrainingSpec
from mgral.training.engine import fit
from mgral.training.head_only import FeatureCache, HeadOnly
from mgral.training.semi_supervised import train_semi_supervised
from mgral.training.supervised import train_supervised
from mgral.utils import atomic_write_text, derive_seed, rng_for, stable_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardConfig:
    kind: Literal["pseudo", "oracle"] = "pseudo"
    # the base detector that labels the batch: semi-supervised (ISD/SED) or supervised, both trained on the
    # labeled images minus the hold-out, so no model that saw the hold-out's labels touches the reward
    pseudo_labels: Literal["semi", "supervised"] = "semi"
    holdout: float = 0.2  # fraction of the labeled images held out to measure the reward's mAP
    min_holdout: int = 8
    base_iterations: int = 0  # base detector's training iterations; 0 = the run's train.iterations
    steps: int = 20  # head fine-tuning iterations per true reward
    lr: float = 1e-3  # Adam on the head
    batch_size: int = 16
    pseudo_threshold: float = 0.5
    cache_mb: int = 2048  # backbone features kept in memory; beyond, they are recomputed


class ProxyReward:
    """``reward(batch) -> mAP`` on held-out labeled images of a head fine-tuned with the batch.

    Construction only records the inputs; :meth:`prepare` trains the base detector (or loads it from
    ``workdir`` when it was trained on the same labeled set with the same settings) and caches features.
    """

    def __init__(
        self, cfg: RewardConfig, spec: TrainingSpec, *, dataset: DetectionDataset, labeled: np.ndarray,
        unlabeled: np.ndarray, seed: int, cycle: int, workdir: Path | None = None,
        oracle: DetectionDataset | None = None, progress: bool = False,
    ) -> None:  # fmt: skip
        if cfg.kind == "oracle" and oracle is None:
            raise ValueError("the oracle reward needs the ground truth of the pool (simulation only)")
        self.cfg, self.spec, self.dataset, self.seed, self.cycle = cfg, spec, dataset, seed, cycle
        self.labeled, self.unlabeled = np.asarray(labeled), np.asarray(unlabeled)
        self.workdir, self.oracle, self.progress = workdir, oracle, progress
        n_hold = min(len(labeled) - 1, max(cfg.min_holdout, int(round(cfg.holdout * len(labeled)))))
        perm = rng_for(seed, "reward-holdout", cycle).permutation(self.labeled)
        self.holdout, self.train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        self.calls = 0
        self.base_map: float | None = None
        self._ready = False

    def fingerprint(self) -> str:
        """What the base detector depends on: the labeled split, the pool, the settings and the seed."""
        parts = (self.train.tolist(), self.holdout.tolist(), self.unlabeled.tolist(), asdict(self.cfg),
                 repr(self.spec.train), repr(self.spec.semi), repr(self.spec.detector), self.seed, self.cycle)  # fmt: skip
        return f"{stable_hash(json.dumps(parts, default=str)):016x}"

    def prepare(self) -> None:
        """Train (or load) the base detector, cache features, build the targets and the base mAP."""
        if self._ready:
            return
        cfg, spec = self.cfg, self.spec
        self.base = Detector(
            spec.detector, spec.num_classes, seed=derive_seed(self.seed, "init"), device=spec.device
        )
        ckpt = self.workdir / "reward-base.pt" if self.workdir else None
        stamp = ckpt.with_suffix(".json") if ckpt else None
        key = self.fingerprint()
        if (
            ckpt is not None
            and stamp is not None
            and ckpt.is_file()
            and stamp.is_file()
            and (json.loads(stamp.read_text()).get("fingerprint") == key)
        ):
            self.base.load(ckpt)
        else:
            iters = cfg.base_iterations or spec.train.iterations
            base_cfg = replace(spec.train, iterations=iters) if iters else spec.train
            base_seed = derive_seed(self.seed, "reward-base", self.cycle)
            if cfg.pseudo_labels == "semi":
                log.info("reward: semi-supervised base detector on %d labeled (%d held out) and %d unlabeled images",
                         len(self.train), len(self.holdout), len(self.unlabeled))  # fmt: skip
                train_semi_supervised(self.base, self.dataset, self.train, self.unlabeled, base_cfg, spec.semi,
                                      seed=base_seed, progress=self.progress)  # fmt: skip
            else:
                log.info(
                    "reward: base detector on %d labeled images (%d held out)",
                    len(self.train),
                    len(self.holdout),
                )
                train_supervised(
                    self.base, self.dataset, self.train, base_cfg, seed=base_seed, progress=self.progress
                )
            if ckpt is not None and stamp is not None:
                self.base.save(ckpt)
                atomic_write_text(stamp, json.dumps({"fingerprint": key}) + "\n")
        self.head_state = copy.deepcopy(self.base.module.head.state_dict())
        self.cache = FeatureCache(self.base, self.dataset, cache_mb=cfg.cache_mb)
        self.targets: dict[int, dict[str, torch.Tensor]] = {
            int(i): target_for(self.dataset, int(i)) for i in self.train
        }
        if cfg.kind == "oracle":
            assert self.oracle is not None
            for i in self.unlabeled:
                self.targets[int(i)] = target_for(self.oracle, int(i))
        else:
            preds: list[Prediction] = self.cache.predict(self.unlabeled)
            for i, p in zip(self.unlabeled, preds):
                keep = p.scores >= cfg.pseudo_threshold
                self.targets[int(i)] = {
                    "boxes": torch.as_tensor(p.boxes[keep], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.as_tensor(p.labels[keep] + 1, dtype=torch.int64),
                }
        self._ready = True
        self.base_map = self._evaluate()

    def _evaluate(self) -> float:
        preds = self.cache.predict(self.holdout)
        return float(evaluate_voc_dataset(self.dataset, self.holdout, preds, use_07=True)["mAP"])

    def __call__(self, batch: np.ndarray) -> float:
        """Fine-tune the base head on ``(labeled - V) + batch`` and return its VOC07 mAP on ``V``."""
        self.prepare()
        self.calls += 1
        batch = np.sort(np.asarray(batch, np.int64))
        head: Any = self.base.module.head
        head.load_state_dict(self.head_state)
        pool = np.concatenate([self.train, batch])
        # common random numbers: every batch of the cycle is scored with the same minibatch positions and
        # the same torch seed, so rewards differ by the batch's content rather than by training noise
        rng = np.random.default_rng(derive_seed(self.seed, "reward", self.cycle))
        bs = min(self.cfg.batch_size, len(pool))
        objective = HeadOnly(self.cache, self.targets, lambda it: rng.choice(pool, size=bs, replace=False),
                             self.cfg.steps)  # fmt: skip
        train_cfg = replace(self.spec.train, iterations=self.cfg.steps, optimizer="adam", lr=self.cfg.lr,
                            weight_decay=0.0, lr_steps=(), warmup_iters=0, grad_clip=0.0, amp=False,
                            checkpoint_every=0)  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "reward-torch", self.cycle))
            fit(self.base, objective, train_cfg, progress=False)
        value = self._evaluate()
        head.load_state_dict(self.head_state)
        return value


__all__ = ["ProxyReward", "RewardConfig"]

"""The true MGRAL reward (paper III-D): the mAP of a proxy detector trained with the candidate batch.

Leak-free by default: the batch's images carry pseudo-labels from the cycle's detector (boxes scoring at
least ``pseudo_threshold``), and the mAP is measured on a held-out part ``V`` of the *labeled* set. The
``oracle`` kind uses the true labels of the batch instead (simulation only), to measure what pseudo-labels
cost; it needs the full dataset, which the loop hands over only to a strategy that declares ``oracle``.

Making one true reward cheap: a *base* detector is trained once per cycle on the labeled images minus
``V``; its backbone is frozen and the backbone features of the labeled, held-out and pool images are cached.
A reward then fine-tunes only the detection head, from the base head, for ``steps`` iterations on
``(labeled - V) + batch`` and evaluates on ``V``, all from cached features.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgral.config import SemiConfig
from mgral.data.dataset import DetectionDataset
from mgral.data.torch_data import image_tensor, target_for
from mgral.detectors.detector import Detector, Prediction
from mgral.metrics.voc import evaluate_voc_dataset
from mgral.utils import derive_seed, rng_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardConfig:
    kind: str = "pseudo"  # pseudo | oracle
    pseudo_labels: str = (
        "semi"  # semi: from the semi-supervised base detector | detector: from the cycle's detector
    )
    holdout: float = 0.2  # fraction of the labeled images held out to measure the reward's mAP
    min_holdout: int = 8
    base_iterations: int = 0  # base detector's training iterations; 0 = the run's train.iterations
    steps: int = 20  # head fine-tuning iterations per true reward
    lr: float = 1e-3  # Adam on the head
    batch_size: int = 16
    pseudo_threshold: float = 0.5
    cache_mb: int = 2048  # backbone features kept in memory; beyond, they are recomputed


class ProxyReward:
    """``reward(batch) -> mAP`` on held-out labeled images of a head fine-tuned with the batch."""

    def __init__(
        self,
        cfg: RewardConfig,
        *,
        dataset: DetectionDataset,
        labeled: np.ndarray,
        unlabeled: np.ndarray,
        detector: Detector,
        train_cfg: Any,
        semi_cfg: Any = None,
        seed: int,
        cycle: int,
        workdir: Path | None,
        pseudo_predictions: list[Prediction] | None = None,
        oracle_dataset: DetectionDataset | None = None,
        progress: bool = False,
    ) -> None:  # fmt: skip
        if cfg.kind not in ("pseudo", "oracle"):
            raise ValueError(f"reward kind must be pseudo or oracle, got {cfg.kind!r}")
        if cfg.pseudo_labels not in ("semi", "detector"):
            raise ValueError(f"pseudo_labels must be semi or detector, got {cfg.pseudo_labels!r}")
        if cfg.kind == "oracle" and oracle_dataset is None:
            raise ValueError("the oracle reward needs the ground truth of the pool (simulation only)")
        self.cfg, self.dataset, self.seed, self.cycle = cfg, dataset, seed, cycle
        rng = rng_for(seed, "reward-holdout", cycle)
        n_hold = min(len(labeled) - 1, max(cfg.min_holdout, int(round(cfg.holdout * len(labeled)))))
        perm = rng.permutation(labeled)
        self.holdout, self.train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        device = detector.device
        # the base detector: trained on the labeled images minus the hold-out
        self.base = Detector(
            detector.cfg, detector.num_classes, seed=derive_seed(seed, "init"), device=device
        )
        ckpt = workdir / "reward-base.pt" if workdir else None
        if ckpt is not None and ckpt.is_file():
            self.base.load(ckpt)
        else:
            iters = cfg.base_iterations or train_cfg.iterations
            base_cfg = replace(train_cfg, iterations=iters) if iters else train_cfg
            base_seed = derive_seed(seed, "reward-base", cycle)
            if cfg.pseudo_labels == "semi":
                log.info(
                    "reward: semi-supervised base detector on %d labeled (%d held out) and %d unlabeled images",
                    len(self.train), n_hold, len(unlabeled),
                )  # fmt: skip
                self.base.fit_semi(
                    dataset, self.train, unlabeled, base_cfg, semi_cfg or SemiConfig(), seed=base_seed,
                    progress=progress,
                )  # fmt: skip
            else:
                log.info("reward: base detector on %d labeled images (%d held out)", len(self.train), n_hold)
                self.base.fit(dataset, self.train, base_cfg, seed=base_seed, progress=progress)
            if ckpt is not None:
                self.base.save(ckpt)
        self.head_state = copy.deepcopy(self.base._module.head.state_dict())
        self._cache: dict[int, tuple[list[torch.Tensor], tuple[int, int], tuple[int, int]]] = {}
        self._cache_bytes = 0
        # targets: ground truth for labeled images, pseudo-labels (or the oracle's truth) for the pool
        self.targets: dict[int, dict[str, torch.Tensor]] = {
            int(i): target_for(dataset, int(i)) for i in self.train
        }
        if cfg.kind == "oracle":
            assert oracle_dataset is not None
            for i in unlabeled:
                self.targets[int(i)] = target_for(oracle_dataset, int(i))
        else:
            if cfg.pseudo_labels == "semi":
                preds = self.predict(np.asarray(unlabeled))
            elif pseudo_predictions is not None:
                preds = pseudo_predictions
            else:
                preds = detector.predict(dataset, unlabeled, progress=progress, desc="pseudo-labels")
            for i, p in zip(unlabeled, preds):
                keep = p.scores >= cfg.pseudo_threshold
                self.targets[int(i)] = {
                    "boxes": torch.as_tensor(p.boxes[keep], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.as_tensor(p.labels[keep] + 1, dtype=torch.int64),
                }
        self.calls = 0
        self.base_map = self._evaluate()

    # ------------------------------------------------------------------ features
    def _features(
        self, indices: np.ndarray
    ) -> tuple[list[list[torch.Tensor]], list[tuple[int, int]], list[tuple[int, int]]]:
        missing = [int(i) for i in indices if int(i) not in self._cache]
        once: dict[
            int, tuple[list[torch.Tensor], tuple[int, int], tuple[int, int]]
        ] = {}  # over the cache budget
        for s in range(0, len(missing), 32):
            chunk = missing[s : s + 32]
            feats, sizes, orig = self.base.backbone_features([image_tensor(self.dataset, i) for i in chunk])
            for i, f, sz, o in zip(chunk, feats, sizes, orig):
                nbytes = sum(t.numel() * t.element_size() for t in f)
                if self._cache_bytes + nbytes <= self.cfg.cache_mb * 2**20:
                    self._cache[i] = (f, sz, o)
                    self._cache_bytes += nbytes
                else:
                    once[i] = (f, sz, o)
        out = [self._cache.get(int(i)) or once[int(i)] for i in indices]
        return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]

    def predict(self, indices: np.ndarray) -> list[Prediction]:
        """Predictions of the base detector (its current head) on ``indices``, from cached features."""
        preds: list[Prediction] = []
        for s in range(0, len(indices), 64):
            idx = indices[s : s + 64]
            feats, sizes, orig = self._features(idx)
            preds.extend(self.base.predict_from_features(feats, sizes, orig))
        return preds

    def _evaluate(self) -> float:
        preds = self.predict(self.holdout)
        return float(evaluate_voc_dataset(self.dataset, self.holdout, preds, use_07=True)["mAP"])

    # ------------------------------------------------------------------ reward
    def __call__(self, batch: np.ndarray) -> float:
        """Fine-tune the base head on ``(labeled - V) + batch`` and return its VOC07 mAP on ``V``."""
        self.calls += 1
        batch = np.sort(np.asarray(batch, np.int64))
        head: Any = self.base._module.head
        head.load_state_dict(self.head_state)
        pool = np.concatenate([self.train, batch])
        # common random numbers: every batch of the cycle is scored with the same minibatch positions and
        # the same torch seed, so rewards differ by the batch's content rather than by training noise
        rng = np.random.default_rng(derive_seed(self.seed, "reward", self.cycle))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "reward-torch", self.cycle))
            opt = torch.optim.Adam(head.parameters(), lr=self.cfg.lr)
            head.train()
            for _ in range(self.cfg.steps):
                idx = rng.choice(pool, size=min(self.cfg.batch_size, len(pool)), replace=False)
                feats, sizes, orig = self._features(idx)
                targets = [{k: v.to(self.base.device) for k, v in self.targets[int(i)].items()} for i in idx]
                targets = Detector.scale_targets(targets, sizes, orig)
                losses = self.base.head_losses(feats, sizes, targets)
                loss = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[union-attr]
                opt.step()
            head.eval()
        value = self._evaluate()
        head.load_state_dict(self.head_state)
        return value


__all__ = ["ProxyReward", "RewardConfig"]

"""MI-AOD: multiple instance active object detection (Yuan et al., CVPR 2021), on torchvision's SSD and
RetinaNet.

**Instance uncertainty learning.** Two adversarial instance classifiers ``f1`` (the detector's own
classification head) and ``f2`` (an independent copy) are trained to agree on labeled images and,
alternately, to *disagree* on unlabeled ones (``max`` stage: only ``f1`` and ``f2`` learn) while the
features learn to make them agree there (``min`` stage: everything but ``f1`` and ``f2`` learns): their
disagreement on an anchor becomes its uncertainty.
**Instance uncertainty re-weighting (multiple instance learning).** A third classifier ``f_mil`` scores
each anchor's classes; an anchor's *instance score* is ``softmax_c(f_mil) x softmax_anchors(max_c
p_mean)`` within its feature level (``p_mean`` the mean of ``f1`` and ``f2``'s probabilities, detached),
and the image's class score is the maximum over levels of the sum over anchors, trained by binary
cross-entropy against the image's labels (the ground truth on labeled images; in the ``min`` stage, on
unlabeled images, the classes whose mean probability reaches 0.5 somewhere). The discrepancy on unlabeled
anchors is weighted by these instance scores (detached), so that it concentrates on anchors that matter
for the image's classes.

**Schedule** (the authors' RetinaNet configuration, in fractions of the cycle's iterations): label-set
training (6), then twice ``min`` (2), ``max`` (2), label-set (6) — 26 parts. In the ``min`` and ``max``
stages every step sees a labeled and an unlabeled minibatch (the unlabeled images: a random subset of the
pool as large as the labeled set, drawn per cycle). **Selection**: an anchor's uncertainty is the mean
over classes of ``(p1 - p2)^2``; an image's score is the mean of its ``topk`` largest anchor
uncertainties (10,000 in the paper: every anchor of a small image).

Departures (``docs/design.md``): one optimiser step per iteration on the labeled and unlabeled losses
together (the authors alternate steps); frozen parts are frozen by ``requires_grad`` within one optimiser
rather than a new optimiser per stage; detections and the reported mAP use ``f1`` alone (the authors
average ``f1`` and ``f2``); the classification heads are torchvision's (a tower of convolutions per head
for RetinaNet, one convolution per level for SSD).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from mgral.config import TrainConfig
from mgral.data.dataset import DetectionDataset
from mgral.data.torch_data import collate, inference_loader
from mgral.detectors.detector import Detector
from mgral.detectors.models import build_model
from mgral.strategies.base import ScoringStrategy, SelectionContext, register_strategy
from mgral.training.engine import Objective, num_iterations
from mgral.training.semi_supervised import SemiSampler, SemiSamples
from mgral.utils import derive_seed, rng_for

#: the authors' RetinaNet schedule: (stage, parts); 26 parts in all
SCHEDULE = (("label", 6), ("min", 2), ("max", 2), ("label", 6), ("min", 2), ("max", 2), ("label", 6))


def stage_at(it: int, total: int) -> str:
    """The stage of iteration ``it`` of ``total``."""
    parts = sum(p for _, p in SCHEDULE)
    x, acc = it / max(1, total) * parts, 0
    for stage, p in SCHEDULE:
        acc += p
        if x < acc:
            return stage
    return SCHEDULE[-1][0]


def split_levels(t: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """``[B, sum(A_l), K]`` -> per level ``[B, A_l, K]``."""
    return list(t.split(sizes, dim=1))


class MIALObjective(Objective):
    """The MI-AOD training of one cycle (see the module docstring)."""

    name = "mial"
    f2: nn.Module
    mil: nn.Module

    def __init__(self, dataset: DetectionDataset, labeled: Any, unlabeled: Any, *, seed: int, augment: str = "flip",
                 weight: float = 0.5, unlabeled_batch: int = 8) -> None:  # fmt: skip
        self.dataset, self.labeled, self.seed, self.augment = dataset, labeled, seed, augment
        self.weight, self.ubs = weight, unlabeled_batch
        n = min(len(unlabeled), max(2, len(labeled)))  # X_U: a random part of the pool as large as X_L
        self.unlabeled = np.sort(
            rng_for(seed, "mial-unlabeled").choice(np.asarray(unlabeled), n, replace=False)
        )

    def bind(self, detector: Detector) -> None:
        super().bind(detector)
        heads = []
        for k in ("f2", "mil"):  # independent classifiers, initialised like the detector's own
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, "mial", k))
                twin: Any = build_model(detector.cfg, detector.num_classes)
            heads.append(copy.deepcopy(twin.head.classification_head).to(detector.device))
        self.f2, self.mil = heads

    def modules(self) -> dict[str, nn.Module]:
        return {"f2": self.f2, "mil": self.mil}

    def total_iterations(self, cfg: TrainConfig) -> int:
        return num_iterations(cfg, len(self.labeled))

    def batches(self, cfg: TrainConfig, start: int, stop: int) -> Iterable[Any]:
        ubs = min(self.ubs, len(self.unlabeled) - len(self.unlabeled) % 2)
        sampler = SemiSampler(self.labeled, self.unlabeled, cfg.batch_size, ubs, self.seed, start, stop)
        return DataLoader(SemiSamples(self.dataset, self.augment, self.seed), batch_sampler=sampler,
                          num_workers=cfg.num_workers, collate_fn=collate)  # fmt: skip

    # ------------------------------------------------------------------ pieces
    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Object-class probabilities (background column dropped): softmax for SSD, sigmoids otherwise."""
        return (torch.softmax(logits, -1) if self.detector.softmax else torch.sigmoid(logits))[..., 1:]

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, Any]:
        det = self.detector
        image_list, resized = det.transform(images, targets)
        feats = det.features(image_list.tensors)
        head = det.head(feats)  # f1 (the detector's classification head) and the box regression
        per_loc = det.module.anchor_generator.num_anchors_per_location()
        per_loc = per_loc * len(feats) if len(per_loc) == 1 else per_loc
        sizes = [f.shape[-2] * f.shape[-1] * a for f, a in zip(feats, per_loc)]
        return {"feats": feats, "head": head, "f2": self.f2(feats), "mil": self.mil(feats), "sizes": sizes,
                "anchors": det.anchors(image_list, feats), "targets": resized}  # fmt: skip

    def instance_scores(self, out: dict[str, Any]) -> list[torch.Tensor]:
        """Per level ``[B, A_l, C]``: softmax over classes of f_mil times softmax over the level's anchors of
        the mean classifier's top probability (detached)."""
        mean = 0.5 * (self.probs(out["head"]["cls_logits"]) + self.probs(out["f2"])).detach()
        scores = []
        for m, p in zip(split_levels(out["mil"], out["sizes"]), split_levels(mean, out["sizes"])):
            cls = torch.softmax(m[..., 1:], -1)
            where = torch.softmax(p.max(-1).values, dim=1)[..., None]
            scores.append(cls * where)
        return scores

    def image_loss(self, out: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
        """BCE of the image class scores (max over levels of the summed instance scores) against ``labels``."""
        per_level = torch.stack([s.sum(1) for s in self.instance_scores(out)])
        image = per_level.max(0).values.clamp(1e-5, 1 - 1e-5)
        return F.binary_cross_entropy(image, labels)

    def discrepancy(self, out: dict[str, Any], maximise: bool) -> torch.Tensor:
        """Instance-score-weighted mean-over-classes discrepancy of f1 and f2, summed over anchors."""
        d = (self.probs(out["head"]["cls_logits"]) - self.probs(out["f2"])).abs()
        w = torch.cat(self.instance_scores(out), 1).detach()
        term = (1.0 - d) if maximise else d
        return (term * w).mean(-1).sum(1).mean()

    def _freeze(self, stage: str) -> None:
        f1 = self.detector.module.head.classification_head
        heads = {id(p) for p in (*f1.parameters(), *self.f2.parameters())}
        for p in (*self.detector.model.parameters(), *self.f2.parameters(), *self.mil.parameters()):
            is_head = id(p) in heads
            p.requires_grad_(
                stage == "label" or (stage == "min" and not is_head) or (stage == "max" and is_head)
            )

    # ------------------------------------------------------------------ the loss
    def loss(self, batch: Any, it: int, total: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        stage = stage_at(it, total)
        self._freeze(stage)
        det = self.detector
        lab = [k for k, t in enumerate(targets) if t is not None]
        unl = [k for k, t in enumerate(targets) if t is None]
        out = self.forward([images[k] for k in lab], [targets[k] for k in lab])
        reg = out["head"]["bbox_regression"]
        l1 = det.losses(
            out["targets"], {"cls_logits": out["head"]["cls_logits"], "bbox_regression": reg}, out["anchors"]
        )
        l2 = det.losses(out["targets"], {"cls_logits": out["f2"], "bbox_regression": reg}, out["anchors"])
        losses = {"classification": 0.5 * (l1["classification"] + l2["classification"]),
                  "bbox_regression": l1["bbox_regression"]}  # fmt: skip
        if stage != "max":  # the MIL classifier learns the images' classes
            multi_hot = torch.zeros(len(lab), det.num_classes, device=reg.device)
            for b, t in enumerate(out["targets"]):
                multi_hot[b, t["labels"] - 1] = 1.0
            losses["image_classification"] = self.image_loss(out, multi_hot)
        if stage == "label" or not unl:
            return losses
        u = self.forward([images[k] for k in unl])
        losses["discrepancy"] = self.weight * self.discrepancy(u, maximise=stage == "max")
        if stage == "min":  # pseudo image labels: classes the mean classifier sees somewhere
            mean = 0.5 * (self.probs(u["head"]["cls_logits"]) + self.probs(u["f2"])).detach()
            pseudo = (mean.max(1).values >= 0.5).float()
            if bool((pseudo.sum(1) > 0).all()):
                losses["image_classification_unlabeled"] = self.image_loss(u, pseudo)
        return losses

    # ------------------------------------------------------------------ selection
    @torch.no_grad()
    def uncertainty(
        self, dataset: DetectionDataset, indices: np.ndarray, topk: int = 10000, batch_size: int = 32
    ) -> np.ndarray:
        """Per image: the mean of its ``topk`` largest anchor uncertainties ``mean_c (p1 - p2)^2``."""
        det = self.detector
        det.model.eval()
        self.f2.eval()
        self.mil.eval()
        out = []
        for images in inference_loader(dataset, indices, batch_size, 0):
            o = self.forward([im.to(det.device) for im in images])
            u = ((self.probs(o["head"]["cls_logits"]) - self.probs(o["f2"])) ** 2).mean(-1)
            k = min(topk, u.shape[1])
            out.append(u.topk(k, dim=1).values.mean(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def parameters(self) -> Iterator[nn.Parameter]:
        yield from self.detector.model.parameters()
        yield from self.f2.parameters()
        yield from self.mil.parameters()


@register_strategy
class MIALStrategy(ScoringStrategy):
    """MI-AOD's image uncertainty (see the module docstring)."""

    name = "mial"
    needs = frozenset({"objective"})

    @dataclass(frozen=True)
    class Options:
        weight: float = 0.5  # lambda: the weight of the discrepancy losses
        unlabeled_batch: int = 8  # unlabeled images per step in the min and max stages (even)
        topk: int = 10000  # anchors averaged into an image's uncertainty

        def __post_init__(self) -> None:
            if self.unlabeled_batch < 2 or self.unlabeled_batch % 2:
                raise ValueError(f"unlabeled_batch must be even and >= 2, got {self.unlabeled_batch}")

    def training_objective(self, dataset: DetectionDataset, labeled: np.ndarray, unlabeled: np.ndarray,
                           train: TrainConfig, *, seed: int) -> Objective | None:  # fmt: skip
        return MIALObjective(dataset, labeled, unlabeled, seed=seed, augment=train.augment, weight=self.options.weight,
                             unlabeled_batch=self.options.unlabeled_batch)  # fmt: skip

    def score(self, ctx: SelectionContext) -> np.ndarray:
        objective = ctx.objective
        assert isinstance(objective, MIALObjective)
        return objective.uncertainty(ctx.dataset, ctx.unlabeled, self.options.topk)


__all__ = ["MIALObjective", "MIALStrategy", "stage_at"]

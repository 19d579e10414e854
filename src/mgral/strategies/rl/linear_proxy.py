"""The convex proxy of MGRAL's reward: a linear classification head solved to convergence on a fold model's
frozen anchor features.

A proxy detector trained for a few steps from a random or trained head answers the question "what is this
batch worth" with a lot of training noise: two nearly identical batches send stochastic optimisation down
different paths, and on a few dozen held-out images the mAP of the result moves more between them than
between batches that really differ. Here the student is a linear classifier over the fold model's
features at each anchor (one weight matrix per feature level, one bias per anchor shape: the 1x1 version
of the detector's own classification head), trained with L-BFGS to the optimum of an L2-regularised,
convex loss. The optimum is unique, so the reward is a smooth, deterministic function of what the batch
contributes: its anchors labeled by the teacher (the fold model's pseudo-boxes, with an ignore band) or,
in the oracle ablation, by the ground truth. The fold model's own box regression is kept; the held-out
fold's mAP comes from the detector's post-processing with the linear head's class scores.

Training samples of an image: every anchor matched to one of its boxes (the detector's own matcher), its
hardest unmatched anchors by the teacher's foreground score (``neg_ratio`` per positive, at least
``min_negatives``), and a fixed random sample of the other unmatched anchors weighted up to their number
(so the loss estimates the likelihood over every anchor, easy background included); anchors near an
ignored region are left out. Features are standardised per level with
the statistics of the fold's labeled samples, fixed for the cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.ops import box_iou

from mgral.data.dataset import DetectionDataset
from mgral.detectors.detector import Detector
from mgral.metrics.evaluate import evaluate_predictions
from mgral.training.head_only import FeatureCache


@dataclass
class Samples:
    """The training anchors of one image, per level: features ``float[n, C_l]``, anchor-shape index, target
    class (0 = background; softmax) or class (sigmoid models: 0 = negative for every class)."""

    x: list[torch.Tensor]
    shape: list[torch.Tensor]
    y: list[torch.Tensor]
    w: list[torch.Tensor]


class LinearHead:
    """Per fold: the fold model (frozen), its cached features, per-image samples, solve and evaluate."""

    def __init__(self, detector: Detector, cache: FeatureCache, dataset: DetectionDataset, *, neg_ratio: int = 3,
                 min_negatives: int = 8, random_negatives: int = 48, l2: float = 1e-2, max_iter: int = 100) -> None:  # fmt: skip
        self.det, self.cache, self.dataset = detector, cache, dataset
        self.neg_ratio, self.min_negatives, self.l2, self.max_iter = neg_ratio, min_negatives, l2, max_iter
        self.random_negatives = random_negatives
        m = detector.module
        per_loc = list(m.anchor_generator.num_anchors_per_location())
        self.levels = len(per_loc)
        self.per_loc = per_loc
        self.k = detector.num_probs if detector.softmax else detector.num_classes + 1
        self._samples: dict[tuple[int, int], Samples] = {}
        self._eval: dict[int, tuple] = {}
        self.mean: list[torch.Tensor] = []
        self.std: list[torch.Tensor] = []

    # ------------------------------------------------------------------ anchors of an image
    def _image(self, i: int) -> tuple:
        feats, sizes, orig = self.cache.get([i])
        image_list, levels = self.det.stack_features(feats, sizes)
        anchors = self.det.anchors(image_list, levels)[0]
        return feats[0], sizes, orig, image_list, levels, anchors

    def samples(self, i: int, target: dict[str, torch.Tensor], key: int, negatives: bool = True) -> Samples:
        """The training anchors of image ``i`` under ``target`` (original pixels), cached by ``(i, key)``.
        Without ``negatives``, only the anchors matched to a box (pseudo-labels: an object the teacher
        missed would otherwise be taught as background)."""
        if (i, key) in self._samples:
            return self._samples[(i, key)]
        feats, sizes, orig, image_list, levels, anchors = self._image(i)
        t = Detector.scale_targets([target], sizes, orig)[0]
        m = self.det.module
        with torch.no_grad():
            if t["boxes"].numel():
                matched = m.proposal_matcher(box_iou(t["boxes"], anchors))
            else:
                matched = torch.full((len(anchors),), -1, dtype=torch.long)
            ign = t.get("ignore_boxes")
            ignored = torch.zeros(len(anchors), dtype=torch.bool)
            if ign is not None and ign.numel():
                ignored = (box_iou(ign, anchors).max(0).values >= 0.5) & (matched < 0)
            head = self.det.head(levels)
            teacher = (torch.softmax(head["cls_logits"][0], -1)[:, 1:] if self.det.softmax
                       else torch.sigmoid(head["cls_logits"][0])[:, 1:]).max(-1).values  # fmt: skip
        pos = torch.nonzero(matched >= 0).squeeze(1)
        neg_pool = torch.nonzero((matched < 0) & ~ignored).squeeze(1)
        by_score = neg_pool[torch.argsort(teacher[neg_pool], descending=True, stable=True)]
        n_hard = min(len(by_score), max(self.min_negatives, self.neg_ratio * len(pos))) if negatives else 0
        hard, rest = by_score[:n_hard], by_score[n_hard:]
        # the other negatives are represented by a fixed random sample weighted up to their number, so the
        # loss estimates the likelihood over every anchor (easy background included)
        g = torch.Generator().manual_seed(int(i))
        easy = rest[torch.randperm(len(rest), generator=g)[: self.random_negatives if negatives else 0]]
        chosen = torch.cat([pos, hard, easy])
        labels = torch.zeros(len(chosen), dtype=torch.long)
        labels[: len(pos)] = t["labels"][matched[pos]]
        weights = torch.ones(len(chosen))
        if len(easy):
            weights[len(pos) + len(hard) :] = len(rest) / len(easy)
        out = Samples([], [], [], [])
        start = 0
        for f, a in zip(feats, self.per_loc):
            h, w = f.shape[-2:]
            n = h * w * a
            sel = (chosen >= start) & (chosen < start + n)
            local = chosen[sel] - start
            loc, shape = local // a, local % a
            out.x.append(f.reshape(f.shape[0], -1).T[loc].float())
            out.shape.append(shape)
            out.y.append(labels[sel])
            out.w.append(weights[sel])
            start += n
        self._samples[(i, key)] = out
        return out

    # ------------------------------------------------------------------ the convex problem
    def standardise(self, images: list[int], targets: dict[int, dict[str, torch.Tensor]]) -> None:
        """Fix the per-level feature statistics from these (labeled) images' samples."""
        parts = [self.samples(i, targets[i], 0) for i in images]
        self.mean, self.std = [], []
        for lv in range(self.levels):
            x = torch.cat([p.x[lv] for p in parts]) if parts else torch.zeros(0, 1)
            self.mean.append(x.mean(0) if len(x) else torch.zeros(x.shape[1]))
            self.std.append(x.std(0).clamp_min(1e-3) if len(x) > 1 else torch.ones(x.shape[1]))

    def fit(self, parts: list[Samples]) -> list[torch.Tensor]:
        """The optimum of the regularised loss over ``parts``: per level ``W [K, C_l]`` and ``b [A_l, K]``."""
        xs = [torch.cat([p.x[lv] for p in parts]) for lv in range(self.levels)]
        xs = [(x - mu) / sd for x, mu, sd in zip(xs, self.mean, self.std)]
        shapes = [torch.cat([p.shape[lv] for p in parts]) for lv in range(self.levels)]
        ys = [torch.cat([p.y[lv] for p in parts]) for lv in range(self.levels)]
        ws = [torch.cat([p.w[lv] for p in parts]) for lv in range(self.levels)]
        total = float(max(1.0, sum(float(w.sum()) for w in ws)))
        params = []
        for x, a in zip(xs, self.per_loc):
            params += [
                torch.zeros(self.k, x.shape[1], requires_grad=True),
                torch.zeros(a, self.k, requires_grad=True),
            ]
        opt = torch.optim.LBFGS(params, max_iter=self.max_iter, history_size=20, tolerance_grad=1e-6,
                                line_search_fn="strong_wolfe")  # fmt: skip

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = sum(self.l2 * (params[2 * lv] ** 2).sum() for lv in range(self.levels)) * 0.5
            for lv, (x, s, y) in enumerate(zip(xs, shapes, ys)):
                if not len(y):
                    continue
                logits = x @ params[2 * lv].T + params[2 * lv + 1][s]
                if self.det.softmax:
                    loss = loss + F.cross_entropy(logits, y, reduction="sum") / total
                else:
                    target = F.one_hot(y, self.k).float()
                    loss = (
                        loss
                        + F.binary_cross_entropy_with_logits(logits[:, 1:], target[:, 1:], reduction="sum")
                        / total
                    )
            loss.backward()  # type: ignore[union-attr]
            return loss  # type: ignore[return-value]

        opt.step(closure)
        return [p.detach() for p in params]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, params: list[torch.Tensor], images: np.ndarray, metric: str) -> float:
        """The metric on ``images`` of the fold model with the linear head's class scores."""
        preds = []
        for i in images:
            i = int(i)
            if i not in self._eval:
                feats, sizes, orig, image_list, levels, anchors = self._image(i)
                reg = self.det.head(levels)["bbox_regression"]
                self._eval[i] = (feats, orig, image_list, levels, anchors, reg)
            feats, orig, image_list, levels, anchors, reg = self._eval[i]
            logits = []
            for lv, f in enumerate(feats):
                x = (f.reshape(f.shape[0], -1).T.float() - self.mean[lv]) / self.std[lv]
                z = (x @ params[2 * lv].T)[:, None, :] + params[2 * lv + 1][None]
                logits.append(z.reshape(-1, self.k))
            cls = torch.cat(logits)[None]
            if not self.det.softmax:  # column 0 (background) is never a class for a sigmoid model
                cls[..., 0] = -20.0
            head = {"cls_logits": cls, "bbox_regression": reg}
            preds += self.det.postprocess(head, [anchors], image_list, levels, orig)
        return float(evaluate_predictions(self.dataset, images, preds, metric)[0])


__all__ = ["LinearHead", "Samples"]

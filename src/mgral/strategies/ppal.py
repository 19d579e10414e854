"""PPAL: plug-and-play active learning for object detection (Yang, Huang and Crowley, CVPR 2024).

Two stages. **DCUS** (difficulty-calibrated uncertainty sampling): each class gets a difficulty from how
well the detector does on it in the labeled set — the quality of a positive anchor is ``p_gt^xi *
IoU^(1 - xi)`` (the probability of the ground-truth class times the overlap of the predicted box with it)
and ``q_c`` is its mean over the class's positive anchors — and a weight
``w_c = 1 + a u log(1 + b (1 - q_c))`` with ``b = e^(1/a) - 1`` (1 for an easy class, up to ``1 + u`` for
a hard one). An image's uncertainty is the sum over its detections (score at least ``min_score``, box not
tiny or thin) of ``w_c`` times the binary entropy of the detection's score; the ``candidates x budget``
most uncertain images form the candidate pool. **CCMS + k-Centroid**: the distance between two candidate
images matches each detection of one with the most similar detection *of the same predicted class* in the
other (``1 - cosine`` of their features; 2 when the other has none of that class), weights by score,
and averages both directions; k-Centroid clustering (farthest-point initialisation, then alternately
assigning images to the nearest centroid and moving each centroid to the member with the smallest summed
distance to the others) returns the ``budget`` centroids.

Departures (``docs/design.md``): ``q_c`` is computed in one pass over the labeled set after training —
the value PPAL's per-iteration momentum average (0.99) settles to — instead of during training;
detection features are mgral's per-detection features (the backbone pooled inside the box, 256-d) rather
than the classification tower's output at the box centre; the minimum box size is relative to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from mgral.data.dataset import DetectionDataset
from mgral.data.torch_data import image_tensor, target_for
from mgral.detectors.detector import Detector
from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy


def binary_entropy(s: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, np.float64), 1e-10, 1 - 1e-10)
    return -(s * np.log(s) + (1 - s) * np.log(1 - s))


def difficulty_weights(quality: np.ndarray, alpha: float = 0.3, upper: float = 0.2) -> np.ndarray:
    """PPAL's ``w_c = 1 + a u log(1 + b (1 - q_c))``, ``b = e^(1/a) - 1``: 1 at ``q = 1``, ``1 + u`` at 0."""
    b = np.exp(1.0 / alpha) - 1.0
    return 1.0 + alpha * upper * np.log1p(b * (1.0 - np.asarray(quality, np.float64)))


@torch.no_grad()
def class_quality(
    detector: Detector, dataset: DetectionDataset, indices: np.ndarray, xi: float = 0.6, batch: int = 16
) -> np.ndarray:
    """Mean ``p_gt^xi * IoU^(1 - xi)`` over the positive anchors of each class in ``dataset[indices]``."""
    det = detector
    total = np.zeros(det.num_classes)
    count = np.zeros(det.num_classes)
    det.model.eval()
    m = det.module
    for s in range(0, len(indices), batch):
        idx = [int(i) for i in indices[s : s + batch]]
        images = [image_tensor(dataset, i).to(det.device) for i in idx]
        raw = [{k: v.to(det.device) for k, v in target_for(dataset, i).items()} for i in idx]
        image_list, resized = det.transform(images, raw)
        assert resized is not None
        targets = resized
        feats = det.features(image_list.tensors)
        head = det.head(feats)
        anchors = det.anchors(image_list, feats)
        for b, (t, anc) in enumerate(zip(targets, anchors)):
            if t["boxes"].numel() == 0:
                continue
            matched = m.proposal_matcher(box_iou(t["boxes"], anc))
            pos = torch.nonzero(matched >= 0).squeeze(1)
            if pos.numel() == 0:
                continue
            gt = matched[pos]
            boxes = m.box_coder.decode_single(head["bbox_regression"][b][pos].float(), anc[pos])
            iou = box_iou(boxes, t["boxes"][gt]).diagonal().clamp(0, 1)
            logits = head["cls_logits"][b][pos].float()
            labels = t["labels"][gt]  # torchvision labels: class + 1
            if det.softmax:
                p = torch.softmax(logits, -1).gather(1, labels[:, None])[:, 0]
            else:
                p = torch.sigmoid(logits.gather(1, labels[:, None])[:, 0])
            q = p.clamp_min(1e-12) ** xi * iou.clamp_min(1e-12) ** (1 - xi)
            np.add.at(total, (labels - 1).cpu().numpy(), q.cpu().numpy())
            np.add.at(count, (labels - 1).cpu().numpy(), 1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def ccms_distance(feats: list[np.ndarray], labels: list[np.ndarray], scores: list[np.ndarray], device: torch.device,
                  chunk_elems: int = 2**24) -> np.ndarray:  # fmt: skip
    """The symmetric category-conditioned matching distance ``float[N, N]`` (see the module docstring)."""
    n = len(feats)
    k = max(1, max((len(f) for f in feats), default=1))
    dim = max((f.shape[1] for f in feats if len(f)), default=1)
    f_pad = torch.zeros(n, k, dim, device=device)
    l_pad = torch.full((n, k), -1, dtype=torch.long, device=device)
    s_pad = torch.zeros(n, k, device=device)
    for i, (f, lab, sc) in enumerate(zip(feats, labels, scores)):
        if len(f):
            f_pad[i, : len(f)] = torch.nn.functional.normalize(torch.as_tensor(f, dtype=torch.float32), dim=1)
            l_pad[i, : len(f)] = torch.as_tensor(lab)
            s_pad[i, : len(f)] = torch.as_tensor(sc, dtype=torch.float32)
    valid = l_pad >= 0
    directed = torch.zeros(n, n, device=device)
    rows = max(1, chunk_elems // max(1, n * k * k))
    for a in range(0, n, rows):
        fa, la, sa, va = f_pad[a : a + rows], l_pad[a : a + rows], s_pad[a : a + rows], valid[a : a + rows]
        cos = torch.einsum("akd,bjd->abkj", fa, f_pad)  # [A, N, K, K]
        same = la[:, None, :, None] == l_pad[None, :, None, :]
        d = torch.where(same, 1.0 - cos, torch.full_like(cos, 2.0))
        d = torch.where(valid[None, :, None, :], d, torch.full_like(d, float("inf")))
        best = d.min(-1).values  # [A, N, K]: each detection of A against its best match in B
        best = torch.where(torch.isinf(best), torch.zeros_like(best), best)
        w = (sa * va)[:, None, :]
        has = valid.any(1)[None, :, None]
        directed[a : a + rows] = (w * best).sum(-1) / ((w * has).sum(-1) + 1e-5)
    return (0.5 * (directed + directed.T)).cpu().numpy()


def k_centroid(dist: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100) -> np.ndarray:
    """k-Centroid (k-medoids) on a distance matrix: farthest-point initialisation from a random image, then
    assignment to the nearest centroid and each centroid moved to its cluster's medoid; ``k`` centroids."""
    n = len(dist)
    if k >= n:
        return np.arange(n)
    centres = [int(rng.integers(n))]
    nearest = dist[centres[0]].copy()
    for _ in range(1, k):
        nearest[centres] = -1.0
        centres.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, dist[centres[-1]])
    centres_arr = np.asarray(centres)
    for _ in range(iterations):
        assign = np.argmin(dist[:, centres_arr], axis=1)
        assign[centres_arr] = np.arange(k)  # a centroid belongs to its own cluster (ties between duplicates)
        new = centres_arr.copy()
        for c in range(k):
            members = np.nonzero(assign == c)[0]
            new[c] = members[np.argmin(dist[np.ix_(members, members)].sum(1))]
        if np.array_equal(new, centres_arr):
            break
        centres_arr = new
    return centres_arr


@register_strategy
class PPALStrategy(Strategy):
    """DCUS pre-selection, then CCMS + k-Centroid (see the module docstring)."""

    name = "ppal"
    needs = frozenset({"instance_features", "detector"})

    @dataclass(frozen=True)
    class Options:
        xi: float = 0.6  # weight of the class probability against the IoU in an anchor's quality
        alpha: float = 0.3  # shape of the difficulty weight
        upper: float = 0.2  # the hardest class's weight is 1 + upper
        candidates: float = 4.0  # candidate pool: this many times the budget
        min_score: float = 0.05  # detections below this count for nothing
        min_size: float = (
            0.02  # ... nor boxes whose sqrt(area) is below this fraction of the image's shorter side
        )
        max_aspect: float = 5.0
        max_dets: int = 100  # detections per image in the matching
        iterations: int = 100  # of k-Centroid

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        o = self.options
        q = class_quality(ctx.detector, ctx.dataset, ctx.labeled, o.xi)
        w = difficulty_weights(q, o.alpha, o.upper)
        unc = np.zeros(len(ctx.unlabeled))
        kept = []
        for k, (i, p) in enumerate(zip(ctx.unlabeled, ctx.predictions)):
            rec = ctx.dataset[int(i)]
            bw, bh = p.boxes[:, 2] - p.boxes[:, 0], p.boxes[:, 3] - p.boxes[:, 1]
            ok = (p.scores >= o.min_score) & (
                np.sqrt(np.maximum(bw * bh, 0)) > o.min_size * min(rec.width, rec.height)
            )
            ok &= (np.maximum(bw, 1e-6) / np.maximum(bh, 1e-6) < o.max_aspect) & (
                np.maximum(bh, 1e-6) / np.maximum(bw, 1e-6) < o.max_aspect
            )
            unc[k] = float((w[p.labels[ok]] * binary_entropy(p.scores[ok])).sum())
            top = np.argsort(-p.scores, kind="stable")[: o.max_dets]
            top = top[p.scores[top] > o.min_score]
            kept.append(top)
        n_cand = min(len(unc), max(budget, int(np.ceil(o.candidates * budget))))
        cand = np.lexsort((ctx.rng.random(len(unc)), -unc))[:n_cand]
        preds = ctx.predictions
        feats = [
            preds[c].features[kept[c]] if preds[c].features is not None else np.zeros((0, 1)) for c in cand
        ]
        dist = ccms_distance(feats, [preds[c].labels[kept[c]] for c in cand], [preds[c].scores[kept[c]] for c in cand],
                             ctx.device)  # fmt: skip
        centres = k_centroid(dist, budget, ctx.rng, o.iterations)
        pos = cand[centres]
        order = np.argsort(-unc[pos], kind="stable")
        return Selection(ctx.unlabeled[pos[order]], unc[pos[order]], {"class_quality": q.tolist()})


__all__ = [
    "PPALStrategy",
    "binary_entropy",
    "ccms_distance",
    "class_quality",
    "difficulty_weights",
    "k_centroid",
]

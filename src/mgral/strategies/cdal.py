"""CDAL: contextual diversity for active learning (Agarwal, Arora, Anand and Arora, ECCV 2020), its
core-set variant CDAL-CS, for detection.

An image's *context* is how the detector confuses classes in it: for each class ``c`` that the detector
predicts in the image, ``P^c`` is the entropy-weighted mean of the class-probability vectors of the
regions (here: detections) predicted as ``c``, renormalised to a distribution over the object classes.
The contextual diversity between two images is the sum, over the classes present in both, of the
symmetric KL divergence ``1/2 KL(P^c_I || P^c_J) + 1/2 KL(P^c_J || P^c_I)``; CDAL-CS runs the core-set
greedy k-center over that distance, the labeled images being the initial centres.

Departures (``docs/design.md``): regions are the detector's post-processed detections (the paper's
detection code takes every SSD default box); the background column of a softmax detector is dropped and
the rest renormalised, and sigmoid (RetinaNet) scores are normalised to sum to one; the first pick is the
farthest image from the labeled set (the reference code draws it at random).
"""

from __future__ import annotations

import numpy as np
import torch

from mgral.data.structures import Prediction
from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy

EPS = 1e-8


def context(pred: Prediction, num_classes: int, softmax: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(P, valid)``: ``P`` float[C, C], row ``c`` the context of the detections predicted as ``c``;
    ``valid`` bool[C], whether the image has any. Rows of absent classes are uniform (and invalid)."""
    probs = np.asarray(pred.probs, np.float64)
    p = probs[:, 1:] if softmax else probs
    p = np.clip(p, EPS, None)
    p = p / p.sum(1, keepdims=True)
    w = -(p * np.log(p)).sum(1)  # entropy of each region
    out = np.full((num_classes, num_classes), 1.0 / num_classes)
    valid = np.zeros(num_classes, bool)
    if len(p):
        cls = p.argmax(1)
        for c in np.unique(cls):
            m = cls == c
            weights = w[m] + EPS
            row = (weights[:, None] * p[m]).sum(0) / weights.sum()
            out[c] = row / row.sum()
            valid[c] = True
    return out, valid


def contextual_distance(
    p_a: torch.Tensor, m_a: torch.Tensor, p_b: torch.Tensor, m_b: torch.Tensor
) -> torch.Tensor:
    """Pairwise contextual diversity ``float[A, B]`` between images with contexts ``p`` float[N, C, C] and
    validity ``m`` float[N, C]: the sum over classes valid in both of the symmetric KL divergence.

    Vectorised as matrix products: with ``s_c = sum_k P_ck log P_ck``,
    ``2 D = (m_a * s_a) @ m_b.T + m_a @ (m_b * s_b).T - X_a @ Y_b.T - Y_a @ X_b.T`` where
    ``X = m * P`` and ``Y = m * log P`` flattened over (class, column)."""
    log_a, log_b = p_a.clamp_min(EPS).log(), p_b.clamp_min(EPS).log()
    s_a, s_b = (p_a * log_a).sum(-1), (p_b * log_b).sum(-1)
    x_a, y_a = (m_a[..., None] * p_a).flatten(1), (m_a[..., None] * log_a).flatten(1)
    x_b, y_b = (m_b[..., None] * p_b).flatten(1), (m_b[..., None] * log_b).flatten(1)
    d = (m_a * s_a) @ m_b.T + m_a @ (m_b * s_b).T - x_a @ y_b.T - y_a @ x_b.T
    return (0.5 * d).clamp_min(0.0)


@register_strategy
class CDALStrategy(Strategy):
    """CDAL-CS: greedy k-center over the contextual-diversity distance (see the module docstring)."""

    name = "cdal"
    needs = frozenset({"predictions", "detector"})

    def contexts(
        self, preds: list[Prediction], num_classes: int, softmax: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [context(p, num_classes, softmax) for p in preds]
        p = torch.as_tensor(
            np.stack([a for a, _ in pairs]) if pairs else np.zeros((0, num_classes, num_classes))
        )
        m = torch.as_tensor(
            np.stack([b for _, b in pairs]) if pairs else np.zeros((0, num_classes)), dtype=p.dtype
        )
        return p, m

    def select(self, ctx: SelectionContext, budget: int, chunk: int = 2048) -> Selection:
        c = ctx.dataset.num_classes
        p_u, m_u = self.contexts(ctx.predictions, c, ctx.softmax)
        labeled_preds = ctx.detector.predict(ctx.dataset, ctx.labeled, progress=False)
        p_l, m_l = self.contexts(labeled_preds, c, ctx.softmax)
        p_u, m_u, p_l, m_l = (t.to(ctx.device) for t in (p_u, m_u, p_l, m_l))
        min_d = torch.full((len(p_u),), float("inf"), dtype=p_u.dtype, device=ctx.device)
        for s in range(0, len(p_l), chunk):
            d = contextual_distance(p_u, m_u, p_l[s : s + chunk], m_l[s : s + chunk])
            min_d = torch.minimum(min_d, d.min(1).values)
        picks, scores = [], []
        for _ in range(budget):
            j = int(torch.argmax(min_d))
            picks.append(j)
            scores.append(float(min_d[j]))
            d = contextual_distance(p_u, m_u, p_u[j : j + 1], m_u[j : j + 1])[:, 0]
            min_d = torch.minimum(min_d, d)
            min_d[j] = -1.0
        pos = np.asarray(picks, np.int64)
        return Selection(ctx.unlabeled[pos], np.asarray(scores))


__all__ = ["CDALStrategy", "context", "contextual_distance"]

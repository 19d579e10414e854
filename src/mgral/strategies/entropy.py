"""Entropy sampling: the uncertainty of each detected box, aggregated per image."""

from __future__ import annotations

import numpy as np

from mgral.strategies.base import ScoringStrategy, SelectionContext, register_strategy

AGGREGATES = ("mean", "sum", "max")


def box_entropy(probs: np.ndarray, softmax: bool) -> np.ndarray:
    """Entropy (nats) of each box's class distribution.

    ``softmax``: Shannon entropy of the row (background included). Otherwise the rows are independent
    sigmoids (RetinaNet) and the entropy is the binary entropy of the box's top class probability.
    """
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    if softmax:
        return -(p * np.log(p)).sum(1)
    top = np.clip(p.max(1), 1e-12, 1 - 1e-12)
    return -(top * np.log(top) + (1 - top) * np.log(1 - top))


@register_strategy
class EntropyStrategy(ScoringStrategy):
    """Per-box entropy aggregated per image by ``mean``, ``sum`` or ``max``; an image with no detection
    scores 0. ``min_score`` drops boxes below that confidence before aggregating."""

    name = "entropy"
    needs = frozenset({"predictions"})

    def __init__(self, *, aggregate: str = "mean", min_score: float = 0.0) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        self.aggregate = aggregate
        self.min_score = float(min_score)

    def score(self, ctx: SelectionContext) -> np.ndarray:
        assert ctx.predictions is not None
        softmax = ctx.detector.softmax if ctx.detector is not None else True
        out = np.zeros(len(ctx.predictions))
        for k, pred in enumerate(ctx.predictions):
            keep = pred.scores >= self.min_score
            if not keep.any():
                continue
            h = box_entropy(pred.probs[keep], softmax)
            out[k] = getattr(np, self.aggregate)(h)
        return out

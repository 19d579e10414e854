"""Entropy sampling: the uncertainty of each detected box, aggregated per image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mgral.strategies.base import ScoringStrategy, SelectionContext, register_strategy


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

    @dataclass(frozen=True)
    class Options:
        aggregate: Literal["mean", "sum", "max"] = "mean"  # how box entropies make an image's score
        min_score: float = 0.0  # boxes scoring below this are ignored

    def score(self, ctx: SelectionContext) -> np.ndarray:
        opts = self.options
        out = np.zeros(len(ctx.predictions))
        for k, pred in enumerate(ctx.predictions):
            keep = pred.scores >= opts.min_score
            if keep.any():
                out[k] = getattr(np, opts.aggregate)(box_entropy(pred.probs[keep], ctx.softmax))
        return out

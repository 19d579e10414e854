"""Random sampling: the baseline every paper reports."""

from __future__ import annotations

import numpy as np

from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy


@register_strategy
class RandomStrategy(Strategy):
    """Uniformly random images from the unlabeled pool (seeded by the context's generator)."""

    name = "random"

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        picks = ctx.rng.choice(len(ctx.unlabeled), size=budget, replace=False)
        return Selection(ctx.unlabeled[picks], np.zeros(budget))

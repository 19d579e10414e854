"""Core-set (Sener & Savarese, ICLR 2018): k-center greedy on image embeddings."""

from __future__ import annotations

import numpy as np
import torch

from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy


def k_center_greedy(
    unlabeled: np.ndarray, labeled: np.ndarray, budget: int, rng: np.random.Generator, *, chunk: int = 4096,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Greedy k-center: repeatedly take the unlabeled point farthest from every chosen or labeled point.

    ``unlabeled`` float[U, D], ``labeled`` float[L, D] (L may be 0: the first pick is then random).
    Returns (positions into ``unlabeled`` in pick order, the distance of each pick when it was taken).
    Memory is O(U); each pick costs one O(U * D) distance update.
    """
    u = torch.as_tensor(unlabeled, dtype=torch.float32, device=device)
    min_d = torch.full((len(u),), float("inf"), device=device)
    lab = torch.as_tensor(labeled, dtype=torch.float32, device=device)
    for s in range(0, len(lab), chunk):
        d = torch.cdist(u, lab[s : s + chunk])
        min_d = torch.minimum(min_d, d.min(1).values)
    picks = np.empty(budget, np.int64)
    dists = np.empty(budget)
    for k in range(budget):
        if k == 0 and len(lab) == 0:
            j = int(rng.integers(len(u)))
            dists[k] = float("inf")
        else:
            j = int(torch.argmax(min_d))
            dists[k] = float(min_d[j])
        picks[k] = j
        min_d = torch.minimum(min_d, torch.linalg.vector_norm(u - u[j], dim=1))
        min_d[j] = -1.0
    return picks, dists


@register_strategy
class CoresetStrategy(Strategy):
    """k-center greedy over the detector's 256-d image embeddings of the labeled and unlabeled images."""

    name = "coreset"
    needs = frozenset({"embeddings"})

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        picks, dists = k_center_greedy(
            ctx.embeddings_unlabeled, ctx.embeddings_labeled, budget, ctx.rng, device=ctx.device
        )
        return Selection(ctx.unlabeled[picks], dists)

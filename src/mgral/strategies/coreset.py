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
    Memory is O(U) beyond the embeddings; each pick costs one matrix-vector product: squared distances
    come from ``|u|^2 - 2 u.c + |c|^2`` written into preallocated buffers, so a pick reads the embeddings
    once and allocates nothing (at 99,000 x 256 that is 4x faster than forming ``u - c``). The expansion
    loses a little precision (float32) for near-identical points, far below the distances that decide a
    pick.
    """
    u = torch.as_tensor(unlabeled, dtype=torch.float32, device=device).contiguous()
    lab = torch.as_tensor(labeled, dtype=torch.float32, device=device)
    sq = (u * u).sum(1)
    min_d2 = torch.full((len(u),), float("inf"), device=device)
    for s in range(0, len(lab), chunk):
        d = torch.cdist(u, lab[s : s + chunk])
        min_d2 = torch.minimum(min_d2, d.min(1).values.square())
    buf = torch.empty(len(u), device=device)
    picks = np.empty(budget, np.int64)
    dists = np.empty(budget)
    for k in range(budget):
        if k == 0 and len(lab) == 0:
            j = int(rng.integers(len(u)))
            dists[k] = float("inf")
        else:
            j = int(torch.argmax(min_d2))
            dists[k] = float(min_d2[j].sqrt())
        picks[k] = j
        c = u[j]
        torch.mv(u, c, out=buf)
        buf.mul_(-2.0).add_(sq).add_(sq[j]).clamp_(min=0.0)
        torch.minimum(min_d2, buf, out=min_d2)
        min_d2[j] = -1.0
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

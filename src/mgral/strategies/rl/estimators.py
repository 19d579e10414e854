"""Reward estimators over (batch feature, reward) records: the paper's look-up table (III-F) and a kernel one.

An estimator answers ``estimate(feature) -> float | None``; ``None`` means it cannot tell, and the caller
computes the true reward and records it (the table grows where the search goes).

The look-up table:

Estimate of a batch: the inverse-distance-weighted mean reward of its ``k`` nearest records by L2
distance. When every one of those neighbours is farther than ``mean - std`` of the pairwise distances
between the records already in the table, the table is judged not to know this region: the caller computes
the true reward and adds it, so the table grows where the search goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr


class Estimator(Protocol):
    def estimate(self, feature: np.ndarray) -> float | None: ...


class Estimate(NamedTuple):
    value: float | None  # None: the table cannot estimate this batch, compute the true reward
    nearest: float  # distance to the nearest record
    threshold: float


@dataclass
class LookupTable:
    """Records of batch features (float[D]) and rewards; ``k`` neighbours; ``eps`` guards zero distance."""

    k: int = 5
    eps: float = 1e-8
    features: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    _threshold: float | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, feature: np.ndarray, reward: float) -> None:
        self.features.append(np.asarray(feature, np.float64))
        self.rewards.append(float(reward))
        self._threshold = None

    def threshold(self) -> float:
        """``mean - std`` of the pairwise L2 distances between records (recomputed when the table grows)."""
        if self._threshold is None:
            if len(self) < 2:
                self._threshold = float("inf")
            else:
                d = pdist(np.stack(self.features))
                self._threshold = float(d.mean() - d.std())
        return self._threshold

    def estimate(self, feature: np.ndarray) -> float | None:
        """The inverse-distance estimate, or ``None`` when every neighbour is beyond the threshold."""
        return self.lookup(feature).value

    def lookup(self, feature: np.ndarray) -> Estimate:
        """The estimate with the nearest distance and the threshold it was judged by."""
        if not self.rewards:
            return Estimate(None, float("inf"), float("inf"))
        x = np.stack(self.features)
        dist = np.linalg.norm(x - np.asarray(feature, np.float64)[None], axis=1)
        k = min(self.k, len(dist))
        near = np.argpartition(dist, k - 1)[:k]
        tau = self.threshold()
        if (dist[near] > tau).all():
            return Estimate(None, float(dist[near].min()), tau)
        w = 1.0 / (dist[near] + self.eps)
        value = float(np.dot(w, np.asarray(self.rewards)[near]) / w.sum())
        return Estimate(value, float(dist[near].min()), tau)

    def state_dict(self) -> dict:
        return {"k": self.k, "features": [f.tolist() for f in self.features], "rewards": list(self.rewards)}

    @classmethod
    def from_state(cls, state: dict) -> LookupTable:
        t = cls(k=state["k"])
        for f, r in zip(state["features"], state["rewards"]):
            t.add(np.asarray(f), r)
        return t


class KernelEstimator:
    """Kernel ridge regression (RBF, bandwidth = median pairwise distance) on the records of ``table``: a
    smooth alternative to the neighbour average. It declines only when the table is empty."""

    def __init__(self, table: LookupTable, alpha: float = 1e-3) -> None:
        self.table = table
        self.alpha = alpha
        self._fit_n = -1
        self._model: Any = None
        self._mean = 0.0

    def estimate(self, feature: np.ndarray) -> float | None:
        from sklearn.kernel_ridge import KernelRidge

        table = self.table
        if len(table) == 0:
            return None
        if self._fit_n != len(table):
            x = np.stack(table.features)
            y = np.asarray(table.rewards)
            med = float(np.median(pdist(x))) if len(x) > 1 else 1.0
            self._mean = float(y.mean())
            self._model = KernelRidge(
                alpha=self.alpha, kernel="rbf", gamma=1.0 / (2 * max(med, 1e-8) ** 2)
            ).fit(x, y - self._mean)
            self._fit_n = len(table)
        return float(self._model.predict(np.asarray(feature, np.float64)[None])[0]) + self._mean


class NoEstimator:
    """Always the true reward (``estimator=none``)."""

    def estimate(self, feature: np.ndarray) -> float | None:
        return None


def fidelity(estimates: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Spearman correlation and mean absolute error of estimates against true rewards."""
    estimates, truths = np.asarray(estimates, float), np.asarray(truths, float)
    rho = spearmanr(estimates, truths).statistic if len(truths) > 2 else float("nan")
    return {"spearman": float(rho), "mae": float(np.abs(estimates - truths).mean()), "n": float(len(truths))}

"""Reward estimators over (batch feature, reward) records: the paper's look-up table (III-F) and learned ones.

Records are kept across cycles (:class:`Records`). A reward means something only within its cycle (the
labeled set, the proxy's fold models and hence the scale of an mAP change differ from one cycle to the
next), so estimators learn the reward *centred on its cycle* (minus the mean of that cycle's random
records) from features standardised over all records: what a batch holds is worth the same, relative to
its cycle, in every cycle, and records of earlier cycles keep informing later ones.

An estimator answers ``estimate(feature) -> float | None`` on that centred scale; ``None`` means it cannot
tell, and the caller computes the true reward and records it (the table grows where the search goes).

* ``table`` (the paper's): the inverse-distance-weighted mean of the ``k`` nearest records by L2 distance;
  when every one of them is farther than ``mean - std`` of the pairwise distances between records, it
  declines.
* ``ridge``: ridge regression with its penalty chosen by leave-one-out cross-validation.
* ``gp``: a Gaussian process (RBF plus white noise, hyper-parameters by marginal likelihood).
* ``kernel``: kernel ridge with an RBF of the median pairwise distance.
* ``none``: always the true reward.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr


@dataclass
class Records:
    """Batch features, their true rewards, the cycle (``group``) and kind (``random``, ``policy``,
    ``presize``...) of each record; kept across cycles in the strategy's state."""

    features: list[list[float]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, feature: np.ndarray, reward: float, group: int, kind: str) -> None:
        self.features.append(np.asarray(feature, np.float64).tolist())
        self.rewards.append(float(reward))
        self.groups.append(int(group))
        self.kinds.append(kind)

    def offset(self, group: int) -> float:
        """The mean reward of ``group``'s random records (else of all its records; 0 when it has none)."""
        r = [x for x, g, k in zip(self.rewards, self.groups, self.kinds) if g == group and k == "random"]
        r = r or [x for x, g in zip(self.rewards, self.groups) if g == group]
        return float(np.mean(r)) if r else 0.0

    def centred(self) -> tuple[np.ndarray, np.ndarray]:
        """Features ``float[R, D]`` and rewards centred on their cycle ``float[R]``."""
        offsets = {g: self.offset(g) for g in set(self.groups)}
        y = np.array([r - offsets[g] for r, g in zip(self.rewards, self.groups)])
        return np.array(self.features, np.float64).reshape(len(self), -1), y

    def state_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "rewards": self.rewards,
            "groups": self.groups,
            "kinds": self.kinds,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Records:
        return cls(
            list(state["features"]), list(state["rewards"]), list(state["groups"]), list(state["kinds"])
        )


class Estimator(Protocol):
    def fit(self, records: Records) -> None: ...

    def estimate(self, feature: np.ndarray) -> float | None: ...


class _Standardised:
    """Shared by the estimators: features standardised by the records' mean and spread."""

    mean: np.ndarray
    scale: np.ndarray
    n_fit: int = -1

    def _prepare(self, records: Records) -> tuple[np.ndarray, np.ndarray]:
        x, y = records.centred()
        self.mean = x.mean(0)
        self.scale = x.std(0)
        self.scale[self.scale < 1e-9] = 1.0
        self.n_fit = len(records)
        return (x - self.mean) / self.scale, y

    def _z(self, feature: np.ndarray) -> np.ndarray:
        return (np.asarray(feature, np.float64) - self.mean) / self.scale


class Estimate(NamedTuple):
    value: float | None  # None: the table cannot estimate this batch, compute the true reward
    nearest: float  # distance to the nearest record
    threshold: float


class LookupTable(_Standardised):
    """The paper's look-up table: inverse-distance weighting of the ``k`` nearest records, declining when
    all of them lie beyond ``mean - std`` of the pairwise distances between records."""

    def __init__(self, k: int = 5, eps: float = 1e-8) -> None:
        self.k, self.eps = k, eps
        self.x = np.zeros((0, 0))
        self.y = np.zeros(0)
        self.tau = float("inf")

    def fit(self, records: Records) -> None:
        if len(records) == 0:
            self.x, self.y, self.n_fit = np.zeros((0, 0)), np.zeros(0), 0
            return
        self.x, self.y = self._prepare(records)
        if len(self.y) < 2:
            self.tau = float("inf")
        else:
            d = pdist(self.x)
            self.tau = float(d.mean() - d.std())

    def lookup(self, feature: np.ndarray) -> Estimate:
        if len(self.y) == 0:
            return Estimate(None, float("inf"), float("inf"))
        dist = np.linalg.norm(self.x - self._z(feature)[None], axis=1)
        k = min(self.k, len(dist))
        near = np.argpartition(dist, k - 1)[:k]
        if (dist[near] > self.tau).all():
            return Estimate(None, float(dist[near].min()), self.tau)
        w = 1.0 / (dist[near] + self.eps)
        return Estimate(float(np.dot(w, self.y[near]) / w.sum()), float(dist[near].min()), self.tau)

    def estimate(self, feature: np.ndarray) -> float | None:
        return self.lookup(feature).value


class RidgeEstimator(_Standardised):
    """Ridge regression on standardised features, penalty by leave-one-out cross-validation."""

    def __init__(self) -> None:
        self.model: Any = None

    def fit(self, records: Records) -> None:
        from sklearn.linear_model import RidgeCV

        if len(records) < 3:
            self.model = None
            return
        x, y = self._prepare(records)
        self.model = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x, y)

    def estimate(self, feature: np.ndarray) -> float | None:
        if self.model is None:
            return None
        return float(self._z(feature) @ self.model.coef_ + self.model.intercept_)


class GPEstimator(_Standardised):
    """A Gaussian process (constant x RBF + white noise) on standardised features."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.model: Any = None

    def fit(self, records: Records) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        if len(records) < 3:
            self.model = None
            return
        x, y = self._prepare(records)
        d = x.shape[1]
        kernel = ConstantKernel(1.0, (1e-4, 1e5)) * RBF(np.sqrt(d), (1e-2, 1e4)) + WhiteKernel(
            0.1, (1e-8, 1e1)
        )
        with warnings.catch_warnings():  # hyper-parameters at a bound are fine for ranking batches
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model = GaussianProcessRegressor(kernel, normalize_y=True, random_state=self.seed).fit(x, y)

    def estimate(self, feature: np.ndarray) -> float | None:
        if self.model is None:
            return None
        return float(self.model.predict(self._z(feature)[None])[0])


class KernelEstimator(_Standardised):
    """Kernel ridge regression (RBF, bandwidth = median pairwise distance) on standardised features."""

    def __init__(self, alpha: float = 1e-3) -> None:
        self.alpha = alpha
        self.model: Any = None

    def fit(self, records: Records) -> None:
        from sklearn.kernel_ridge import KernelRidge

        if len(records) == 0:
            self.model = None
            return
        x, y = self._prepare(records)
        med = float(np.median(pdist(x))) if len(x) > 1 else 1.0
        self.model = KernelRidge(alpha=self.alpha, kernel="rbf", gamma=1.0 / (2 * max(med, 1e-8) ** 2)).fit(
            x, y
        )

    def estimate(self, feature: np.ndarray) -> float | None:
        if self.model is None:
            return None
        return float(self.model.predict(self._z(feature)[None])[0])


class NoEstimator:
    """Always the true reward (``estimator=none``)."""

    def fit(self, records: Records) -> None:
        return None

    def estimate(self, feature: np.ndarray) -> float | None:
        return None


ESTIMATORS = {"table": LookupTable, "ridge": RidgeEstimator, "gp": GPEstimator, "kernel": KernelEstimator,
              "none": NoEstimator}  # fmt: skip


def make_estimator(name: str, neighbours: int = 5) -> Estimator:
    if name == "table":
        return LookupTable(k=neighbours)
    return ESTIMATORS[name]()  # type: ignore[abstract]


def fidelity(estimates: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Spearman correlation and mean absolute error of estimates against true rewards."""
    estimates, truths = np.asarray(estimates, float), np.asarray(truths, float)
    rho = spearmanr(estimates, truths).statistic if len(truths) > 2 else float("nan")
    return {"spearman": float(rho), "mae": float(np.abs(estimates - truths).mean()), "n": float(len(truths))}


__all__ = ["ESTIMATORS", "Estimate", "Estimator", "GPEstimator", "KernelEstimator", "LookupTable", "NoEstimator",
           "Records", "RidgeEstimator", "fidelity", "make_estimator"]  # fmt: skip

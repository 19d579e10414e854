"""Batch features for MGRAL's reward estimators: what a batch of unlabeled images holds, as one vector.

A featurizer is built once per cycle from what the strategy sees of the pool and maps the positions of a
batch (indices into the unlabeled pool) to a fixed-length vector; the look-up table compares batches by
the L2 distance between these vectors (paper III-F).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sklearn.cluster import KMeans


class BatchFeaturizer(Protocol):
    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The feature (float[D]) of the batch made of the unlabeled images at ``positions``."""
        ...


class MeanFeaturizer:
    """The batch's mean (standardised) embedding."""

    def __init__(self, emb: np.ndarray) -> None:
        self.emb = emb

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return self.emb[positions].mean(0)


class HistogramFeaturizer:
    """The share of the batch in each of ``k`` k-means clusters of the pool's embeddings (what it covers)."""

    def __init__(self, emb: np.ndarray, clusters: int, seed: int) -> None:
        self.k = min(clusters, len(emb))
        self.assign = KMeans(n_clusters=self.k, n_init=3, random_state=seed).fit_predict(emb)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return np.bincount(self.assign[positions], minlength=self.k) / max(1, len(positions))


__all__ = ["BatchFeaturizer", "HistogramFeaturizer", "MeanFeaturizer"]

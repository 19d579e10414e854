"""What a detector returns, as plain arrays: the ground floor that metrics, strategies and reports share.

These structures live beside the dataset rather than in ``detectors/`` so that code which only reads
detections (metrics, ``mgral evaluate``, reports) never imports a model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: dimension of the image embeddings every detector produces
EMBED_DIM = 256


class Prediction(NamedTuple):
    """Detections of one image, in original image pixels.

    boxes (float32[K, 4]) in [x1, y1, x2, y2]; scores (float32[K]); labels (int64[K]) class indices
    0..C-1; probs (float32[K, P]): the anchor's class distribution, P = C + 1 with background at column
    0 for softmax models (SSD), P = C independent sigmoids for RetinaNet. ``features`` (float32[K, F])
    holds one feature vector per detection when asked for (``instance_features``), else ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    features: np.ndarray | None = None

    @staticmethod
    def empty(num_probs: int) -> Prediction:
        return Prediction(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
            np.zeros((0, num_probs), np.float32),
        )  # fmt: skip


class Inference(NamedTuple):
    """One pass of a detector over some images: predictions and/or 256-d embeddings, aligned with them."""

    predictions: list[Prediction] | None
    embeddings: np.ndarray | None  # float32[N, EMBED_DIM]


__all__ = ["EMBED_DIM", "Inference", "Prediction"]

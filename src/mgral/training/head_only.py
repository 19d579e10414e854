"""Training only the detection head on cached backbone features: the cheap objective behind MGRAL's proxy.

A :class:`FeatureCache` runs a detector's (frozen) backbone once per image and keeps the feature maps in
memory up to a budget; :class:`HeadOnly` then fine-tunes the head on any schedule of cached images for a
fraction of the cost of a full forward and backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mgral.config import TrainConfig
from mgral.data.dataset import DetectionDataset
from mgral.data.structures import Prediction
from mgral.data.torch_data import image_tensor
from mgral.detectors.detector import Detector
from mgral.training.engine import Objective

Cached = tuple[
    list[torch.Tensor], tuple[int, int], tuple[int, int]
]  # feature maps, transformed size, original size


class FeatureCache:
    """Per-image backbone features of ``detector`` on ``dataset``, computed on first use.

    Up to ``cache_mb`` MiB are kept; images beyond the budget are recomputed each time they are asked for.
    The detector's backbone must not change while the cache is in use.
    """

    def __init__(
        self, detector: Detector, dataset: DetectionDataset, *, cache_mb: int = 2048, chunk: int = 32
    ) -> None:
        self.detector, self.dataset, self.cache_mb, self.chunk = detector, dataset, cache_mb, chunk
        self._cache: dict[int, Cached] = {}
        self._bytes = 0

    def __contains__(self, i: int) -> bool:
        return int(i) in self._cache

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, indices: Sequence[int] | np.ndarray) -> tuple[list[list[torch.Tensor]], list[tuple[int, int]],
                                                              list[tuple[int, int]]]:  # fmt: skip
        """Feature maps, transformed sizes and original sizes of ``indices`` (in that order)."""
        missing = list(dict.fromkeys(int(i) for i in indices if int(i) not in self._cache))
        once: dict[int, Cached] = {}  # over the memory budget: used for this call only
        for s in range(0, len(missing), self.chunk):
            part = missing[s : s + self.chunk]
            feats, sizes, orig = self.detector.backbone_features(
                [image_tensor(self.dataset, i) for i in part]
            )
            for i, f, sz, o in zip(part, feats, sizes, orig):
                nbytes = sum(t.numel() * t.element_size() for t in f)
                if self._bytes + nbytes <= self.cache_mb * 2**20:
                    self._cache[i] = (f, sz, o)
                    self._bytes += nbytes
                else:
                    once[i] = (f, sz, o)
        out = [self._cache.get(int(i)) or once[int(i)] for i in indices]
        return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]

    def predict(self, indices: Sequence[int] | np.ndarray, batch_size: int = 64) -> list[Prediction]:
        """Predictions of the detector's current head on ``indices`` from cached features."""
        preds: list[Prediction] = []
        for s in range(0, len(indices), batch_size):
            feats, sizes, orig = self.get(indices[s : s + batch_size])
            preds.extend(self.detector.predict_from_features(feats, sizes, orig))
        return preds


class HeadOnly(Objective):
    """The detector's loss, head parameters only, on cached features.

    ``schedule(it)`` gives the image indices of iteration ``it``; ``targets[i]`` is image ``i``'s torchvision
    target in original pixels (labels shifted by one). ``iterations`` fixes the run's length.
    """

    name = "head_only"

    def __init__(self, cache: FeatureCache, targets: dict[int, dict[str, torch.Tensor]],
                 schedule: Callable[[int], Sequence[int] | np.ndarray], iterations: int) -> None:  # fmt: skip
        self.cache, self.targets, self.schedule, self.iterations = cache, targets, schedule, iterations

    def parameters(self) -> Iterator[nn.Parameter]:
        yield from self.detector.module.head.parameters()

    def train_mode(self) -> None:
        self.detector.model.eval()
        self.detector.module.head.train()

    def total_iterations(self, cfg: TrainConfig) -> int:
        return self.iterations

    def batches(self, cfg: TrainConfig, start: int, stop: int) -> Iterable[Any]:
        for it in range(start, stop):
            idx = [int(i) for i in self.schedule(it)]
            feats, sizes, orig = self.cache.get(idx)
            targets = Detector.scale_targets([self.targets[i] for i in idx], sizes, orig)
            yield feats, sizes, targets

    def loss(self, batch: Any, it: int, total: int) -> dict[str, torch.Tensor]:
        feats, sizes, targets = batch
        return self.detector.head_losses(feats, sizes, targets)


__all__ = ["FeatureCache", "HeadOnly"]

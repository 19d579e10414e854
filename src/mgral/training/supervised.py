"""Supervised training: the :class:`Supervised` objective and :func:`train_supervised`, its shortcut.

Batch ``k`` is a slice of the permutation of epoch ``k // steps_per_epoch`` seeded by ``(seed, epoch)``,
and the augmentation of the sample at position ``p`` of batch ``k`` is seeded by ``(seed, k, p)``, so a
run resumed at any iteration sees the same batches as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mgral.config import TrainConfig
from mgral.data.dataset import DetectionDataset, Indices
from mgral.data.torch_data import ScheduleSampler, TrainSamples, collate
from mgral.detectors.detector import Detector
from mgral.training.engine import Objective, fit, num_iterations


class Supervised(Objective):
    """The detector's own loss on ``dataset[indices]`` with ground-truth boxes."""

    name = "supervised"

    def __init__(
        self, dataset: DetectionDataset, indices: Indices, *, seed: int, augment: str = "flip"
    ) -> None:
        if len(indices) == 0:
            raise ValueError("no labeled images to train on")
        self.dataset, self.indices, self.seed, self.augment = dataset, indices, seed, augment

    def total_iterations(self, cfg: TrainConfig) -> int:
        return num_iterations(cfg, len(self.indices))

    def batches(self, cfg: TrainConfig, start: int, stop: int) -> Iterable[Any]:
        samples = TrainSamples(self.dataset, self.augment, self.seed)
        return DataLoader(
            samples, batch_sampler=ScheduleSampler(self.indices, cfg.batch_size, self.seed, start, stop),
            num_workers=cfg.num_workers, collate_fn=collate, pin_memory=self.detector.device.type == "cuda",
        )  # fmt: skip

    def loss(self, batch: Any, it: int, total: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        return self.detector.model(images, targets)


def train_supervised(
    detector: Detector,
    dataset: DetectionDataset,
    indices: Indices,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``detector`` on ``dataset[indices]`` with ``cfg``; returns iterations, seconds, final loss."""
    objective = Supervised(dataset, indices, seed=seed, augment=cfg.augment)
    return fit(detector, objective, cfg, checkpoint=checkpoint, progress=progress, desc="train")


__all__ = ["Supervised", "train_supervised"]

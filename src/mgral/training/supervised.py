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
from mgral.data.torch_data import ScheduleSampler, TrainSamples, batch_schedule, collate, keyed_batch_schedule
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


class TwoStream(Objective):
    """Supervised training on two streams per step: ``labeled_per_step`` images of ``labeled`` (a permutation
    per epoch, seeded by ``seed``) and ``batch_per_step`` images of ``batch``, whose passes are ordered by a
    random key per image (:func:`~mgral.data.torch_data.keyed_batch_schedule`, seeded by ``batch_seed``).

    Two runs with different batches thus see the same labeled minibatches and visit shared batch images in
    the same relative order (common random numbers); an empty batch gives the paired control. Targets of
    the batch come from ``batch_targets`` (pseudo-labels) or, when ``None``, from ``dataset``.
    Augmentation of a batch image is keyed by ``(pass, image)``, not by its position.
    """

    name = "two_stream"

    def __init__(self, dataset: DetectionDataset, labeled: Indices, batch: Indices, *, seed: int, batch_seed: int,
                 iterations: int, batch_per_step: int = 8, augment: str = "flip",
                 batch_targets: dict[int, dict[str, torch.Tensor]] | None = None) -> None:  # fmt: skip
        self.dataset, self.labeled, self.batch = dataset, labeled, batch
        self.seed, self.batch_seed, self.iterations, self.augment = seed, batch_seed, iterations, augment
        self.batch_per_step, self.batch_targets = batch_per_step, batch_targets

    def total_iterations(self, cfg: TrainConfig) -> int:
        return self.iterations

    def batches(self, cfg: TrainConfig, start: int, stop: int) -> Iterable[Any]:
        samples = TrainSamples(self.dataset, self.augment, self.seed, pseudo_targets=self.batch_targets)
        bps = self.batch_per_step

        def keys() -> Iterable[list[tuple[int, int, int]]]:
            for it in range(start, stop):
                lab = batch_schedule(self.labeled, cfg.batch_size, self.seed, it) if len(self.labeled) else []
                out = [(it, p, i) for p, i in enumerate(lab)]
                if len(self.batch):
                    per_pass = max(1, -(-len(self.batch) // bps))
                    extra = keyed_batch_schedule(self.batch, bps, self.batch_seed, it)
                    out += [
                        (it // per_pass, 1_000_000 + i, i) for i in extra
                    ]  # augmentation keyed by (pass, image)
                yield out

        return DataLoader(
            samples, batch_sampler=list(keys()), num_workers=cfg.num_workers, collate_fn=collate
        )

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


__all__ = ["Supervised", "TwoStream", "train_supervised"]

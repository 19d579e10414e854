"""From records to tensors: image loading, training targets, seeded augmentation, loaders.

Randomness in augmentation depends only on ``(seed, iteration, position in batch)``, never on the
worker that loads a sample or on global state, so a training run resumed at iteration ``k`` sees the
same batches as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mgral.data.dataset import DetectionDataset, Indices
from mgral.utils import derive_seed


def image_tensor(dataset: DetectionDataset, i: int) -> torch.Tensor:
    """``float32[3, H, W]`` in ``[0, 1]``."""
    return F.to_dtype(F.to_image(dataset.load_image(i)), torch.float32, scale=True)


def target_for(dataset: DetectionDataset, i: int) -> dict[str, torch.Tensor]:
    """torchvision target of image ``i``: ignored boxes dropped, labels shifted by one (0 = background)."""
    rec = dataset.images[i]
    keep = ~rec.ignore
    return {
        "boxes": torch.as_tensor(rec.boxes[keep], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(rec.labels[keep] + 1, dtype=torch.int64),
    }


def build_augment(name: str) -> v2.Transform | None:
    if name == "none":
        return None
    if name == "flip":
        return v2.RandomHorizontalFlip(0.5)
    if name == "ssd":  # the SSD paper's recipe, as in torchvision's detection references
        return v2.Compose(
            [
                v2.RandomPhotometricDistort(p=0.5),
                v2.RandomZoomOut(fill={tv_tensors.Image: (124, 116, 104), "others": 0}),
                v2.RandomIoUCrop(),
                v2.RandomHorizontalFlip(0.5),
                v2.SanitizeBoundingBoxes(),
            ]
        )
    raise ValueError(f"unknown augmentation {name!r}")


class TrainSamples(Dataset):
    """Training samples keyed by ``(iteration, position, dataset index)``; see the module docstring."""

    def __init__(self, dataset: DetectionDataset, augment: str, seed: int,
                 pseudo_targets: dict[int, dict[str, torch.Tensor]] | None = None) -> None:  # fmt: skip
        self.dataset = dataset
        self.augment = build_augment(augment)
        self.seed = seed
        self.pseudo_targets = pseudo_targets or {}

    def __len__(self) -> int:  # pragma: no cover - accessed by key only
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        iteration, pos, i = key
        img = image_tensor(self.dataset, i)
        target = self.pseudo_targets.get(i) or target_for(self.dataset, i)
        if self.augment is None:
            return img, target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "augment", iteration, pos))
            boxes = tv_tensors.BoundingBoxes(
                target["boxes"], format="XYXY", canvas_size=tuple(img.shape[-2:])
            )
            out_img, out_t = self.augment(tv_tensors.Image(img), {"boxes": boxes, "labels": target["labels"]})
        return out_img.as_subclass(torch.Tensor), {
            "boxes": out_t["boxes"].as_subclass(torch.Tensor).reshape(-1, 4),
            "labels": out_t["labels"],
        }


def _epoch_slices(n: int, batch_size: int) -> int:
    """Batches per epoch of ``n`` images: ``ceil(n / batch_size)``, except that a last batch of a single
    image (which batch norm cannot train on) is merged into the one before it."""
    per_epoch = max(1, int(np.ceil(n / batch_size)))
    if batch_size > 1 and n > batch_size and n % batch_size == 1:
        per_epoch -= 1
    return per_epoch


def _slice(order: np.ndarray, j: int, per_epoch: int, batch_size: int) -> np.ndarray:
    stop = len(order) if j == per_epoch - 1 and len(order) > per_epoch * batch_size else (j + 1) * batch_size
    return order[j * batch_size : stop]


def batch_schedule(indices: Indices, batch_size: int, seed: int, iteration: int) -> list[int]:
    """The dataset indices of batch ``iteration``: epoch ``e`` is a permutation seeded by ``(seed, e)``."""
    idx = np.asarray(indices)
    per_epoch = _epoch_slices(len(idx), batch_size)
    epoch, j = divmod(iteration, per_epoch)
    perm = np.random.default_rng(derive_seed(seed, "epoch", epoch)).permutation(len(idx))
    return idx[_slice(perm, j, per_epoch, batch_size)].tolist()


def keyed_batch_schedule(indices: Indices, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Like :func:`batch_schedule`, but epoch ``e``'s order sorts the images by a random key of
    ``(seed, e, image index)``: the randomness belongs to each image, not to its position in ``indices``.

    Two sets that share most images then visit the shared ones in the same relative order (common random
    numbers keyed by image), which :func:`batch_schedule` does not give: adding one image there reshuffles
    every position."""
    idx = np.asarray(indices)
    per_epoch = _epoch_slices(len(idx), batch_size)
    epoch, j = divmod(iteration, per_epoch)
    keys = np.array([derive_seed(seed, "keyed-epoch", epoch, int(i)) for i in idx], np.int64)
    order = np.lexsort((idx, keys))
    return idx[_slice(order, j, per_epoch, batch_size)].tolist()


class ScheduleSampler(Sampler):
    """Yields the keys of batches ``start .. stop - 1`` of :func:`batch_schedule`."""

    def __init__(self, indices: Indices, batch_size: int, seed: int, start: int, stop: int) -> None:
        self.indices, self.batch_size, self.seed, self.start, self.stop = (
            indices,
            batch_size,
            seed,
            start,
            stop,
        )

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for it in range(self.start, self.stop):
            batch = batch_schedule(self.indices, self.batch_size, self.seed, it)
            yield [(it, p, i) for p, i in enumerate(batch)]


def collate(batch: list[Any]) -> tuple[list[Any], ...]:
    return tuple(list(x) for x in zip(*batch))


class ImageOnly(Dataset):
    """Images of ``indices`` for inference (no targets, no augmentation)."""

    def __init__(self, dataset: DetectionDataset, indices: Indices) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        return image_tensor(self.dataset, int(self.indices[k]))


def inference_loader(
    dataset: DetectionDataset, indices: Indices, batch_size: int, num_workers: int
) -> DataLoader:
    return DataLoader(
        ImageOnly(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=list, persistent_workers=False,
    )  # fmt: skip

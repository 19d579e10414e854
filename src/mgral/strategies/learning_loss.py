"""Learning loss for active learning (Yoo and Kweon, CVPR 2019), the detection variant.

A *loss prediction module* is trained jointly with the detector: every backbone feature map is
global-average-pooled and mapped by a linear layer to ``width`` units with a ReLU, the results are
concatenated and a last linear layer predicts the image's loss. It learns from the margin ranking loss on
pairs of images of a minibatch (image ``i`` with image ``B - 1 - i``): ``max(0, -sign(l_i - l_j)(lhat_i -
lhat_j) + margin)``, the true per-image losses ``l`` detached, weighted by ``weight`` and added to the
detector's loss (the mean of the per-image detection losses). After ``detach_after`` of the iterations the
module's input is detached, so that it stops shaping the backbone (the paper: after 120 of 200 epochs; the
SSD ports at the learning-rate drop). Selection takes the unlabeled images with the highest predicted loss.

This changes how the detector is trained, so it is an objective of the training engine
(:class:`LearningLossObjective`) that the loop uses for this strategy's cycles; the module is saved with
each cycle's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mgral.config import TrainConfig
from mgral.data.dataset import DetectionDataset
from mgral.data.torch_data import inference_loader
from mgral.detectors.detector import Detector
from mgral.strategies.base import ScoringStrategy, SelectionContext, register_strategy
from mgral.training.engine import Objective
from mgral.training.supervised import Supervised
from mgral.utils import derive_seed


class LossPredictionModule(nn.Module):
    """GAP -> Linear(C_l, width) -> ReLU per feature map, concatenated, -> Linear -> one loss per image."""

    def __init__(self, channels: list[int], width: int = 128) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(c, width) for c in channels)
        self.out = nn.Linear(width * len(channels), 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        pooled = [F.relu(fc(f.float().mean(dim=(2, 3)))) for f, fc in zip(feats, self.fcs)]
        return self.out(torch.cat(pooled, 1)).squeeze(1)


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The margin ranking loss over the pairs ``(i, B - 1 - i)`` of a minibatch (targets detached)."""
    half = len(predicted) // 2
    if half == 0:
        return predicted.sum() * 0.0
    p_i, p_j = predicted[:half], predicted.flip(0)[:half]
    t_i, t_j = target[:half].detach(), target.flip(0)[:half].detach()
    sign = torch.where(t_i > t_j, 1.0, -1.0)
    return F.relu(-sign * (p_i - p_j) + margin).mean()


class LearningLossObjective(Supervised):
    """Supervised training plus the loss prediction module (see the module docstring)."""

    name = "learning_loss"
    lpm: LossPredictionModule

    def __init__(self, dataset: DetectionDataset, indices: Any, *, seed: int, augment: str = "flip", margin: float = 1.0,
                 weight: float = 1.0, detach_after: float = 0.6, width: int = 128) -> None:  # fmt: skip
        super().__init__(dataset, indices, seed=seed, augment=augment)
        self.margin, self.weight, self.detach_after, self.width = margin, weight, detach_after, width

    def bind(self, detector: Detector) -> None:
        super().bind(detector)
        with torch.no_grad():
            was = detector.model.training
            detector.model.eval()
            image_list, _ = detector.transform([torch.zeros(3, 64, 64, device=detector.device)])
            channels = [int(f.shape[1]) for f in detector.features(image_list.tensors)]
            detector.model.train(was)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "loss-prediction-module"))
            self.lpm = LossPredictionModule(channels, self.width).to(detector.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"lpm": self.lpm}

    def loss(self, batch: Any, it: int, total: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        det = self.detector
        image_list, resized = det.transform(images, targets)
        assert resized is not None
        feats = det.features(image_list.tensors)
        per_image = det.losses_per_image(resized, det.head(feats), det.anchors(image_list, feats))
        module_input = [f.detach() for f in feats] if it >= self.detach_after * total else feats
        predicted = self.lpm(module_input)
        return {"detection": per_image.mean(), "loss_prediction": self.weight * ranking_loss(predicted, per_image,
                                                                                             self.margin)}  # fmt: skip

    @torch.no_grad()
    def predict_losses(
        self, dataset: DetectionDataset, indices: np.ndarray, batch_size: int = 32
    ) -> np.ndarray:
        """The module's predicted loss of each image of ``dataset[indices]``."""
        det = self.detector
        det.model.eval()
        self.lpm.eval()
        out = []
        for images in inference_loader(dataset, indices, batch_size, 0):
            image_list, _ = det.transform([im.to(det.device) for im in images])
            out.append(self.lpm(det.features(image_list.tensors)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


@register_strategy
class LearningLossStrategy(ScoringStrategy):
    """Top predicted loss (see the module docstring)."""

    name = "learning_loss"
    needs = frozenset({"objective"})

    @dataclass(frozen=True)
    class Options:
        margin: float = 1.0  # of the ranking loss
        weight: float = 1.0  # lambda: the ranking loss's weight beside the detection loss
        detach_after: float = 0.6  # fraction of the iterations after which the module's input is detached
        width: int = 128  # units per feature map in the module

        def __post_init__(self) -> None:
            if not 0 <= self.detach_after <= 1:
                raise ValueError(f"detach_after must be in [0, 1], got {self.detach_after}")

    def training_objective(self, dataset: DetectionDataset, labeled: np.ndarray, unlabeled: np.ndarray,
                           train: TrainConfig, *, seed: int) -> Objective | None:  # fmt: skip
        o = self.options
        return LearningLossObjective(dataset, labeled, seed=seed, augment=train.augment, margin=o.margin, weight=o.weight,
                                     detach_after=o.detach_after, width=o.width)  # fmt: skip

    def score(self, ctx: SelectionContext) -> np.ndarray:
        objective = ctx.objective
        assert isinstance(objective, LearningLossObjective)
        return objective.predict_losses(ctx.dataset, ctx.unlabeled)


__all__ = ["LearningLossObjective", "LearningLossStrategy", "LossPredictionModule", "ranking_loss"]

"""Model builders over torchvision's detection models, in a registry.

Every builder takes ``(cfg, num_classes)`` where ``num_classes`` counts the background (index 0), and
returns a torchvision ``SSD`` or ``RetinaNet`` module. The tiny models train from scratch on a CPU in
seconds at 64-128 px; ``ssd300_vgg16`` and ``retinanet_resnet50_fpn`` are the paper's detectors.
"""

from __future__ import annotations

import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.ops import FeaturePyramidNetwork

from mgral.config import DetectorConfig
from mgral.errors import InputError

log = logging.getLogger(__name__)

ModelBuilder = Callable[[DetectorConfig, int], nn.Module]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def wrap(fn: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return wrap


def build_model(cfg: DetectorConfig, num_classes: int) -> nn.Module:
    """Build the registered model ``cfg.name`` for ``num_classes`` object classes (background added)."""
    if cfg.name not in MODELS:
        raise InputError(
            "detector.name", f"unknown detector {cfg.name!r}; known: {', '.join(sorted(MODELS))}"
        )
    model: Any = MODELS[cfg.name](cfg, num_classes + 1)
    if cfg.score_thresh is not None:
        model.score_thresh = cfg.score_thresh
    if cfg.detections_per_img is not None:
        model.detections_per_img = cfg.detections_per_img
    return model


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyBackbone(nn.Module):
    """A small VGG-like backbone returning feature maps at strides 8, 16, 32 and 64.

    Returns ``OrderedDict[str, Tensor[B, C_l, H_l, W_l]]``; ``out_channels`` lists ``C_l``.
    """

    def __init__(self, width: int = 32, num_levels: int = 4) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            _conv(3, w // 2, 2), _conv(w // 2, w, 2), _conv(w, w, 1), _conv(w, 2 * w, 2)
        )
        chans = [2 * w, 4 * w, 4 * w, 4 * w][:num_levels]
        self.stages = nn.ModuleList()
        for k in range(1, num_levels):
            self.stages.append(nn.Sequential(_conv(chans[k - 1], chans[k], 2), _conv(chans[k], chans[k], 1)))
        self.out_channels = chans

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = OrderedDict()
        x = self.stem(x)
        feats["0"] = x
        for k, stage in enumerate(self.stages, 1):
            x = stage(x)
            feats[str(k)] = x
        return feats


class TinyFPNBackbone(nn.Module):
    """:class:`TinyBackbone` (strides 8-32) followed by torchvision's FPN to ``out_channels`` channels."""

    def __init__(self, width: int = 32, out_channels: int = 64) -> None:
        super().__init__()
        self.body = TinyBackbone(width, num_levels=3)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


@register_model("tiny_ssd")
def tiny_ssd(cfg: DetectorConfig, num_classes: int) -> nn.Module:
    """SSD with :class:`TinyBackbone`; anchors span 8-85 % of the image side (4 levels)."""
    backbone = TinyBackbone(cfg.width, num_levels=4)
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2]], scales=[0.1, 0.2, 0.37, 0.6, 0.85])
    head = SSDHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes)
    s = cfg.image_size
    return SSD(backbone, anchors, (s, s), num_classes, image_mean=[0.5] * 3, image_std=[0.25] * 3, head=head)


@register_model("tiny_retinanet")
def tiny_retinanet(cfg: DetectorConfig, num_classes: int) -> nn.Module:
    """RetinaNet with :class:`TinyFPNBackbone` (3 levels, 64 channels) and a GroupNorm head."""
    backbone = TinyFPNBackbone(cfg.width, 64)
    s = cfg.image_size / 96.0
    sizes = tuple((round(b * s), round(b * s * 1.5)) for b in (8, 16, 32))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 3)
    # GroupNorm in the head (as torchvision's RetinaNet v2) makes training from scratch converge in minutes
    head = RetinaNetHead(
        64, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 16)
    )
    return RetinaNet(
        backbone, num_classes, min_size=cfg.image_size, max_size=cfg.image_size, image_mean=[0.5] * 3,
        image_std=[0.25] * 3, anchor_generator=anchors, head=head,
    )  # fmt: skip


def _backbone_weights(weights: Any) -> Any:
    """Fetch torchvision weights, turning a missing cache and no network into a clear error."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    fname = weights.url.rsplit("/", 1)[-1]
    if (hub / fname).is_file():
        return weights
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        weights.get_state_dict(progress=False)
    except Exception as exc:  # noqa: BLE001 - any download failure is the same error for the user
        raise InputError(
            "detector.pretrained",
            f"weights {weights} are not in the cache {hub / fname} and could not be downloaded "
            f"({exc.__class__.__name__}); put the file there or set detector.pretrained=none",
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    return weights


@register_model("ssd300_vgg16")
def ssd300_vgg16(cfg: DetectorConfig, num_classes: int) -> nn.Module:
    """torchvision's SSD300 with a VGG16 backbone (the paper's VOC detector)."""
    from torchvision.models import VGG16_Weights
    from torchvision.models.detection import ssd300_vgg16 as tv_ssd300

    wb = _backbone_weights(VGG16_Weights.IMAGENET1K_FEATURES) if cfg.pretrained == "backbone" else None
    return tv_ssd300(weights=None, weights_backbone=wb, num_classes=num_classes)


@register_model("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(cfg: DetectorConfig, num_classes: int) -> nn.Module:
    """torchvision's RetinaNet with a ResNet-50 FPN backbone (the paper's COCO detector)."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.detection import retinanet_resnet50_fpn as tv_retinanet

    wb = _backbone_weights(ResNet50_Weights.IMAGENET1K_V1) if cfg.pretrained == "backbone" else None
    return tv_retinanet(weights=None, weights_backbone=wb, num_classes=num_classes)

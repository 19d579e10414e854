"""One interface for every detector: train, predict (with class-probability vectors), embed.

:class:`Detector` wraps a torchvision ``SSD`` (softmax classifier, background at index 0) or
``RetinaNet`` (sigmoid classifier). Its own post-processing mirrors torchvision's (score threshold,
per-class top-k, class-wise NMS, detections per image) but keeps, for every kept box, the anchor's whole
class-probability vector, which uncertainty strategies need.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms, clip_boxes_to_image
from tqdm.auto import tqdm

from mgral.config import DetectorConfig, SemiConfig, TrainConfig
from mgral.data.dataset import DetectionDataset, Indices
from mgral.data.torch_data import inference_loader
from mgral.detectors.models import build_model

log = logging.getLogger(__name__)

EMBED_DIM = 256


class Prediction(NamedTuple):
    """Detections of one image, in original image pixels.

    boxes (float32[K, 4]) in [x1, y1, x2, y2]; scores (float32[K]); labels (int64[K]) class indices
    0..C-1; probs (float32[K, P]): the anchor's class distribution, P = C + 1 with background at column
    0 for softmax models (SSD), P = C independent sigmoids for RetinaNet.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    probs: np.ndarray

    @staticmethod
    def empty(num_probs: int) -> Prediction:
        return Prediction(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
            np.zeros((0, num_probs), np.float32),
        )  # fmt: skip


class Inference(NamedTuple):
    predictions: list[Prediction] | None  # aligned with the indices asked for
    embeddings: np.ndarray | None  # float32[N, 256]


def _per_class_topk(scores: torch.Tensor, classes: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best scores within each class (vectorised)."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(classes[order], stable=True)]
    cls_sorted = classes[order]
    first = torch.searchsorted(cls_sorted, cls_sorted, right=False)
    rank = torch.arange(len(order), device=scores.device) - first
    return order[rank < k]


class Detector:
    """A detection model with ``fit``, ``infer`` (predictions and/or embeddings) and state round-trips.

    ``num_classes`` counts object classes only. ``seed`` fixes the initial weights.
    """

    def __init__(
        self, cfg: DetectorConfig, num_classes: int, *, seed: int = 0, device: str | torch.device = "cpu"
    ) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_model(cfg, num_classes).to(self.device)
        if not isinstance(self.model, (SSD, RetinaNet)):
            raise TypeError("detectors must be torchvision SSD or RetinaNet modules")
        self.softmax = isinstance(self.model, SSD)
        self._projection: torch.Tensor | None = None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_classes": self.num_classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])

    def save(self, path: str | Path) -> None:
        from mgral.utils import atomic_torch_save

        atomic_torch_save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))

    @property
    def _module(self) -> Any:
        """The model, typed loosely: torchvision's detection attributes are not declared to type checkers."""
        return self.model

    @property
    def num_probs(self) -> int:
        return self.num_classes + 1 if self.softmax else self.num_classes

    # ----------------------------------------------------------------- training
    def fit(
        self,
        dataset: DetectionDataset,
        indices: Indices,
        train_cfg: TrainConfig,
        *,
        seed: int,
        checkpoint: str | Path | None = None,
        progress: bool = True,
    ) -> dict[str, float]:
        """Supervised training on ``dataset[indices]``; see :func:`mgral.training.supervised.train_supervised`."""
        from mgral.training.supervised import train_supervised

        return train_supervised(
            self, dataset, indices, train_cfg, seed=seed, checkpoint=checkpoint, progress=progress
        )

    def fit_semi(
        self,
        dataset: DetectionDataset,
        labeled: Indices,
        unlabeled: Indices,
        train_cfg: TrainConfig,
        semi_cfg: SemiConfig,
        *,
        seed: int,
        checkpoint: str | Path | None = None,
        progress: bool = True,
    ) -> dict[str, float]:
        """Semi-supervised training (ISD or SED); see :mod:`mgral.training.semi_supervised`."""
        from mgral.training.semi_supervised import train_semi_supervised

        return train_semi_supervised(
            self,
            dataset,
            labeled,
            unlabeled,
            train_cfg,
            semi_cfg,
            seed=seed,
            checkpoint=checkpoint,
            progress=progress,
        )

    # ----------------------------------------------------------------- inference
    def _features(self, images: list[torch.Tensor]) -> tuple[Any, list[torch.Tensor], list[tuple[int, int]]]:
        m: Any = self.model
        original = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, _ = m.transform(images)
        feats = m.backbone(image_list.tensors)
        if isinstance(feats, torch.Tensor):
            feats = OrderedDict([("0", feats)])
        return image_list, list(feats.values()), original

    def _embed(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """256-d image embedding: global-average-pooled feature maps, averaged over levels when they
        all have 256 channels (FPN), else concatenated and mapped by a fixed Gaussian projection."""
        pooled = [f.float().mean(dim=(2, 3)) for f in feats]
        if all(p.shape[1] == EMBED_DIM for p in pooled):
            return torch.stack(pooled, 0).mean(0)
        cat = torch.cat(pooled, 1)
        if self._projection is None or self._projection.shape[0] != cat.shape[1]:
            g = torch.Generator().manual_seed(0)
            proj = torch.randn(cat.shape[1], EMBED_DIM, generator=g) / EMBED_DIM**0.5
            self._projection = proj.to(cat.device)
        return cat @ self._projection

    def _postprocess_ssd(
        self, head: dict[str, torch.Tensor], anchors: list[torch.Tensor], sizes: list
    ) -> list[dict]:
        m: Any = self.model
        out = []
        probs_all = torch.softmax(head["cls_logits"].float(), -1)
        for reg, probs, anc, size in zip(head["bbox_regression"], probs_all, anchors, sizes):
            boxes = clip_boxes_to_image(m.box_coder.decode_single(reg.float(), anc), size)
            fg = probs[:, 1:]
            a_idx, c_idx = torch.nonzero(fg > m.score_thresh, as_tuple=True)
            scores = fg[a_idx, c_idx]
            keep = _per_class_topk(scores, c_idx, m.topk_candidates)
            a_idx, c_idx, scores = a_idx[keep], c_idx[keep], scores[keep]
            keep = batched_nms(boxes[a_idx], scores, c_idx, m.nms_thresh)[: m.detections_per_img]
            a_idx, c_idx = a_idx[keep], c_idx[keep]
            out.append(
                {"boxes": boxes[a_idx], "scores": scores[keep], "labels": c_idx, "probs": probs[a_idx]}
            )
        return out

    def _postprocess_retinanet(self, head: dict[str, torch.Tensor], anchors: list[torch.Tensor],
                               feats: list[torch.Tensor], sizes: list) -> list[dict]:  # fmt: skip
        m: Any = self.model
        hw = [f.shape[-2] * f.shape[-1] for f in feats]
        a_per_loc = head["cls_logits"].shape[1] // sum(hw)
        split = [n * a_per_loc for n in hw]
        out = []
        for b, (anc, size) in enumerate(zip(anchors, sizes)):
            logits = head["cls_logits"][b].float()
            regs = head["bbox_regression"][b].float()
            probs = torch.sigmoid(logits)[:, 1:]  # column 0 is the never-trained background label
            cand_a, cand_c, cand_s = [], [], []
            start = 0
            for n in split:
                p = probs[start : start + n].flatten()
                keep = torch.nonzero(p > m.score_thresh).squeeze(1)
                k = min(m.topk_candidates, len(keep))
                s, top = p[keep].topk(k)
                flat = keep[top]
                cand_a.append(flat // probs.shape[1] + start)
                cand_c.append(flat % probs.shape[1])
                cand_s.append(s)
                start += n
            a_idx, c_idx, scores = torch.cat(cand_a), torch.cat(cand_c), torch.cat(cand_s)
            boxes = m.box_coder.decode_single(regs[a_idx], anc[a_idx])
            boxes = clip_boxes_to_image(boxes, size)
            keep = batched_nms(boxes, scores, c_idx, m.nms_thresh)[: m.detections_per_img]
            out.append(
                {
                    "boxes": boxes[keep],
                    "scores": scores[keep],
                    "labels": c_idx[keep],
                    "probs": probs[a_idx[keep]],
                }
            )
        return out

    # ----------------------------------------------------------------- head-level access
    # The MGRAL reward fine-tunes only the detection head on cached backbone features; these helpers
    # split torchvision's forward into backbone features and head losses/predictions.
    @torch.no_grad()
    def backbone_features(
        self, images: list[torch.Tensor]
    ) -> tuple[list[list[torch.Tensor]], list[tuple[int, int]], list[tuple[int, int]]]:
        """Per image: its feature maps (``[C_l, H_l, W_l]`` per level), its size after the model's
        transform, and its original size."""
        self.model.eval()
        image_list, feats, original = self._features([im.to(self.device) for im in images])
        per_image = [[f[b] for f in feats] for b in range(len(images))]
        return per_image, [tuple(s) for s in image_list.image_sizes], original

    def _stack(
        self, feats: list[list[torch.Tensor]], sizes: list[tuple[int, int]]
    ) -> tuple[Any, list[torch.Tensor]]:
        from torchvision.models.detection.image_list import ImageList

        levels = []
        for level in range(len(feats[0])):
            maps = [f[level] for f in feats]
            h = max(m.shape[-2] for m in maps)
            w = max(m.shape[-1] for m in maps)
            levels.append(
                torch.stack(
                    [torch.nn.functional.pad(m, (0, w - m.shape[-1], 0, h - m.shape[-2])) for m in maps]
                )
            )
        hmax, wmax = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if self.softmax:  # SSD resizes to a fixed size
            hmax, wmax = sizes[0]
        placeholder = torch.zeros(1, 1, 1, 1, device=self.device).expand(len(feats), 3, hmax, wmax)
        return ImageList(placeholder, list(sizes)), levels

    @staticmethod
    def scale_targets(targets: list[dict[str, torch.Tensor]], sizes: list[tuple[int, int]],
                      original: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:  # fmt: skip
        """Targets in original pixels -> the model's transformed image space."""
        out = []
        for t, (h, w), (oh, ow) in zip(targets, sizes, original):
            scale = torch.tensor(
                [w / ow, h / oh, w / ow, h / oh], dtype=torch.float32, device=t["boxes"].device
            )
            out.append({"boxes": t["boxes"] * scale, "labels": t["labels"]})
        return out

    def head_losses(self, feats: list[list[torch.Tensor]], sizes: list[tuple[int, int]],
                    targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:  # fmt: skip
        """The model's training losses computed from cached features (targets in transformed space)."""
        from torchvision.ops import box_iou

        m = self._module
        image_list, levels = self._stack(feats, sizes)
        head = m.head(levels)
        anchors = m.anchor_generator(image_list, levels)
        if not self.softmax:
            return m.compute_loss(targets, head, anchors)
        matched = []
        for anc, t in zip(anchors, targets):
            if t["boxes"].numel() == 0:
                matched.append(torch.full((anc.size(0),), -1, dtype=torch.int64, device=anc.device))
            else:
                matched.append(m.proposal_matcher(box_iou(t["boxes"], anc)))
        return m.compute_loss(targets, head, anchors, matched)

    @torch.no_grad()
    def predict_from_features(self, feats: list[list[torch.Tensor]], sizes: list[tuple[int, int]],
                              original: list[tuple[int, int]]) -> list[Prediction]:  # fmt: skip
        image_list, levels = self._stack(feats, sizes)
        return self._predict(image_list, levels, original)

    def _predict(
        self, image_list: Any, feats: list[torch.Tensor], original: list[tuple[int, int]]
    ) -> list[Prediction]:
        head = self._module.head(feats)
        anchors = self._module.anchor_generator(image_list, feats)
        if self.softmax:
            dets = self._postprocess_ssd(head, anchors, image_list.image_sizes)
        else:
            dets = self._postprocess_retinanet(head, anchors, feats, image_list.image_sizes)
        dets = self._module.transform.postprocess(dets, image_list.image_sizes, original)
        return [
            Prediction(
                d["boxes"].cpu().numpy().astype(np.float32),
                d["scores"].cpu().numpy().astype(np.float32),
                d["labels"].cpu().numpy().astype(np.int64),
                d["probs"].cpu().numpy().astype(np.float32),
            )  # fmt: skip
            for d in dets
        ]

    @torch.no_grad()
    def infer_batch(self, images: list[torch.Tensor], *, predictions: bool = True, embeddings: bool = False
                    ) -> tuple[list[Prediction] | None, torch.Tensor | None]:  # fmt: skip
        """Predictions and/or embeddings of a list of ``float32[3, H, W]`` images in ``[0, 1]``."""
        self.model.eval()
        images = [im.to(self.device) for im in images]
        image_list, feats, original = self._features(images)
        emb = self._embed(feats) if embeddings else None
        preds = self._predict(image_list, feats, original) if predictions else None
        return preds, emb

    def infer(
        self,
        dataset: DetectionDataset,
        indices: Indices,
        *,
        predictions: bool = True,
        embeddings: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = True,
        desc: str = "infer",
    ) -> Inference:
        """Run the detector over ``dataset[indices]`` in one pass."""
        preds: list[Prediction] = []
        embs: list[np.ndarray] = []
        loader = inference_loader(dataset, indices, batch_size, num_workers)
        for images in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
            p, e = self.infer_batch(images, predictions=predictions, embeddings=embeddings)
            if p is not None:
                preds.extend(p)
            if e is not None:
                embs.append(e.cpu().numpy().astype(np.float32))
        emb = (
            np.concatenate(embs, 0)
            if embs
            else (np.zeros((0, EMBED_DIM), np.float32) if embeddings else None)
        )
        return Inference(preds if predictions else None, emb)

    def predict(self, dataset: DetectionDataset, indices: Indices, **kw: Any) -> list[Prediction]:
        out = self.infer(dataset, indices, predictions=True, embeddings=False, **kw).predictions
        assert out is not None
        return out

    def embed(self, dataset: DetectionDataset, indices: Indices, **kw: Any) -> np.ndarray:
        out = self.infer(dataset, indices, predictions=False, embeddings=True, **kw).embeddings
        assert out is not None
        return out

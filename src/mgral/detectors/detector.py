"""One interface over torchvision's SSD and RetinaNet: the model's pieces, predictions, embeddings.

:class:`Detector` is a model, not a trainer: it builds a registered torchvision ``SSD`` (softmax
classifier, background at index 0) or ``RetinaNet`` (sigmoid classifier) and exposes its forward in
pieces (transform, backbone features, head, anchors, losses) so that training objectives
(:mod:`mgral.training`) and strategies can use them. Its post-processing mirrors torchvision's (score
threshold, per-class top-k, class-wise NMS, detections per image) but keeps, for every kept box, the
anchor's whole class-probability vector, which uncertainty strategies need; a test checks that boxes,
scores and labels equal torchvision's own ``postprocess_detections``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, roi_align

from mgral.config import DetectorConfig
from mgral.data.dataset import DetectionDataset, Indices
from mgral.data.structures import EMBED_DIM, Inference, Prediction
from mgral.data.torch_data import inference_loader
from mgral.detectors.models import build_model
from mgral.utils import atomic_torch_save, progress_bar, safe_torch_load

log = logging.getLogger(__name__)

__all__ = ["EMBED_DIM", "Detector", "Inference", "Prediction"]


def _per_class_topk(scores: torch.Tensor, classes: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best scores within each class (vectorised)."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(classes[order], stable=True)]
    cls_sorted = classes[order]
    first = torch.searchsorted(cls_sorted, cls_sorted, right=False)
    rank = torch.arange(len(order), device=scores.device) - first
    return order[rank < k]


class Detector:
    """A detection model: its pieces, predictions (with class-probability vectors), 256-d embeddings.

    ``num_classes`` counts object classes only (torchvision's background label is added internally).
    ``seed`` fixes the initial weights. Training lives in :mod:`mgral.training`.
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
        self._projections: dict[int, torch.Tensor] = {}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_classes": self.num_classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])

    def save(self, path: str | Path) -> None:
        atomic_torch_save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(safe_torch_load(path, self.device))

    @property
    def module(self) -> Any:
        """The torchvision model, typed loosely: its detection attributes are not declared to type checkers."""
        return self.model

    @property
    def num_probs(self) -> int:
        """Columns of a detection's class-probability vector: C + 1 (softmax, background first) or C."""
        return self.num_classes + 1 if self.softmax else self.num_classes

    # ----------------------------------------------------------------- the forward, in pieces
    def transform(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, torch.Tensor]] | None]:
        """The model's own resize and normalisation (targets, in original pixels, are resized with it)."""
        return self.module.transform(images, targets)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps ``[B, C_l, H_l, W_l]`` of a normalised batch, finest level first."""
        feats = self.module.backbone(x)
        if isinstance(feats, torch.Tensor):
            return [feats]
        return list(feats.values())

    def head(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``cls_logits [B, A, P']`` and ``bbox_regression [B, A, 4]`` over all levels' anchors."""
        return self.module.head(feats)

    def anchors(self, image_list: ImageList, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.module.anchor_generator(image_list, feats)

    def losses(
        self,
        targets: list[dict[str, torch.Tensor]],
        head: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The model's training losses from head outputs (targets in the transformed image space).

        A target may carry ``ignore_boxes`` (float[M, 4]): regions that are neither object nor background
        (pseudo-labels of uncertain score). Anchors that overlap one of them with IoU >= 0.5 and are not
        matched to an object are left out of the classification loss (RetinaNet: matched index -2, which
        torchvision ignores; SSD: excluded from the hard-negative pool). Without ignore boxes this is
        exactly torchvision's ``compute_loss``.
        """
        m = self.module
        matched = []
        for anc, t in zip(anchors, targets):
            if t["boxes"].numel() == 0:
                idx = torch.full((anc.size(0),), -1, dtype=torch.int64, device=anc.device)
            else:
                idx = m.proposal_matcher(box_iou(t["boxes"], anc))
            ign = t.get("ignore_boxes")
            if ign is not None and ign.numel():
                near = box_iou(ign.to(anc.device), anc).max(0).values >= 0.5
                idx = torch.where(near & (idx < 0), torch.full_like(idx, -2), idx)
            matched.append(idx)
        if not self.softmax:
            return m.head.compute_loss(targets, head, anchors, matched)
        if not any(bool((idx == -2).any()) for idx in matched):
            return m.compute_loss(targets, head, anchors, matched)
        return self._ssd_loss_with_ignore(targets, head, anchors, matched)

    def _ssd_loss_with_ignore(self, targets: list[dict[str, torch.Tensor]], head: dict[str, torch.Tensor],
                              anchors: list[torch.Tensor], matched: list[torch.Tensor]) -> dict[str, torch.Tensor]:  # fmt: skip
        """torchvision's SSD loss (smooth-L1 on positives, cross-entropy on positives and the hardest
        ``neg_to_pos_ratio`` x negatives), with anchors marked -2 neither positive nor negative."""
        m = self.module
        bbox_loss, cls_targets, ignored = [], [], []
        num_fg = 0
        for t, reg, anc, idx in zip(targets, head["bbox_regression"], anchors, matched):
            fg = torch.where(idx >= 0)[0]
            num_fg += fg.numel()
            target_reg = m.box_coder.encode_single(t["boxes"][idx[fg]], anc[fg])
            bbox_loss.append(torch.nn.functional.smooth_l1_loss(reg[fg], target_reg, reduction="sum"))
            cls_t = torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)
            cls_t[fg] = t["labels"][idx[fg]]
            cls_targets.append(cls_t)
            ignored.append(idx == -2)
        cls_target = torch.stack(cls_targets)
        ignore = torch.stack(ignored)
        logits = head["cls_logits"]
        cls_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), cls_target.reshape(-1), reduction="none"
        ).view(cls_target.size())
        foreground = cls_target > 0
        num_negative = m.neg_to_pos_ratio * foreground.sum(1, keepdim=True)
        negative_loss = cls_loss.clone()
        negative_loss[foreground | ignore] = -float("inf")
        values, order = negative_loss.sort(1, descending=True)
        background = (order.sort(1)[1] < num_negative) & torch.isfinite(negative_loss)
        n = max(1, num_fg)
        return {
            "bbox_regression": torch.stack(bbox_loss).sum() / n,
            "classification": (cls_loss[foreground].sum() + cls_loss[background].sum()) / n,
        }

    def losses_per_image(
        self,
        targets: list[dict[str, torch.Tensor]],
        head: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
    ) -> torch.Tensor:
        """The summed training loss of each image on its own: ``float[B]`` (what learning loss predicts)."""
        out = []
        for b in range(len(targets)):
            one = {k: v[b : b + 1] for k, v in head.items()}
            out.append(sum(self.losses([targets[b]], one, [anchors[b]]).values()))
        return torch.stack(out)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- inference
    def _image_features(
        self, images: list[torch.Tensor]
    ) -> tuple[ImageList, list[torch.Tensor], list[tuple[int, int]]]:
        original = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, _ = self.transform(images)
        return image_list, self.features(image_list.tensors), original

    def _projection(self, dim: int, device: torch.device) -> torch.Tensor:
        """A fixed Gaussian map ``R^dim -> R^256`` (seed 0), which preserves L2 distances in expectation."""
        if dim not in self._projections:
            g = torch.Generator().manual_seed(0)
            self._projections[dim] = torch.randn(dim, EMBED_DIM, generator=g) / EMBED_DIM**0.5
        return self._projections[dim].to(device)

    def _reduce(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        """Per-level pooled vectors ``[N, C_l]`` -> ``[N, 256]``: averaged when every level has 256
        channels (FPN), else concatenated and projected."""
        if all(p.shape[1] == EMBED_DIM for p in pooled):
            return torch.stack(pooled, 0).mean(0)
        cat = torch.cat(pooled, 1)
        return cat @ self._projection(cat.shape[1], cat.device)

    def embed_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """256-d image embedding: global-average-pooled feature maps (see :meth:`_reduce`)."""
        return self._reduce([f.float().mean(dim=(2, 3)) for f in feats])

    def instance_features(
        self, feats: list[torch.Tensor], boxes: list[torch.Tensor], image_size: tuple[int, int]
    ) -> list[torch.Tensor]:
        """256-d feature of each box: the image embedding computed over the box instead of the whole
        image (every level average-pooled inside the box with RoIAlign, then :meth:`_reduce`).

        ``boxes[b]`` float[K_b, 4] in the transformed image space of size ``image_size`` (the padded batch)."""
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [torch.zeros(0, EMBED_DIM, device=feats[0].device) for _ in boxes]
        pooled = []
        for f in feats:
            scale = f.shape[-1] / image_size[1]
            r = roi_align(
                f.float(), [b.float() for b in boxes], output_size=1, spatial_scale=scale, aligned=True
            )
            pooled.append(r.flatten(1))
        return list(self._reduce(pooled).split(counts))

    def _postprocess_ssd(
        self, head: dict[str, torch.Tensor], anchors: list[torch.Tensor], sizes: list
    ) -> list[dict]:
        m = self.module
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
        m = self.module
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
            boxes = clip_boxes_to_image(m.box_coder.decode_single(regs[a_idx], anc[a_idx]), size)
            keep = batched_nms(boxes, scores, c_idx, m.nms_thresh)[: m.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": c_idx[keep],
                        "probs": probs[a_idx[keep]]})  # fmt: skip
        return out

    def postprocess(
        self,
        head: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
        image_list: ImageList,
        feats: list[torch.Tensor],
        original: list[tuple[int, int]],
        *,
        instance_features: bool = False,
    ) -> list[Prediction]:
        """Head outputs -> :class:`Prediction` per image, in original pixels."""
        if self.softmax:
            dets = self._postprocess_ssd(head, anchors, image_list.image_sizes)
        else:
            dets = self._postprocess_retinanet(head, anchors, feats, image_list.image_sizes)
        inst: list[torch.Tensor | None] = [None] * len(dets)
        if instance_features:
            padded = (int(image_list.tensors.shape[-2]), int(image_list.tensors.shape[-1]))
            inst = list(self.instance_features(feats, [d["boxes"] for d in dets], padded))
        dets = self.module.transform.postprocess(dets, image_list.image_sizes, original)
        return [
            Prediction(
                d["boxes"].cpu().numpy().astype(np.float32),
                d["scores"].cpu().numpy().astype(np.float32),
                d["labels"].cpu().numpy().astype(np.int64),
                d["probs"].cpu().numpy().astype(np.float32),
                None if f is None else f.cpu().numpy().astype(np.float32),
            )  # fmt: skip
            for d, f in zip(dets, inst)
        ]

    @torch.no_grad()
    def infer_batch(
        self, images: list[torch.Tensor], *, predictions: bool = True, embeddings: bool = False,
        instance_features: bool = False,
    ) -> tuple[list[Prediction] | None, torch.Tensor | None]:  # fmt: skip
        """Predictions and/or embeddings of a list of ``float32[3, H, W]`` images in ``[0, 1]``."""
        self.model.eval()
        images = [im.to(self.device) for im in images]
        image_list, feats, original = self._image_features(images)
        emb = self.embed_features(feats) if embeddings else None
        preds = None
        if predictions:
            head = self.head(feats)
            anchors = self.anchors(image_list, feats)
            preds = self.postprocess(
                head, anchors, image_list, feats, original, instance_features=instance_features
            )
        return preds, emb

    def infer(
        self,
        dataset: DetectionDataset,
        indices: Indices,
        *,
        predictions: bool = True,
        embeddings: bool = False,
        instance_features: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = True,
        desc: str = "infer",
    ) -> Inference:
        """Run the detector over ``dataset[indices]`` in one pass."""
        preds: list[Prediction] = []
        embs: list[np.ndarray] = []
        loader = inference_loader(dataset, indices, batch_size, num_workers)
        with progress_bar(total=len(loader), desc=desc, enabled=progress, unit="batch") as bar:
            for images in loader:
                p, e = self.infer_batch(
                    images,
                    predictions=predictions,
                    embeddings=embeddings,
                    instance_features=instance_features,
                )
                if p is not None:
                    preds.extend(p)
                if e is not None:
                    embs.append(e.cpu().numpy().astype(np.float32))
                bar.update(1)
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

    # ----------------------------------------------------------------- cached backbone features
    # Training only the head on cached features (the MGRAL proxy's cheap mode) needs the forward split at
    # the backbone: features per image, then head losses / predictions from a stack of cached features.
    @torch.no_grad()
    def backbone_features(
        self, images: list[torch.Tensor]
    ) -> tuple[list[list[torch.Tensor]], list[tuple[int, int]], list[tuple[int, int]]]:
        """Per image: its feature maps (``[C_l, H_l, W_l]`` per level), its size after the model's
        transform, and its original size."""
        self.model.eval()
        image_list, feats, original = self._image_features([im.to(self.device) for im in images])
        per_image = [[f[b] for f in feats] for b in range(len(images))]
        return per_image, [tuple(s) for s in image_list.image_sizes], original

    def stack_features(
        self, feats: list[list[torch.Tensor]], sizes: list[tuple[int, int]]
    ) -> tuple[ImageList, list[torch.Tensor]]:
        """Cached per-image features -> a batch (zero-padded to the largest map per level) and its ImageList."""
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
            out.append({**t, "boxes": t["boxes"] * scale})
        return out

    def head_losses(self, feats: list[list[torch.Tensor]], sizes: list[tuple[int, int]],
                    targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:  # fmt: skip
        """The model's training losses from cached features (targets in the transformed space)."""
        image_list, levels = self.stack_features(feats, sizes)
        return self.losses(targets, self.head(levels), self.anchors(image_list, levels))

    @torch.no_grad()
    def predict_from_features(self, feats: list[list[torch.Tensor]], sizes: list[tuple[int, int]],
                              original: list[tuple[int, int]]) -> list[Prediction]:  # fmt: skip
        image_list, levels = self.stack_features(feats, sizes)
        head = self.head(levels)
        return self.postprocess(head, self.anchors(image_list, levels), image_list, levels, original)

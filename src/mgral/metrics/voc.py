"""Pascal VOC average precision at IoU 0.5, from arrays in memory, vectorised per class.

Matching follows the VOC devkit: every detection (in descending score order) is compared with the
ground-truth box of its image and class that it overlaps most; above the threshold it is a true positive
if that box is not already taken, a false positive if it is, and ignored if that box is ``difficult``.
Because a detection never falls back to its second-best box, "already taken" means "an earlier detection
has the same best box", which is a first-occurrence test on sorted keys: no per-detection Python loop.

Classes without any (non-difficult) ground truth have AP ``nan`` and are left out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mgral.data.dataset import DetectionDataset, Indices


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07: bool) -> float:
    """AP from a precision/recall curve: VOC2007 11-point interpolation, or the all-point area (VOC2010+)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07:
        ap = 0.0
        for t in np.linspace(0, 1, 11):
            mask = recall >= t
            ap += (precision[mask].max() if mask.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou_rows(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of ``det[i]`` with every box of ``gt[i]``: det float[D, 4], gt float[D, G, 4] -> float[D, G]."""
    ix = np.clip(np.minimum(det[:, None, 2], gt[..., 2]) - np.maximum(det[:, None, 0], gt[..., 0]), 0, None)
    iy = np.clip(np.minimum(det[:, None, 3], gt[..., 3]) - np.maximum(det[:, None, 1], gt[..., 1]), 0, None)
    inter = ix * iy
    a = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    b = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    union = a[:, None] + b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _class_ap(
    gt_img: np.ndarray, gt_box: np.ndarray, gt_ign: np.ndarray,
    det_img: np.ndarray, det_score: np.ndarray, det_box: np.ndarray,
    iou_thresh: float, use_07: bool, chunk: int = 65536,
) -> tuple[float, int]:  # fmt: skip
    npos = int((~gt_ign).sum())
    if npos == 0:
        return float("nan"), 0
    if len(det_img) == 0:
        return 0.0, npos
    order = np.argsort(-det_score, kind="stable")
    det_img, det_box = det_img[order], det_box[order]
    # pad the ground truth of each image that has any into rows of a [R, G, 4] array
    g_order = np.argsort(gt_img, kind="stable")
    gt_img, gt_box, gt_ign = gt_img[g_order], gt_box[g_order], gt_ign[g_order]
    imgs, first, counts = np.unique(gt_img, return_index=True, return_counts=True)
    rows, g_max = len(imgs), int(counts.max())
    slot = np.arange(len(gt_img)) - np.repeat(first, counts)
    row_of_gt = np.repeat(np.arange(rows), counts)
    pad_box = np.zeros((rows, g_max, 4), np.float64)
    pad_box[row_of_gt, slot] = gt_box
    pad_valid = np.zeros((rows, g_max), bool)
    pad_valid[row_of_gt, slot] = True
    pad_ign = np.zeros((rows, g_max), bool)
    pad_ign[row_of_gt, slot] = gt_ign
    pos = np.searchsorted(imgs, det_img)
    has_gt = (pos < rows) & (imgs[np.minimum(pos, rows - 1)] == det_img)
    ovmax = np.zeros(len(det_img))
    jmax = np.zeros(len(det_img), np.int64)
    for s in range(0, len(det_img), chunk):
        sl = slice(s, s + chunk)
        r = np.minimum(pos[sl], rows - 1)
        iou = np.where(pad_valid[r], _iou_rows(det_box[sl].astype(np.float64), pad_box[r]), -1.0)
        jmax[sl] = iou.argmax(1)
        ovmax[sl] = np.where(has_gt[sl], iou.max(1), -1.0)
    r = np.minimum(pos, rows - 1)
    hit = ovmax > iou_thresh
    ignored = hit & pad_ign[r, jmax]
    cand = hit & ~ignored
    key = r * g_max + jmax
    tp = np.zeros(len(det_img), bool)
    cand_idx = np.nonzero(cand)[0]
    _, first_occ = np.unique(key[cand_idx], return_index=True)
    tp[cand_idx[first_occ]] = True
    fp = ~tp & ~ignored
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    rec = tp_c / npos
    prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    return voc_ap(rec, prec, use_07), npos


def evaluate_voc(
    gt: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    dets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    iou_thresh: float = 0.5,
    use_07: bool = True,
) -> dict[str, Any]:
    """VOC AP per class and its mean.

    ``gt[i] = (boxes float[N, 4], labels int[N], ignore bool[N])`` and ``dets[i] = (boxes float[K, 4],
    scores float[K], labels int[K])`` for image ``i``; labels are ``0 .. num_classes - 1``.
    Returns ``{"mAP": float, "AP": float[num_classes] (nan where a class has no ground truth),
    "npos": int[num_classes]}``.
    """
    if len(gt) != len(dets):
        raise ValueError(f"{len(gt)} ground-truth images but {len(dets)} detection lists")

    def flat(items: Sequence[tuple[np.ndarray, ...]], k: int, width: int | None, dtype: Any) -> np.ndarray:
        parts = [
            np.asarray(x[k], dtype).reshape(-1, width) if width else np.asarray(x[k], dtype).reshape(-1)
            for x in items
        ]
        return np.concatenate(parts) if parts else np.zeros((0, width) if width else (0,), dtype)

    g_img = np.repeat(np.arange(len(gt)), [len(np.asarray(g[1]).reshape(-1)) for g in gt])
    g_box, g_lab, g_ign = flat(gt, 0, 4, np.float64), flat(gt, 1, None, np.int64), flat(gt, 2, None, bool)
    d_img = np.repeat(np.arange(len(dets)), [len(np.asarray(d[1]).reshape(-1)) for d in dets])
    d_box, d_sc, d_lab = (
        flat(dets, 0, 4, np.float64),
        flat(dets, 1, None, np.float64),
        flat(dets, 2, None, np.int64),
    )
    aps = np.full(num_classes, np.nan)
    npos = np.zeros(num_classes, np.int64)
    for c in range(num_classes):
        gm, dm = g_lab == c, d_lab == c
        aps[c], npos[c] = _class_ap(
            g_img[gm], g_box[gm], g_ign[gm], d_img[dm], d_sc[dm], d_box[dm], iou_thresh, use_07
        )
    valid = ~np.isnan(aps)
    return {"mAP": float(aps[valid].mean()) if valid.any() else float("nan"), "AP": aps, "npos": npos}


def evaluate_voc_dataset(
    dataset: DetectionDataset, indices: Indices, predictions: Sequence[Any], *, use_07: bool = True
) -> dict[str, Any]:
    """:func:`evaluate_voc` of per-image predictions (``boxes, scores, labels``) against ``dataset[indices]``.

    Returns ``{"mAP": float, "AP": {class name: float or None}}`` (JSON-ready).
    """
    gt = [(dataset[i].boxes, dataset[i].labels, dataset[i].ignore) for i in indices]
    dets = [(p.boxes, p.scores, p.labels) for p in predictions]
    res = evaluate_voc(gt, dets, dataset.num_classes, use_07=use_07)
    return {
        "mAP": res["mAP"],
        "AP": {n: (None if np.isnan(a) else float(a)) for n, a in zip(dataset.class_names, res["AP"])},
    }

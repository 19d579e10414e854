"""COCO box AP through faster-coco-eval (default) or pycocotools; nothing of COCOeval re-implemented."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

from mgral.data.coco import coco_dict, predictions_to_coco_results
from mgral.data.dataset import DetectionDataset, Indices

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster", "pycocotools")


def evaluate_coco(
    gt: dict[str, Any], results: list[dict[str, Any]], *, backend: str = "faster"
) -> dict[str, float]:
    """The twelve COCO box statistics, under pycocotools' names, of ``results`` against the COCO dict ``gt``.

    No detections at all gives zeros (pycocotools cannot load an empty result list).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO backend {backend!r}")
    if not results:
        return dict.fromkeys(COCO_STATS, 0.0)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        if backend == "faster":
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval_faster(coco_gt, coco_dt, "bbox")
        else:
            from pycocotools.coco import COCO as PyCOCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = PyCOCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(results)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STATS, ev.stats[: len(COCO_STATS)])}


def evaluate_coco_dataset(
    dataset: DetectionDataset, indices: Indices, predictions: Sequence[Any], *, backend: str = "faster"
) -> dict[str, float]:
    sub = dataset.subset(indices)
    gt = coco_dict(sub)
    results = predictions_to_coco_results(dataset, indices, predictions)
    return evaluate_coco(gt, results, backend=backend)

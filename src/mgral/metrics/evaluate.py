"""One entry point from predictions to the metric a run reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mgral.data.dataset import DetectionDataset, Indices
from mgral.metrics.coco import evaluate_coco_dataset
from mgral.metrics.voc import evaluate_voc_dataset

METRICS = ("voc07", "voc", "coco")


def evaluate_predictions(
    dataset: DetectionDataset, indices: Indices, predictions: Sequence[Any], metric: str
) -> tuple[float, dict[str, Any]]:
    """``(headline value, all metrics)``: VOC ``mAP`` (07 11-point or all-point) or COCO ``AP``."""
    if metric == "coco":
        stats = evaluate_coco_dataset(dataset, indices, predictions)
        return stats["AP"], stats
    if metric in ("voc07", "voc"):
        res = evaluate_voc_dataset(dataset, indices, predictions, use_07=metric == "voc07")
        return res["mAP"], res
    raise ValueError(f"unknown metric {metric!r}")

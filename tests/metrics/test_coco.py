"""COCO numbers must equal pycocotools' exactly."""

import numpy as np
import pytest

from mgral.data.coco import coco_dict
from mgral.metrics.coco import COCO_STATS, evaluate_coco


def _results(ds, rng, n_noise=3):
    out = []
    for rec in ds.images:
        for box, label in zip(rec.boxes, rec.labels):
            jitter = rng.normal(0, 2, 4)
            x1, y1, x2, y2 = box + jitter
            out.append({"image_id": rec.image_id, "category_id": ds.category_ids[label],
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(rng.random())})  # fmt: skip
        for _ in range(n_noise):
            x, y = rng.uniform(0, 50, 2)
            out.append({"image_id": rec.image_id, "category_id": int(rng.choice(ds.category_ids)),
                        "bbox": [float(x), float(y), 10.0, 12.0], "score": float(rng.random())})  # fmt: skip
    return out


def test_faster_backend_equals_pycocotools(shapes):
    gt = coco_dict(shapes)
    results = _results(shapes, np.random.default_rng(0))
    a = evaluate_coco(gt, results, backend="faster")
    b = evaluate_coco(gt, results, backend="pycocotools")
    assert list(a) == list(COCO_STATS)
    for k in COCO_STATS:
        assert a[k] == pytest.approx(b[k], abs=1e-12), k
    assert 0.2 < a["AP"] < 1.0


def test_empty_results_give_zeros(shapes):
    assert evaluate_coco(coco_dict(shapes), []) == dict.fromkeys(COCO_STATS, 0.0)

"""``mgral evaluate``: a dataset's annotations against a COCO results file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mgral.data.coco import coco_dict, load_json
from mgral.data.formats import read_dataset
from mgral.data.structures import Prediction
from mgral.data.validate import FLOAT32_MAX, finite_number
from mgral.errors import InputError
from mgral.metrics.coco import evaluate_coco
from mgral.metrics.voc import evaluate_voc_dataset


def read_results(
    path: str | Path, image_ids: set[int] | dict[Any, int], category_ids: list[int]
) -> list[dict[str, Any]]:
    """Load and check a COCO results JSON: every entry needs a known image id (an integer, or for VOC
    metrics the image's key) and category id, a bbox of 4 finite numbers with non-negative size and a
    finite score. Returns the entries with exactly those four fields, as plain ints and floats."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise InputError(path, "expected a JSON list of {image_id, category_id, bbox, score}")
    known_cats = set(category_ids)
    out = []
    for k, d in enumerate(data):
        if not isinstance(d, dict):
            raise InputError(path, f"entry {k}: not an object")
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in d:
                raise InputError(path, f"entry {k}: missing '{key}'")
        image_id, cat = d["image_id"], d["category_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id not in image_ids:
            raise InputError(path, f"entry {k}: unknown image id {image_id!r}")
        if isinstance(cat, bool) or not isinstance(cat, int) or cat not in known_cats:
            raise InputError(path, f"entry {k}: unknown category id {cat!r}")
        b = d["bbox"]
        numbers = (
            [finite_number(v, FLOAT32_MAX) for v in b] if isinstance(b, list) and len(b) == 4 else [None] * 4
        )
        x, y, w, h = (math.nan if v is None else v for v in numbers)
        # every comparison with NaN is false: a value that is not a number fails here too
        if not (w >= 0 and h >= 0 and abs(x + w) <= FLOAT32_MAX and abs(y + h) <= FLOAT32_MAX):
            raise InputError(
                path,
                f"entry {k}: bbox should be 4 finite numbers [x, y, w, h] with w, h >= 0 (32-bit floats), got {b!r}",
            )
        score = finite_number(d["score"], FLOAT32_MAX)
        if score is None:
            raise InputError(
                path, f"entry {k}: score should be a finite number (32-bit float), got {d['score']!r}"
            )
        out.append({"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "score": score})
    return out


def evaluate_files(
    gt: str | Path,
    pred: str | Path,
    metric: str,
    *,
    fmt: str = "auto",
    split: str | None = None,
    backend: str = "faster",
    allow_outside: bool = False,
) -> dict[str, Any]:
    """The metrics of the results file ``pred`` against the annotations ``gt`` (images are not read, but
    their names are checked as for any other use of the dataset)."""
    ds = read_dataset(gt, fmt, split=split, check_images=False, allow_outside=allow_outside)
    if metric == "coco":
        ids = {r.image_id for r in ds.images}
        results = read_results(pred, ids, ds.category_ids)
        return evaluate_coco(coco_dict(ds), results, backend=backend)
    # VOC: image ids may be given as numbers (our ids) or as the source's keys (file stems)
    index: dict[Any, int] = {}
    for i, r in enumerate(ds.images):
        index[r.image_id] = i
        index.setdefault(r.key, i)
    results = read_results(pred, index, ds.category_ids)
    cat_to_label = {c: k for k, c in enumerate(ds.category_ids)}
    per: list[list[tuple[list[float], float, int]]] = [[] for _ in ds.images]
    for d in results:
        x, y, w, h = d["bbox"]
        per[index[d["image_id"]]].append(
            ([x, y, x + w, y + h], float(d["score"]), cat_to_label[d["category_id"]])
        )
    preds = [
        Prediction(
            np.array([e[0] for e in p], np.float32).reshape(-1, 4),
            np.array([e[1] for e in p], np.float32),
            np.array([e[2] for e in p], np.int64),
            np.zeros((len(p), 0), np.float32),
        )  # fmt: skip
        for p in per
    ]
    return evaluate_voc_dataset(ds, range(len(ds)), preds, use_07=metric == "voc07")

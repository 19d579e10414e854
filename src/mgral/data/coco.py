"""COCO JSON: reader, writer, and conversion of predictions to COCO results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgral.data.dataset import DetectionDataset, ImageRecord, Indices
from mgral.data.validate import (
    BoxStats,
    check_boxes,
    check_file_name,
    check_image_file,
    check_inside,
    check_not_empty,
    check_unique_ids,
    finite_number,
    warn_clipped,
)
from mgral.errors import InputError
from mgral.utils import atomic_write_json, read_text


def load_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(path, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InputError(path, f"malformed JSON: {exc}") from None


def _require(obj: dict, key: str, kind: type | tuple[type, ...], source: Path, item: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(source, f"{item}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(
            source, f"{item}: field '{key}' should be {getattr(kind, '__name__', kind)}, got {value!r}"
        )
    return value


def _require_id(obj: dict, key: str, source: Path, item: str) -> int:
    """An id field: an integer that fits in 64 bits (what SQLite, NumPy and the COCO evaluators hold)."""
    value = _require(obj, key, int, source, item)
    if not -(2**63) <= value < 2**63:
        raise InputError(source, f"{item}: field '{key}' {value} does not fit in 64 bits")
    return value


def read_coco(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    partial: bool = False,
    check_images: bool = True,
    allow_outside: bool = False,
) -> DetectionDataset:
    """Read a COCO detection JSON.

    ``image_root`` defaults to an ``images/`` folder beside the JSON if it exists, else the JSON's folder.
    With ``partial=True`` (practitioner mode) an image without annotations is unlabeled, unless its image
    entry has ``"labeled": true``; otherwise every image is annotated (no annotations = a negative).
    ``check_images=False`` skips the check that image files exist (evaluation reads annotations only).
    A ``file_name`` that leads outside ``image_root`` (``../x.png``, an absolute path elsewhere) is refused
    unless ``allow_outside``.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "top level should be a JSON object with 'images', 'annotations', 'categories'")
    images = _require(data, "images", list, path, "top level")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise InputError(path, "field 'annotations' should be a list")
    cats = _require(data, "categories", list, path, "top level")
    if not cats:
        raise InputError(path, "no categories")
    check_not_empty(len(images), str(path))

    cat_ids: list[int] = []
    names: list[str] = []
    for k, cat in enumerate(cats):
        cat_ids.append(_require_id(cat, "id", path, f"category {k}"))
        names.append(str(_require(cat, "name", str, path, f"category {k}")))
    if len(set(cat_ids)) != len(cat_ids):
        raise InputError(path, "duplicate category ids")
    order = np.argsort(cat_ids, kind="stable")
    cat_ids = [cat_ids[i] for i in order]
    names = [names[i] for i in order]
    cat_index = {c: i for i, c in enumerate(cat_ids)}

    if image_root is None:
        image_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    image_root = Path(image_root)

    ids = [_require_id(im, "id", path, f"image entry {k}") for k, im in enumerate(images)]
    check_unique_ids(ids, str(path))
    per_image: dict[int, list[tuple[list[float], int, bool]]] = {i: [] for i in ids}
    for k, ann in enumerate(anns):
        item = f"annotation {ann.get('id', k) if isinstance(ann, dict) else k}"
        image_id = _require(ann, "image_id", int, path, item)
        if image_id not in per_image:
            raise InputError(path, f"{item}: unknown image id {image_id}")
        cat = _require(ann, "category_id", int, path, item)
        if cat not in cat_index:
            raise InputError(path, f"{item}: unknown category id {cat}")
        raw = _require(ann, "bbox", list, path, item)
        bbox = [finite_number(v) for v in raw]
        if len(bbox) != 4 or any(v is None for v in bbox):
            raise InputError(path, f"{item}: bbox should be 4 finite numbers [x, y, w, h], got {raw!r}")
        finite = [v for v in bbox if v is not None]  # all of them, checked above
        per_image[image_id].append((finite, cat_index[cat], bool(ann.get("iscrowd", 0))))

    stats = BoxStats()
    records = []
    for k, im in enumerate(images):
        item = f"image {ids[k]}"
        file_name = str(_require(im, "file_name", str, path, item))
        check_file_name(file_name, str(path), item)
        check_inside(image_root / file_name, image_root, str(path), item, file_name, allow_outside)
        width = _require(im, "width", int, path, item)
        height = _require(im, "height", int, path, item)
        if width <= 0 or height <= 0:
            raise InputError(path, f"{item}: size {width}x{height} is not positive")
        if check_images:
            check_image_file(image_root / file_name, str(path), item, read_header=False)
        entries = per_image[ids[k]]
        xywh = np.array([e[0] for e in entries], np.float64).reshape(-1, 4)
        with np.errstate(over="ignore"):  # an overflow is reported by check_boxes
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        for j, e in enumerate(entries):
            if e[0][2] <= 0 or e[0][3] <= 0:
                raise InputError(path, f"{item}: annotation {j} bbox {e[0]} has no area")
        boxes = check_boxes(boxes, width, height, str(path), item, stats)
        annotated = bool(entries) or not partial or bool(im.get("labeled", False))
        records.append(
            ImageRecord(
                image_id=ids[k],
                file_name=file_name,
                width=width,
                height=height,
                boxes=boxes,
                labels=np.array([e[1] for e in entries], np.int64),
                ignore=np.array([e[2] for e in entries], bool),
                annotated=annotated,
                key=str(ids[k]),
            )
        )
    warn_clipped(stats, str(path))
    return DetectionDataset(records, names, image_root, path, cat_ids)


def coco_dict(dataset: DetectionDataset, *, only_annotated: bool = False) -> dict[str, Any]:
    """The dataset as a COCO dict (annotation ids 1..N, ``area`` = box area)."""
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, rec in enumerate(dataset.images):
        if only_annotated and not rec.annotated:
            continue
        file_name = rec.file_name
        if dataset.image_root is None:
            file_name = str(dataset.image_path(i))
        images.append(
            {
                "id": int(rec.image_id),
                "file_name": file_name,
                "width": int(rec.width),
                "height": int(rec.height),
            }
        )
        for box, label, ign in zip(rec.boxes.tolist(), rec.labels.tolist(), rec.ignore.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(rec.image_id),
                    "category_id": int(dataset.category_ids[label]),
                    "bbox": [round(box[0], 3), round(box[1], 3), round(w, 3), round(h, 3)],
                    "area": round(w * h, 3),
                    "iscrowd": int(ign),
                }
            )
    cats = [{"id": int(c), "name": n} for c, n in zip(dataset.category_ids, dataset.class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def write_coco(dataset: DetectionDataset, path: str | Path, *, only_annotated: bool = False) -> None:
    """Write ``dataset`` as COCO JSON (atomically)."""
    atomic_write_json(path, coco_dict(dataset, only_annotated=only_annotated), indent=None)


def predictions_to_coco_results(
    dataset: DetectionDataset, indices: Indices, predictions: Sequence[Any]
) -> list[dict[str, Any]]:
    """COCO results (``image_id, category_id, bbox [x, y, w, h], score``) from per-image predictions."""
    out = []
    for i, pred in zip(indices, predictions):
        image_id = int(dataset.images[int(i)].image_id)
        boxes = np.asarray(pred.boxes, np.float64)
        for box, score, label in zip(
            boxes.tolist(), np.asarray(pred.scores).tolist(), np.asarray(pred.labels).tolist()
        ):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(dataset.category_ids[int(label)]),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                }
            )
    return out

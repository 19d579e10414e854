"""Label Studio's JSON and mgral's records, both ways: pure conversion, no network.

Coordinates. Label Studio stores a rectangle as its top-left corner ``x, y`` and its ``width, height``
in percent (0-100) of the image's width and height, plus ``rotation`` in degrees (clockwise, about the
top-left corner). mgral boxes are ``float32[N, 4]`` ``[x1, y1, x2, y2]`` in pixels of the original image
(see :mod:`mgral.data.dataset`). A rotated rectangle becomes its axis-aligned bounding box.

Tasks made here carry a stable key, ``data["mgral_key"]``: the image's ``file_name`` relative to the
dataset's image folder. It identifies the image when the annotations come back and makes pushing the
same picks twice a no-op.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from mgral.data.dataset import DetectionDataset
from mgral.data.validate import BoxStats, check_boxes, warn_clipped
from mgral.errors import InputError
from mgral.utils import stable_hash

log = logging.getLogger(__name__)

#: the task-data field that names the image (its file name relative to the dataset's image folder)
KEY = "mgral_key"
LOCAL_FILES_PREFIX = "/data/local-files/?d="


# ----------------------------------------------------------------------------- labeling config
@dataclass(frozen=True)
class LabelingSchema:
    """What tasks and results must name: the ``RectangleLabels`` tag (``from_name``), the ``Image`` tag it
    points at (``to_name``), the task-data field the image is read from (``data_key``), and the labels."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]


def label_config(class_names: Sequence[str]) -> str:
    """A Label Studio labeling config: one image, one ``RectangleLabels`` with a label per class."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name="image", value="$image", zoom="true")
    rect = ET.SubElement(view, "RectangleLabels", name="label", toName="image")
    for name in class_names:
        ET.SubElement(rect, "Label", value=str(name))
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def parse_label_config(xml: str, source: str) -> LabelingSchema:
    """Find the ``RectangleLabels`` tag of a labeling config and the ``Image`` tag it labels."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(source, f"labeling config is not valid XML ({exc})") from None
    images = {el.get("name"): el for el in root.iter("Image") if el.get("name")}
    found = [el for el in root.iter("RectangleLabels") if el.get("toName") in images]
    if len(found) != 1:
        what = "no RectangleLabels tag" if not found else f"{len(found)} RectangleLabels tags"
        raise InputError(source, f"labeling config has {what} on an Image; mgral needs exactly one")
    rect = found[0]
    image = images[rect.get("toName")]
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise InputError(source, f"labeling config: Image value {value!r} is not a task field like '$image'")
    labels = tuple(str(el.get("value")) for el in rect.iter("Label") if el.get("value") is not None)
    return LabelingSchema(str(rect.get("name")), str(rect.get("toName")), value[1:], labels)


def check_labels(schema: LabelingSchema, class_names: Sequence[str], source: str) -> None:
    """The project's labels must be the dataset's class names (in any order)."""
    missing = [n for n in class_names if n not in schema.labels]
    extra = [n for n in schema.labels if n not in class_names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks the dataset's classes {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"has labels the dataset does not know: {', '.join(map(repr, extra))}")
        raise InputError(
            source, "the project's labels differ from the dataset's classes: it " + "; it ".join(parts)
        )


# ----------------------------------------------------------------------------- coordinates
def boxes_to_percent(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``float[N, 4]`` ``[x1, y1, x2, y2]`` pixels -> ``float64[N, 4]`` ``[x, y, width, height]`` percent."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], np.float64)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1) / scale * 100.0


def percent_to_boxes(
    xywh: np.ndarray, width: int, height: int, rotation: np.ndarray | None = None
) -> np.ndarray:
    """``float[N, 4]`` ``[x, y, width, height]`` percent (and ``rotation`` ``float[N]`` degrees, clockwise
    about the top-left corner) -> ``float64[N, 4]`` ``[x1, y1, x2, y2]`` pixels; a rotated rectangle gives
    its axis-aligned bounding box."""
    p = np.asarray(xywh, np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], np.float64)
    x, y, w, h = (p / 100.0 * scale).T
    if rotation is None or not np.any(np.asarray(rotation) % 360 != 0):
        return np.stack([x, y, x + w, y + h], axis=1)
    t = np.deg2rad(np.asarray(rotation, np.float64).reshape(-1))
    cos, sin = np.cos(t), np.sin(t)
    dx = np.stack([np.zeros_like(w), w, w, np.zeros_like(w)], 1)  # corners relative to the top-left
    dy = np.stack([np.zeros_like(h), np.zeros_like(h), h, h], 1)
    cx = x[:, None] + dx * cos[:, None] - dy * sin[:, None]
    cy = y[:, None] + dx * sin[:, None] + dy * cos[:, None]
    return np.stack([cx.min(1), cy.min(1), cx.max(1), cy.max(1)], axis=1)


# ----------------------------------------------------------------------------- picks -> tasks
def region_id(key: str, model_version: str, k: int) -> str:
    """A region id unique per image, model version and box (Label Studio needs one per region)."""
    return f"m{stable_hash(key, model_version) % 16**8:08x}_{k}"


def rectangle_results(
    boxes: np.ndarray,
    labels: Sequence[str],
    width: int,
    height: int,
    schema: LabelingSchema,
    *,
    scores: Sequence[float] | None = None,
    ids: Sequence[str],
) -> list[dict[str, Any]]:
    """Label Studio ``result`` regions for ``float[N, 4]`` pixel boxes with their label names."""
    pct = boxes_to_percent(boxes, width, height)
    out = []
    for k, (row, label) in enumerate(zip(pct.tolist(), labels)):
        region: dict[str, Any] = {
            "id": ids[k], "type": "rectanglelabels", "from_name": schema.from_name, "to_name": schema.to_name,
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"x": row[0], "y": row[1], "width": row[2], "height": row[3], "rotation": 0,
                      "rectanglelabels": [str(label)]},
        }  # fmt: skip
        if scores is not None:
            region["score"] = float(scores[k])
        out.append(region)
    return out


def prediction_score(rank: int, n: int) -> float:
    """The prediction-level score of the pick of ``rank`` (1 = most informative) among ``n``: ``rank / (n
    + 1)``, in (0, 1) and increasing with the rank, because Label Studio serves the *lowest* prediction
    score first (uncertainty sampling; the Data Manager's ascending sort)."""
    return rank / (n + 1)


def check_picks(picks: Mapping[str, Any], dataset: DetectionDataset, source: str) -> list[dict[str, Any]]:
    """The ``selected`` entries of a picks.json, checked against ``dataset`` (names, boxes, labels)."""
    selected = picks.get("selected") if isinstance(picks, Mapping) else None
    if not isinstance(selected, list) or not selected:
        raise InputError(source, "no 'selected' list: not a picks file of `mgral query`")
    by_name = {rec.file_name: i for i, rec in enumerate(dataset.images)}
    classes = set(dataset.class_names)
    for k, pick in enumerate(selected):
        if not isinstance(pick, dict) or not {"rank", "file_name", "score"} <= set(pick):
            raise InputError(source, f"selected[{k}]: needs rank, file_name and score")
        if "boxes" not in pick:
            raise InputError(source, "the picks have no model boxes; run `mgral query` again to add them")
        if pick["file_name"] not in by_name:
            raise InputError(
                source, f"selected[{k}]: {pick['file_name']!r} is not an image of {dataset.source}"
            )
        unknown = {b.get("label") for b in pick["boxes"]} - classes
        if unknown:
            raise InputError(
                source, f"selected[{k}]: labels {sorted(map(str, unknown))} are not dataset classes"
            )
    return selected


def task_for_pick(
    pick: Mapping[str, Any],
    image_url: str,
    schema: LabelingSchema,
    *,
    strategy: str,
    model_version: str,
    n_picks: int,
) -> dict[str, Any]:
    """One Label Studio task for a pick: the image, the stable key, rank and strategy score in ``data``,
    and the model's boxes as a prediction (pre-annotation) whose score orders the tasks by rank."""
    key = str(pick["file_name"])
    width, height = int(pick["width"]), int(pick["height"])
    boxes = np.array([b["bbox"] for b in pick["boxes"]], np.float64).reshape(-1, 4)
    labels = [str(b["label"]) for b in pick["boxes"]]
    ids = [region_id(key, model_version, k) for k in range(len(labels))]
    result = rectangle_results(
        boxes, labels, width, height, schema, scores=[float(b["score"]) for b in pick["boxes"]], ids=ids
    )
    rank = int(pick["rank"])
    data = {schema.data_key: image_url, KEY: key, "mgral_rank": rank, "mgral_score": float(pick["score"]),
            "mgral_strategy": strategy}  # fmt: skip
    return {
        "data": data,
        "predictions": [
            {"model_version": model_version, "score": prediction_score(rank, n_picks), "result": result}
        ],
    }


# ----------------------------------------------------------------------------- export -> labels
@dataclass
class ImageLabels:
    """The finished annotation of one dataset image: ``boxes`` ``float32[N, 4]`` pixels, ``labels``
    ``int64[N]`` class indices (``N = 0``: a labeled negative)."""

    index: int
    task_id: int
    boxes: np.ndarray
    labels: np.ndarray


@dataclass
class ExportReading:
    """What an export holds for a dataset: finished images, skipped tasks, tasks not annotated yet, and
    regions of other kinds than rectangles (ignored, counted by type)."""

    images: list[ImageLabels] = field(default_factory=list)
    skipped: int = 0
    pending: int = 0
    ignored_regions: Counter = field(default_factory=Counter)


class ImageIndex:
    """Finds the dataset image a task shows: by ``data["mgral_key"]``, else by the image URL's path (a
    ``/data/local-files/?d=`` path, an upload name, an http path), matched on its trailing components."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.by_name: dict[str, int] = {}
        self.ambiguous: set[str] = set()
        for i, rec in enumerate(dataset.images):
            name = PurePosixPath(rec.file_name.replace("\\", "/")).as_posix()
            if name in self.by_name:
                self.ambiguous.add(name)
            self.by_name[name] = i
        self.by_base: dict[str, list[int]] = {}
        for name, i in self.by_name.items():
            self.by_base.setdefault(PurePosixPath(name).name, []).append(i)

    def _by_path(self, path: str) -> int | None:
        parts = PurePosixPath(path).parts
        for k in range(len(parts)):
            cand = "/".join(parts[k:])
            if cand in self.by_name and cand not in self.ambiguous:
                return self.by_name[cand]
        return None

    def find(self, data: Mapping[str, Any]) -> int | None:
        key = data.get(KEY)
        if isinstance(key, str) and key in self.by_name and key not in self.ambiguous:
            return self.by_name[key]
        for value in data.values():
            if not isinstance(value, str) or "/" not in value:
                continue
            url = urlparse(value)
            if url.path.rstrip("/").endswith("/data/local-files") and "d" in parse_qs(url.query):
                found = self._by_path(unquote(parse_qs(url.query)["d"][0]))
            elif "/data/upload/" in url.path:
                # uploads are stored as "<8 hex>-<original name>"
                base = PurePosixPath(unquote(url.path)).name
                base = base.split("-", 1)[1] if "-" in base else base
                hits = self.by_base.get(base, [])
                found = hits[0] if len(hits) == 1 else None
            else:
                found = self._by_path(unquote(url.path))
            if found is not None:
                return found
        return None


def _latest_finished(annotations: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    done = [a for a in annotations if isinstance(a, Mapping) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def _number(value: Mapping[str, Any], name: str, source: str, item: str) -> float:
    v = value.get(name)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise InputError(source, f"{item}: rectangle field {name!r} should be a finite number, got {v!r}")
    return float(v)


def read_export(tasks: Any, dataset: DetectionDataset, source: str) -> ExportReading:
    """Read a Label Studio JSON export (a list of tasks) against ``dataset``.

    Per task, the most recently updated annotation that was not cancelled counts; a task whose annotations
    were all cancelled (skipped) and a task without annotation leave their image as it is. Rectangles are
    converted to pixels of the dataset's image size and checked as the readers check boxes: an overhang is
    clipped (one warning), a box with no area or wholly outside its image is an error. Labels unknown to
    the dataset, tasks showing no image of the dataset, rotated images: :class:`InputError`, naming them.
    When two tasks show the same image, the later annotation wins.
    """
    if not isinstance(tasks, list):
        raise InputError(source, "a Label Studio JSON export should be a list of tasks")
    index = ImageIndex(dataset)
    cls = {n: i for i, n in enumerate(dataset.class_names)}
    out = ExportReading()
    unknown: dict[str, list[int]] = {}
    chosen: dict[int, tuple[tuple[str, int], ImageLabels]] = {}
    stats = BoxStats()
    for k, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise InputError(source, f"task {k}: not a Label Studio task (no 'data' object)")
        task_id = int(task.get("id", k)) if isinstance(task.get("id", k), int) else k
        i = index.find(task["data"])
        if i is None:
            raise InputError(
                source, f"task {task_id}: its image {_describe(task['data'])} is not in {dataset.source}"
            )
        anns = task.get("annotations") or []
        ann = _latest_finished(anns)
        if ann is None:
            if anns:
                out.skipped += 1
            else:
                out.pending += 1
            continue
        rec = dataset.images[i]
        item = f"task {task_id} ({rec.file_name})"
        rows, rot, labels = [], [], []
        for region in ann.get("result") or []:
            kind = region.get("type") if isinstance(region, dict) else None
            if kind != "rectanglelabels":
                out.ignored_regions[str(kind)] += 1
                continue
            if region.get("image_rotation") not in (None, 0):
                raise InputError(
                    source, f"{item}: the image was rotated in the editor; rotated images are not supported"
                )
            value = region.get("value")
            if not isinstance(value, dict):
                raise InputError(source, f"{item}: region without a 'value'")
            names = value.get("rectanglelabels")
            if not isinstance(names, list) or len(names) != 1:
                raise InputError(source, f"{item}: a rectangle needs exactly one label, got {names!r}")
            name = str(names[0])
            if name not in cls:
                unknown.setdefault(name, []).append(task_id)
                continue
            rows.append([_number(value, f, source, item) for f in ("x", "y", "width", "height")])
            rot.append(float(value.get("rotation") or 0.0))
            labels.append(cls[name])
        boxes = percent_to_boxes(np.array(rows, np.float64), rec.width, rec.height, np.array(rot))
        boxes = check_boxes(boxes, rec.width, rec.height, source, item, stats)
        when = (str(ann.get("updated_at") or ann.get("created_at") or ""), int(ann.get("id") or 0))
        labels_arr = np.array(labels, np.int64)
        if i not in chosen or chosen[i][0] < when:
            chosen[i] = (when, ImageLabels(i, task_id, boxes, labels_arr))
    if unknown:
        names = ", ".join(f"{n!r} (task {', '.join(map(str, ids[:3]))}{'…' if len(ids) > 3 else ''})"
                          for n, ids in sorted(unknown.items()))  # fmt: skip
        raise InputError(
            source,
            f"labels unknown to the dataset: {names}; dataset classes: {', '.join(dataset.class_names)}",
        )
    warn_clipped(stats, source)
    if out.ignored_regions:
        log.warning("%s: ignored regions that are not rectangles: %s", source, dict(out.ignored_regions))
    out.images = [v[1] for _, v in sorted(chosen.items())]
    return out


def _describe(data: Mapping[str, Any]) -> str:
    for value in data.values():
        if isinstance(value, str) and "/" in value:
            return repr(value)
    return repr(dict(data))

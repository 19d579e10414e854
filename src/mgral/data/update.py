"""Writing new annotations into a dataset in its own format, all or nothing.

Used when finished labels come back from an annotation tool. The dataset keeps its format (COCO, VOC or
YOLO); only the annotations of the images that changed are written, by the format's own writer:

* COCO: the JSON is rewritten with the changed images' annotations replaced (ids continue after the
  largest existing one) and ``"labeled": true`` on their image entries; every other field of the file
  (``info``, ``licenses``, segmentations, extra keys) is kept as it was.
* VOC: ``Annotations/<stem>.xml`` of the changed images (an XML with no object = a labeled negative).
* YOLO: ``labels/<path>.txt`` of the changed images (an empty file = a labeled negative).

Everything is first written to a staging folder inside the dataset, then each file replaced by an atomic
rename; what a replacement overwrites is first copied to ``.mgral-backup/<time>/`` (with a
``manifest.json`` listing replaced and created files). If a step fails, the files already moved are put
back and the new ones removed. After the move the dataset is read again and checked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mgral.data.coco import coco_dict, load_json
from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.data.formats import read_dataset, resolve_format
from mgral.data.voc import write_voc
from mgral.data.yolo import write_yolo_labels
from mgral.errors import InputError
from mgral.utils import atomic_write_json

log = logging.getLogger(__name__)

#: boxes closer than this (pixels, per coordinate) count as the same: the writers round coordinates
SAME_BOX_ATOL = 0.05


@dataclass
class UpdateResult:
    """What an update did: indices of images newly labeled, relabeled and already equal; the files written
    and the backup folder (``None`` when nothing was written)."""

    labeled: list[int] = field(default_factory=list)
    relabeled: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    backup: Path | None = None


def same_labels(rec: ImageRecord, boxes: np.ndarray, labels: np.ndarray) -> bool:
    """Whether ``rec`` is annotated with these boxes (``float[N, 4]`` pixels, in order) and labels."""
    return (
        rec.annotated
        and len(rec.labels) == len(labels)
        and bool(np.array_equal(rec.labels, labels))
        and not rec.ignore.any()
        and bool(np.allclose(rec.boxes, np.asarray(boxes, np.float32).reshape(-1, 4), atol=SAME_BOX_ATOL))
    )


def update_annotations(
    path: str | Path,
    dataset: DetectionDataset,
    new: Mapping[int, tuple[np.ndarray, np.ndarray]],
    *,
    fmt: str = "auto",
    split: str | None = None,
) -> UpdateResult:
    """Give the images ``new`` maps (dataset index -> ``(boxes float[N, 4] pixels, labels int64[N])``)
    these annotations, in the dataset at ``path`` (read as ``dataset``, with ``partial=True``).

    Images whose annotations already equal the new ones are not touched, so applying the same update twice
    writes nothing the second time. All or nothing: see the module docstring.
    """
    fmt, target = resolve_format(path, fmt)
    result = UpdateResult()
    changed: dict[int, ImageRecord] = {}
    for i, (boxes, labels) in sorted(new.items()):
        rec = dataset.images[i]
        if same_labels(rec, boxes, labels):
            result.unchanged.append(i)
            continue
        (result.relabeled if rec.annotated else result.labeled).append(i)
        changed[i] = replace(
            rec, boxes=np.asarray(boxes, np.float32), labels=np.asarray(labels, np.int64),
            ignore=np.zeros(len(labels), bool), annotated=True,
        )  # fmt: skip
    if not changed:
        return result
    root = target.parent if fmt == "coco" else target
    stage = Path(tempfile.mkdtemp(prefix=".mgral-stage-", dir=root))
    try:
        moves = _stage(fmt, target, stage, dataset, changed)
        result.backup = _commit(root, moves)
        result.files = [dst for _, dst in moves]
        try:
            _verify(path, fmt, split, dataset, changed)
        except BaseException:
            _restore(root, result.backup)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info(
        "%s: %d image(s) newly labeled, %d relabeled, %d unchanged; backup in %s",
        path, len(result.labeled), len(result.relabeled), len(result.unchanged), result.backup,
    )  # fmt: skip
    return result


def _stage(
    fmt: str, target: Path, stage: Path, dataset: DetectionDataset, changed: dict[int, ImageRecord]
) -> list[tuple[Path, Path]]:
    """Write the new files under ``stage``; return ``(staged file, destination)`` pairs."""
    subset = DetectionDataset(
        list(changed.values()), dataset.class_names, dataset.image_root, dataset.source, dataset.category_ids
    )
    if fmt == "coco":
        staged = stage / target.name
        atomic_write_json(staged, _merged_coco(load_json(target), subset, target), indent=None)
        return [(staged, target)]
    if fmt == "voc":
        write_voc(subset, stage, split="staged")
        return [
            (stage / "Annotations" / f"{r.key}.xml", target / "Annotations" / f"{r.key}.xml")
            for r in subset.images
        ]
    write_yolo_labels(subset, stage)
    rel = [Path("labels") / Path(r.file_name).with_suffix(".txt") for r in subset.images]
    return [(stage / p, target / p) for p in rel]


def _merged_coco(doc: Any, subset: DetectionDataset, source: Path) -> dict[str, Any]:
    """``doc`` (the COCO file as loaded) with the annotations of ``subset``'s images replaced."""
    ids = {int(r.image_id) for r in subset.images}
    new = coco_dict(subset)["annotations"]
    kept = [a for a in doc.get("annotations", []) if a.get("image_id") not in ids]
    next_id = 1 + max((a["id"] for a in kept if isinstance(a.get("id"), int)), default=0)
    for k, ann in enumerate(new):
        ann["id"] = next_id + k
    out = dict(doc)
    out["annotations"] = kept + new
    images = []
    for im in doc["images"]:
        images.append({**im, "labeled": True} if im.get("id") in ids else im)
    out["images"] = images
    if len(images) != len(doc["images"]) or not ids <= {im.get("id") for im in images}:
        raise InputError(source, "image entries changed while merging; nothing written")
    return out


def _commit(root: Path, moves: list[tuple[Path, Path]]) -> Path:
    """Back up the destinations that exist, then move every staged file into place (undone on failure)."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
    backup = root / ".mgral-backup" / stamp
    replaced, created = [], []
    for _, dst in moves:
        rel = dst.relative_to(root)
        if dst.exists():
            (backup / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dst, backup / rel)
            replaced.append(rel.as_posix())
        else:
            created.append(rel.as_posix())
    atomic_write_json(backup / "manifest.json", {"replaced": replaced, "created": created})
    done: list[Path] = []
    try:
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                shutil.copymode(dst, src)  # keep the permissions of the file it replaces
            os.replace(src, dst)
            done.append(dst)
    except BaseException as exc:
        _restore(root, backup, only=done)
        if isinstance(exc, OSError):  # a full disk, a read-only folder: the dataset is as it was
            raise InputError(root, f"cannot write the dataset ({exc}); nothing was changed") from None
        raise
    return backup


def _restore(root: Path, backup: Path | None, only: list[Path] | None = None) -> None:
    """Put back what ``backup`` saved and remove what the update created (limited to ``only`` if given)."""
    if backup is None:
        return
    manifest = load_json(backup / "manifest.json")
    touched = None if only is None else {p.relative_to(root).as_posix() for p in only}
    for rel in manifest["replaced"]:
        if touched is None or rel in touched:
            os.replace(_copy_aside(backup / rel), root / rel)
    for rel in manifest["created"]:
        if touched is None or rel in touched:
            with contextlib.suppress(FileNotFoundError):
                (root / rel).unlink()
    log.warning("%s: the update was rolled back", root)


def _copy_aside(path: Path) -> Path:
    """A copy of ``path`` beside it (so the backup survives the restoring rename)."""
    tmp = path.with_name(f".{path.name}.restore")
    shutil.copy2(path, tmp)
    return tmp


def _verify(
    path: str | Path, fmt: str, split: str | None, before: DetectionDataset, changed: dict[int, ImageRecord]
) -> None:
    """Read the dataset again: the changed images must read back as written, the others as before."""
    after = read_dataset(path, fmt, split=split, partial=True)
    by_name = {r.file_name: r for r in after.images}
    for i, rec in enumerate(before.images):
        got = by_name.get(rec.file_name)
        want = changed.get(i, rec)
        names = [before.class_names[k] for k in want.labels.tolist()]
        if (
            got is None
            or got.annotated != want.annotated
            or names != [after.class_names[k] for k in got.labels]
        ):
            raise RuntimeError(f"{path}: image {rec.file_name} did not read back as written")
        if not np.allclose(got.boxes, want.boxes, atol=SAME_BOX_ATOL):
            raise RuntimeError(f"{path}: boxes of image {rec.file_name} did not read back as written")

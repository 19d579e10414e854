"""Writing labels back into COCO, VOC and YOLO datasets: conventions, idempotence, all-or-nothing."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mgral.data.coco import read_coco
from mgral.data.dataset import DetectionDataset
from mgral.data.formats import read_dataset
from mgral.data.update import update_annotations
from mgral.data.voc import write_voc
from mgral.data.yolo import write_yolo_labels
from mgral.errors import InputError

BOX = np.array([[4.0, 6.0, 30.5, 40.25]])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make(fmt: str, shapes, tmp_path: Path) -> Path:
    """The shapes data in ``fmt`` with only the first 10 images annotated."""
    recs = [r if i < 10 else r.without_labels() for i, r in enumerate(shapes.images)]
    recs = [replace(r, key=Path(r.file_name).stem) for r in recs]
    part = DetectionDataset(recs, shapes.class_names, shapes.image_root, shapes.source, shapes.category_ids)
    root = tmp_path / fmt
    if fmt == "coco":
        doc = json.loads(Path(shapes.source).read_text())
        doc["info"] = {"description": "kept"}
        keep = {r.image_id for r in recs[:10]}
        doc["annotations"] = [
            dict(a, segmentation=[[1, 2, 3]]) for a in doc["annotations"] if a["image_id"] in keep
        ]
        (root / "images").mkdir(parents=True)
        for r in recs:
            (root / "images" / r.file_name).write_bytes((shapes.image_root / r.file_name).read_bytes())
        (root / "ann.json").write_text(json.dumps(doc))
        return root / "ann.json"
    sub = "JPEGImages" if fmt == "voc" else "images"
    (root / sub).mkdir(parents=True)
    for r in recs:
        (root / sub / r.file_name).write_bytes((shapes.image_root / r.file_name).read_bytes())
    if fmt == "voc":
        write_voc(part, root)
        (root / "ImageSets" / "Main" / "trainval.txt").unlink()
    else:
        write_yolo_labels(part, root)
    return root


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_new_labels_negatives_and_idempotence(fmt, shapes, tmp_path):
    path = make(fmt, shapes, tmp_path)
    ds = read_dataset(path, partial=True)
    assert len(ds.annotated_indices()) == 10
    new = {
        12: (BOX, np.array([1])),
        13: (np.zeros((0, 4)), np.zeros(0, np.int64)),
        3: (ds[3].boxes, ds[3].labels),
    }
    res = update_annotations(path, ds, new)
    assert res.labeled == [12, 13] and res.unchanged == [3] and res.relabeled == []
    assert res.backup is not None and (res.backup / "manifest.json").is_file()
    after = read_dataset(path, partial=True)
    assert len(after.annotated_indices()) == 12
    np.testing.assert_allclose(after[12].boxes, BOX, atol=1e-3)
    assert after[12].labels.tolist() == [1]
    assert after[13].annotated and len(after[13].labels) == 0  # a labeled negative
    assert not after[14].annotated
    for i in range(10):
        np.testing.assert_allclose(after[i].boxes, ds[i].boxes, atol=1e-3)
    if fmt == "coco":
        doc = json.loads(path.read_text())
        assert doc["info"] == {"description": "kept"}
        assert all("segmentation" in a for a in doc["annotations"] if a["image_id"] == ds[0].image_id)
        assert {im["id"] for im in doc["images"] if im.get("labeled")} >= {ds[12].image_id, ds[13].image_id}
        assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
    elif fmt == "voc":
        assert "<object>" not in (path / "Annotations" / f"{ds[13].key}.xml").read_text()
    else:
        assert (path / "labels" / Path(ds[13].file_name).with_suffix(".txt")).read_text() == ""
    # the same update again writes nothing
    root = path.parent if fmt == "coco" else path
    before = _files(root)
    again = update_annotations(path, read_dataset(path, partial=True), new)
    assert again.labeled == [] and again.unchanged == [3, 12, 13] and again.backup is None
    assert _files(root) == before
    # relabeling an image backs up what it replaces
    third = update_annotations(path, after, {12: (BOX + 1, np.array([0]))})
    assert third.relabeled == [12]
    replaced = json.loads((third.backup / "manifest.json").read_text())["replaced"]
    assert len(replaced) == 1 and (third.backup / replaced[0]).read_bytes() == before[replaced[0]]


def test_a_failed_move_rolls_everything_back(shapes, tmp_path, monkeypatch):
    path = make("voc", shapes, tmp_path)
    ds = read_dataset(path, partial=True)
    before = _files(path)
    real = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        if Path(dst).parent.name == "Annotations":
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    new = {1: (BOX, np.array([2])), 11: (BOX, np.array([0])), 12: (BOX, np.array([1]))}
    with pytest.raises(InputError, match="disk full"):  # staging or moving: one clean error either way
        update_annotations(path, ds, new)
    monkeypatch.setattr(os, "replace", real)
    after = {k: v for k, v in _files(path).items() if not k.startswith(".mgral-backup")}
    assert after == before  # the replaced XML is back, the new ones are gone
    assert not any(p.name.startswith(".mgral-stage") for p in path.iterdir())


def test_coco_extra_images_fields_and_unlabeled_images_untouched(shapes, tmp_path):
    path = make("coco", shapes, tmp_path)
    ds = read_coco(path, partial=True)
    update_annotations(path, ds, {20: (BOX, np.array([0]))})
    doc = json.loads(path.read_text())
    untouched = [
        im for im in doc["images"] if im["id"] not in {ds[i].image_id for i in range(10)} | {ds[20].image_id}
    ]
    assert untouched and not any("labeled" in im for im in untouched)

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgral.data.coco import coco_dict, read_coco, write_coco
from mgral.errors import InputError


def _write(tmp: Path, doc: dict, images: bool = True) -> Path:
    (tmp / "images").mkdir(exist_ok=True)
    if images:
        for im in doc.get("images", []):
            Image.new("RGB", (im["width"], im["height"])).save(tmp / "images" / im["file_name"])
    p = tmp / "ann.json"
    p.write_text(json.dumps(doc))
    return p


def _doc(**over):
    doc = {
        "images": [{"id": 7, "file_name": "a.png", "width": 50, "height": 40},
                   {"id": 9, "file_name": "b.png", "width": 50, "height": 40}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
    }  # fmt: skip
    doc.update(over)
    return doc


def test_read_converts_to_xyxy_and_sorts_categories(tmp_path):
    ds = read_coco(_write(tmp_path, _doc()))
    assert ds.class_names == ["dog", "cat"] and ds.category_ids == [1, 3]
    rec = ds[ds.index_of(7)]
    np.testing.assert_allclose(rec.boxes, [[10, 5, 30, 15]])
    assert rec.labels.tolist() == [1]
    assert ds[1].annotated  # full mode: no annotation = a negative


def test_partial_mode_marks_unannotated_images(tmp_path):
    ds = read_coco(_write(tmp_path, _doc()), partial=True)
    assert [r.annotated for r in ds.images] == [True, False]


def test_round_trip(tmp_path):
    ds = read_coco(_write(tmp_path, _doc()))
    write_coco(ds, tmp_path / "out.json")
    again = read_coco(tmp_path / "out.json", tmp_path / "images")
    assert coco_dict(again) == coco_dict(ds)


def test_overhanging_box_is_clipped_with_warning(tmp_path, caplog):
    doc = _doc(annotations=[{"id": 1, "image_id": 7, "category_id": 1, "bbox": [-1, 2, 20, 39]}])
    ds = read_coco(_write(tmp_path, doc))
    np.testing.assert_allclose(ds[0].boxes, [[0, 2, 19, 40]])
    assert "clipped 2 box" not in caplog.text and "clipped 1 box" in caplog.text


@pytest.mark.parametrize(
    "over, message",
    [
        ({"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 0, 5]}]}, "no area"),
        (
            {"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [60, 1, 5, 5]}]},
            "wholly outside",
        ),
        (
            {"annotations": [{"id": 1, "image_id": 7, "category_id": 99, "bbox": [1, 1, 5, 5]}]},
            "unknown category id 99",
        ),
        (
            {"annotations": [{"id": 1, "image_id": 8, "category_id": 1, "bbox": [1, 1, 5, 5]}]},
            "unknown image id 8",
        ),
        (
            {"images": [{"id": 7, "file_name": "a.png", "width": 50, "height": 40}] * 2},
            "duplicate image id 7",
        ),
        ({"images": []}, "no images"),
        (
            {"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5]}]},
            "4 finite numbers",
        ),
    ],
)
def test_bad_annotations_name_file_and_problem(tmp_path, over, message):
    with pytest.raises(InputError) as err:
        read_coco(_write(tmp_path, _doc(**over)))
    assert message in str(err.value) and "ann.json" in str(err.value)


def test_malformed_json_and_missing_image(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"images": [')
    with pytest.raises(InputError, match="bad.json: malformed JSON at line 1"):
        read_coco(p)
    p = _write(tmp_path, _doc(), images=False)
    with pytest.raises(InputError, match="image file .*a.png not found"):
        read_coco(p)
    assert read_coco(p, check_images=False).num_boxes == 1


def test_unreadable_image_is_reported_on_load(tmp_path):
    p = _write(tmp_path, _doc())
    (tmp_path / "images" / "a.png").write_bytes(b"not an image")
    ds = read_coco(p)
    with pytest.raises(InputError, match="a.png: unreadable image"):
        ds.load_image(0)


def test_image_of_another_size_is_reported_on_load(tmp_path):
    """A corrupted header can decode to another size; boxes would then be in the wrong frame."""
    p = _write(tmp_path, _doc())
    Image.new("RGB", (50, 41)).save(tmp_path / "images" / "a.png")
    with pytest.raises(InputError, match="a.png: the image is 50x41 but its annotations say 50x40"):
        read_coco(p).load_image(0)

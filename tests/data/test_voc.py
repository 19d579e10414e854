from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgral.data.formats import read_dataset
from mgral.data.voc import VOC_CLASSES, read_voc, write_voc
from mgral.errors import InputError

XML = """<annotation><size><width>60</width><height>40</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>30</xmax><ymax>15</ymax></bndbox></object>
<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>60</xmax><ymax>41</ymax></bndbox></object>
</annotation>"""


def _voc(tmp: Path, xmls: dict[str, str], images: list[str]) -> Path:
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    for stem, text in xmls.items():
        (tmp / "Annotations" / f"{stem}.xml").write_text(text)
    for stem in images:
        Image.new("RGB", (60, 40)).save(tmp / "JPEGImages" / f"{stem}.jpg")
    (tmp / "ImageSets/Main/trainval.txt").write_text("".join(f"{s}\n" for s in images))
    return tmp


def test_read_voc_boxes_difficult_and_clipping(tmp_path):
    ds = read_voc(_voc(tmp_path, {"000005": XML}, ["000005"]), "trainval")
    assert ds.class_names == list(VOC_CLASSES)
    rec = ds[0]
    assert rec.image_id == 5 and rec.key == "000005"
    np.testing.assert_allclose(rec.boxes, [[10, 5, 30, 15], [0, 0, 60, 40]])
    assert rec.ignore.tolist() == [False, True]
    assert [ds.class_names[k] for k in rec.labels] == ["dog", "cat"]


def test_partial_voc_folder_and_round_trip(tmp_path):
    root = _voc(tmp_path / "v", {"a": XML}, ["a", "b"])
    (root / "ImageSets/Main/trainval.txt").unlink()
    ds = read_dataset(root, partial=True)
    assert [r.annotated for r in ds.images] == [True, False]
    with pytest.raises(InputError, match=r"b.xml: annotation file not found"):
        read_voc(root)
    write_voc(ds, tmp_path / "w")
    import shutil

    shutil.copytree(root / "JPEGImages", tmp_path / "w" / "JPEGImages")
    again = read_voc(tmp_path / "w", "trainval", partial=True)
    np.testing.assert_allclose(again[0].boxes, ds[0].boxes)
    assert not again[1].annotated


def test_malformed_xml_and_unknown_class(tmp_path):
    root = _voc(tmp_path / "m", {"a": "<annotation><object>"}, ["a"])
    with pytest.raises(InputError, match=r"a.xml: malformed XML"):
        read_voc(root, "trainval")
    root = _voc(tmp_path / "u", {"a": XML}, ["a"])
    with pytest.raises(InputError, match="unknown class name 'cat'"):
        read_voc(root, "trainval", class_names=["dog"])


def test_ids_and_sizes_that_only_look_numeric(tmp_path):
    """'²' passes str.isdigit but not int(): the ids fall back to 1..N; a NaN size is an error."""
    root = _voc(tmp_path / "d", {"000005": XML, "\u00b2": XML}, ["000005", "\u00b2"])
    ds = read_voc(root, "trainval")
    assert [r.image_id for r in ds.images] == [1, 2] and [r.key for r in ds.images] == ["000005", "\u00b2"]
    root = _voc(tmp_path / "n", {"a": XML.replace(">60<", ">nan<")}, ["a"])
    with pytest.raises(InputError, match=r"a.xml: size: <width> should be a whole number of pixels, got nan"):
        read_voc(root, "trainval")

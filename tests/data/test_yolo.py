import numpy as np
import pytest
from PIL import Image

from mgral.data.formats import detect_format, read_dataset
from mgral.data.yolo import read_yolo, write_yolo_labels
from mgral.errors import InputError


def _yolo(tmp, labels: dict[str, str], images: list[str]):
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    (tmp / "classes.txt").write_text("a\nb\n")
    for s in images:
        Image.new("RGB", (100, 50)).save(tmp / "images" / f"{s}.png")
    for s, text in labels.items():
        (tmp / "labels" / f"{s}.txt").write_text(text)
    return tmp


def test_read_yolo_normalised_boxes_and_partial(tmp_path):
    root = _yolo(tmp_path, {"x": "1 0.5 0.5 0.2 0.4\n", "y": ""}, ["x", "y", "z"])
    assert detect_format(root) == "yolo"
    ds = read_dataset(root, partial=True)
    np.testing.assert_allclose(ds[0].boxes, [[40, 15, 60, 35]], atol=1e-4)
    assert ds[0].labels.tolist() == [1]
    assert [r.annotated for r in ds.images] == [True, True, False]
    assert all(r.annotated for r in read_yolo(root).images)
    write_yolo_labels(ds, tmp_path / "w")
    assert (tmp_path / "w" / "labels" / "x.txt").read_text().startswith("1 0.5")
    assert not (tmp_path / "w" / "labels" / "z.txt").exists()


@pytest.mark.parametrize("line, message", [("5 0.5 0.5 0.1 0.1", "unknown class id 5"), ("0 a b c d", "not numbers"),
                                           ("0 0.5 0.5", "expected 'class cx cy w h'")])  # fmt: skip
def test_bad_label_lines(tmp_path, line, message):
    root = _yolo(tmp_path, {"x": line + "\n"}, ["x"])
    with pytest.raises(InputError, match=message):
        read_yolo(root)

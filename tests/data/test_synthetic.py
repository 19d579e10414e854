import numpy as np
import pytest

from mgral.data.coco import read_coco
from mgral.data.synthetic import DIFFICULTIES, make_dataset, render_image, scene_of, scenes, spec_for
from mgral.errors import InputError


@pytest.mark.parametrize(
    ("kind", "difficulty"), [("shapes", "hard"), ("digits", "hard"), ("shapes", "redundant")]
)
def test_deterministic_and_prefix_stable(tmp_path, kind, difficulty):
    # prefix-stable: a grown split starts with the smaller one (benchmarks/quality.py resplit relies on it),
    # also across the video-like scenes of `redundant`
    spec = spec_for(difficulty, image_size=64)
    a = make_dataset(kind, 16, 3, tmp_path / "a", spec)
    b = make_dataset(kind, 9, 3, tmp_path / "b", spec)
    for i in range(9):
        np.testing.assert_array_equal(a[i].boxes, b[i].boxes)
        assert (tmp_path / "a/images" / a[i].file_name).read_bytes() == (
            tmp_path / "b/images" / b[i].file_name
        ).read_bytes()
    again = read_coco(tmp_path / "a" / "annotations.json")
    assert again.num_boxes == a.num_boxes and again.num_classes == (10 if kind == "digits" else 8)


def test_boxes_are_tight_and_inside():
    for i in range(20):
        img, boxes, labels = render_image("shapes", DIFFICULTIES["easy"], 0, i)
        assert img.shape == (96, 96, 3) and len(boxes) == len(labels)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 96).all()


def test_longtail_skews_class_frequency():
    spec = spec_for("easy", longtail=2.0, max_objects=6)
    labels = np.concatenate([render_image("shapes", spec, 1, i)[2] for i in range(60)])
    counts = np.bincount(labels, minlength=spec.num_classes)
    assert counts[0] > 3 * counts[-1]


def test_bad_knobs():
    with pytest.raises(InputError, match="object size"):
        spec_for("easy", min_size=50, max_size=20)
    with pytest.raises(InputError, match="unknown setting"):
        spec_for("medium")


def test_scenes_lists_each_image_s_scene():
    """``scenes`` is ``scene_of`` over the first n images (consecutive frames share a scene, ids rise by
    one); without frames every image is its own scene."""
    ids = scenes(3, 200, 6)
    assert ids.tolist() == [scene_of(3, i, 6)[0] for i in range(200)]
    assert ids[0] == 0 and set(np.diff(ids)) <= {0, 1} and 15 < ids[-1] < 60  # about 200 / 6 scenes
    assert scenes(3, 5, 1).tolist() == [0, 1, 2, 3, 4]

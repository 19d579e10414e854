"""Label Studio JSON <-> records: coordinates, labeling configs, tasks, exports."""

from __future__ import annotations

import numpy as np
import pytest

from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.data.labelstudio import (
    boxes_to_percent,
    check_labels,
    label_config,
    parse_label_config,
    percent_to_boxes,
    prediction_score,
    read_export,
    task_for_pick,
)
from mgral.errors import InputError

CLASSES = ["cat", "dog", 'a&b <"q">']


def test_percent_pixel_round_trip_on_a_non_square_image():
    w, h = 640, 480
    boxes = np.array([[0, 0, 640, 480], [10.5, 20.25, 100, 479.5], [600, 0, 640, 12]], np.float64)
    pct = boxes_to_percent(boxes, w, h)
    np.testing.assert_allclose(pct[0], [0, 0, 100, 100])
    np.testing.assert_allclose(pct[1], [10.5 / 6.4, 20.25 / 4.8, 89.5 / 6.4, 459.25 / 4.8])
    np.testing.assert_allclose(pct[2], [93.75, 0, 6.25, 2.5])  # touching the right border
    np.testing.assert_allclose(percent_to_boxes(pct, w, h), boxes, atol=1e-9)
    assert percent_to_boxes(np.zeros((0, 4)), w, h).shape == (0, 4)


def test_rotated_rectangle_becomes_its_bounding_box():
    # 10% x 20% of a 200x100 image = 20 x 20 px at (50, 40), rotated 90 degrees clockwise about (50, 40)
    out = percent_to_boxes(np.array([[25.0, 40.0, 10.0, 20.0]]), 200, 100, np.array([90.0]))
    np.testing.assert_allclose(out, [[30, 40, 50, 60]], atol=1e-9)
    out = percent_to_boxes(np.array([[25.0, 40.0, 10.0, 20.0]]), 200, 100, np.array([360.0]))
    np.testing.assert_allclose(out, [[50, 40, 70, 60]], atol=1e-9)


def test_label_config_round_trip_and_label_checks():
    schema = parse_label_config(label_config(CLASSES), "cfg")
    assert schema.labels == tuple(CLASSES) and schema.data_key == "image"
    assert (schema.from_name, schema.to_name) == ("label", "image")
    check_labels(schema, list(reversed(CLASSES)), "cfg")  # order does not matter
    with pytest.raises(InputError, match=r"lacks the dataset's classes 'bird'.*does not know: 'cat'"):
        check_labels(schema, ["bird", "dog", CLASSES[2]], "project 3")
    custom = (
        '<View><Image name="img" value="$photo"/><Choices name="c" toName="img"><Choice value="x"/></Choices>'
        '<RectangleLabels name="box" toName="img"><Label value="cat"/></RectangleLabels></View>'
    )
    s = parse_label_config(custom, "cfg")
    assert (s.from_name, s.to_name, s.data_key, s.labels) == ("box", "img", "photo", ("cat",))
    for bad in ("<View><Image name='i' value='$i'/></View>", "<View", '<View><Image name="i" value="x"/>'
                '<RectangleLabels name="b" toName="i"/></View>'):  # fmt: skip
        with pytest.raises(InputError):
            parse_label_config(bad, "cfg")


def _pick(rank, name, boxes):
    return {"rank": rank, "file_name": name, "score": 1.0 / rank, "width": 200, "height": 100, "boxes": boxes}


def test_task_for_pick_has_percent_boxes_unique_ids_and_rank_order():
    schema = parse_label_config(label_config(CLASSES), "cfg")
    boxes = [{"bbox": [20, 10, 60, 30], "label": "cat", "score": 0.9}, {"bbox": [0, 0, 200, 100], "label": "dog",
             "score": 0.4}]  # fmt: skip
    tasks = [task_for_pick(_pick(r, f"{r}.png", boxes), f"/u/{r}.png", schema, strategy="entropy",
                           model_version="mv", n_picks=3) for r in (1, 2, 3)]  # fmt: skip
    first = tasks[0]
    assert first["data"] == {"image": "/u/1.png", "mgral_key": "1.png", "mgral_rank": 1, "mgral_score": 1.0,
                             "mgral_strategy": "entropy"}  # fmt: skip
    (pred,) = first["predictions"]
    v = pred["result"][0]["value"]
    assert (v["x"], v["y"], v["width"], v["height"], v["rectanglelabels"]) == (
        10.0,
        10.0,
        20.0,
        20.0,
        ["cat"],
    )
    assert pred["result"][1]["value"]["width"] == 100.0 and pred["result"][1]["score"] == 0.4
    ids = [r["id"] for t in tasks for r in t["predictions"][0]["result"]]
    assert len(set(ids)) == len(ids)
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores) and scores[0] == prediction_score(1, 3)  # ascending = rank order


@pytest.fixture()
def ds():
    recs = [ImageRecord(i + 1, f"sub/{i:03d}.png", 200, 100, annotated=i == 0) for i in range(5)]
    return DetectionDataset(recs, CLASSES, "/data/images", "ds.json")


def _rect(x, y, w, h, label="cat", **extra):
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 200,
            "original_height": 100, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                              "rectanglelabels": [label]}, **extra}  # fmt: skip


def _task(tid, data, *anns):
    return {"id": tid, "data": data, "annotations": list(anns)}


def _ann(aid, result, updated="2026-01-01T00:00:00Z", cancelled=False):
    return {"id": aid, "result": result, "was_cancelled": cancelled, "updated_at": updated}


def test_read_export_finished_skipped_pending_and_matching(ds, caplog):
    export = [
        # the later annotation wins; an overhang is clipped; a non-rectangle region is ignored
        _task(1, {"image": "x", "mgral_key": "sub/001.png"},
              _ann(10, [_rect(0, 0, 10, 10, "dog")], "2026-01-01T00:00:00Z"),
              _ann(11, [_rect(90, 50, 20, 60), {"type": "choices", "value": {"choices": ["x"]}}],
                   "2026-01-02T00:00:00Z")),
        _task(2, {"image": "/data/local-files/?d=shapes/sub/002.png"}, _ann(12, [])),  # no key: the URL
        _task(3, {"image": "/data/upload/4/1a2b3c4d-003.png"}, _ann(13, [], cancelled=True)),  # skipped
        _task(4, {"image": "http://host/img/sub/004.png"}),  # not annotated yet
    ]  # fmt: skip
    out = read_export(export, ds, "export.json")
    assert [im.index for im in out.images] == [1, 2] and out.skipped == 1 and out.pending == 1
    np.testing.assert_allclose(out.images[0].boxes, [[180, 50, 200, 100]])  # clipped to the image
    assert out.images[0].labels.tolist() == [0]
    assert out.images[1].boxes.shape == (0, 4) and out.images[1].labels.shape == (0,)
    assert out.ignored_regions == {"choices": 1}
    assert "clipped 1 box" in caplog.text
    export[3]["annotations"] = [_ann(14, [_rect(1, 1, 5, 5, "dog")])]
    assert [im.index for im in read_export(export, ds, "e").images] == [1, 2, 4]  # matched by the http path


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (_task(1, {"mgral_key": "sub/001.png"}, _ann(1, [_rect(1, 1, 5, 5, "zebra"), _rect(1, 1, 5, 5, "emu")])),
         r"labels unknown to the dataset: 'emu' \(task 1\), 'zebra' \(task 1\)"),
        (_task(1, {"mgral_key": "sub/001.png"}, _ann(1, [_rect(101, 10, 5, 5)])), "wholly outside the 200x100"),
        (_task(1, {"mgral_key": "sub/001.png"}, _ann(1, [_rect(10, 10, 0, 5)])), "has no area"),
        (_task(1, {"mgral_key": "sub/001.png"}, _ann(1, [_rect(10, 10, "5", 5)])), "finite number"),
        (_task(1, {"mgral_key": "sub/001.png"}, _ann(1, [_rect(10, 10, 5, 5, image_rotation=90)])), "rotated"),
        (_task(7, {"image": "/data/local-files/?d=other/zzz.png"}), "task 7: its image '/data/local-files"),
    ],
)  # fmt: skip
def test_read_export_bad_input(ds, task, message):
    with pytest.raises(InputError, match=message):
        read_export([task], ds, "export.json")
    with pytest.raises(InputError, match="list of tasks"):
        read_export({"tasks": []}, ds, "export.json")

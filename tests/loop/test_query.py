import json
import shutil

import pytest

from mgral.config import load_config
from mgral.errors import InputError
from mgral.loop.query import parse_budget, query


@pytest.fixture()
def partial_coco(shapes_dir, tmp_path):
    doc = json.loads((shapes_dir / "annotations.json").read_text())
    keep = {im["id"] for im in doc["images"][:16]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    for im in doc["images"][:16]:
        im["labeled"] = True  # labeled even if it holds no object
    shutil.copytree(shapes_dir / "images", tmp_path / "images")
    p = tmp_path / "partial.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("strategy", ["entropy", "coreset", "random"])
def test_query_writes_json_and_list(partial_coco, tmp_path, strategy):
    cfg = load_config(preset="smoke", overrides=["train.iterations=6"])
    out = tmp_path / "picks.json"
    doc = query(partial_coco, "5", strategy, out, cfg)
    saved = json.loads(out.read_text())
    assert saved == doc and doc["n_labeled"] == 16 and doc["n_unlabeled"] == 32
    assert [p["rank"] for p in doc["selected"]] == [1, 2, 3, 4, 5]
    names = out.with_suffix(".txt").read_text().split()
    assert names == [p["file_name"] for p in doc["selected"]] and len(set(names)) == 5
    ids = {p["image_id"] for p in doc["selected"]}
    assert ids.isdisjoint(range(1, 17))  # only unannotated images
    # the model's boxes on each pick, in original pixels, above the threshold, best first
    assert doc["box_threshold"] == 0.3 and doc["class_names"] == [
        "circle",
        "square",
        "triangle",
        "diamond",
        "cross",
    ]
    for pick in doc["selected"]:
        assert (pick["width"], pick["height"]) == (64, 64)
        scores = [b["score"] for b in pick["boxes"]]
        assert scores == sorted(scores, reverse=True) and all(s >= 0.3 for s in scores)
        for b in pick["boxes"]:
            x1, y1, x2, y2 = b["bbox"]
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and b["label"] in doc["class_names"]


def test_query_boxes_follow_the_threshold_and_match_the_detector(partial_coco, tmp_path):
    """With threshold 0 every detection of the trained model is written; entropy (which predicts the pool
    anyway) and random (which does not) give the same boxes for the same image."""
    cfg = load_config(preset="smoke", overrides=["train.iterations=6"])
    docs = {
        s: query(partial_coco, "32", s, tmp_path / f"{s}.json", cfg, box_threshold=0.0)
        for s in ("entropy", "random")
    }
    boxes = {s: {p["file_name"]: p["boxes"] for p in d["selected"]} for s, d in docs.items()}
    assert boxes["entropy"] == boxes["random"]
    assert sum(len(b) for b in boxes["entropy"].values()) > 0
    with pytest.raises(InputError, match="--box-threshold"):
        query(partial_coco, "5", "random", tmp_path / "x.json", cfg, box_threshold=1.5)


@pytest.mark.parametrize("budget", ["0", "-3", "2.5", "abc", "33"])
def test_bad_budget(budget):
    with pytest.raises(InputError, match="--budget"):
        parse_budget(budget, 32)


def test_query_on_a_voc_folder_with_missing_xml(shapes, tmp_path):
    """VOC layout: images without an XML are the unlabeled pool."""
    from mgral.data.voc import write_voc

    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    for rec in shapes.images:
        (root / "JPEGImages" / (rec.key + ".png")).write_bytes(
            (shapes.image_root / rec.file_name).read_bytes()
        )
    half = shapes.subset(range(10))
    write_voc(half, root)
    (root / "ImageSets" / "Main" / "trainval.txt").unlink()
    cfg = load_config(preset="smoke", overrides=["train.iterations=4"])
    doc = query(root, 4, "entropy", tmp_path / "picks.json", cfg)
    assert doc["n_labeled"] == 10 and doc["n_unlabeled"] == 38 and len(doc["selected"]) == 4
    picked = {p["file_name"] for p in doc["selected"]}
    assert picked.isdisjoint({rec.key + ".png" for rec in half.images})


#: options that keep MGRAL's search to seconds; the others run with their defaults
FAST_MGRAL = ["strategy_params.mgral.iterations=3", "strategy_params.mgral.table_size=2",
              "strategy_params.mgral.base_iterations=3", "strategy_params.mgral.presize=1",
              "strategy_params.mgral.passes=1.0"]  # fmt: skip


@pytest.mark.parametrize("strategy", ["cdal", "learning_loss", "mial", "ebal", "ppal", "mgral"])
def test_every_other_strategy_answers_a_query(partial_coco, tmp_path, strategy):
    """The practitioner's command with each of the remaining registered strategies (random, entropy and
    coreset are checked above): five distinct unannotated images, ranked, with their scores."""
    cfg = load_config(preset="smoke", overrides=["train.iterations=6", *FAST_MGRAL])
    doc = query(partial_coco, "5", strategy, tmp_path / "picks.json", cfg)
    assert doc["strategy"] == strategy and [p["rank"] for p in doc["selected"]] == [1, 2, 3, 4, 5]
    ids = [p["image_id"] for p in doc["selected"]]
    assert len(set(ids)) == 5 and set(ids).isdisjoint(range(1, 17))

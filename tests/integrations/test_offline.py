"""The air-gapped path (`labelstudio tasks`, `labelstudio merge`) and the ML backend's HTTP interface,
without a Label Studio server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mgral.cli import main
from mgral.data.coco import read_coco


@pytest.fixture()
def data_and_picks(shapes_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(shapes_dir / "images", root / "images")
    doc = json.loads((shapes_dir / "annotations.json").read_text())
    keep = {im["id"] for im in doc["images"][:10]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    (root / "annotations.json").write_text(json.dumps(doc))
    ds = read_coco(root / "annotations.json", partial=True)
    picks = {"strategy": "entropy", "detector": "tiny_ssd", "selected": [
        {"rank": k + 1, "image_id": ds[i].image_id, "file_name": ds[i].file_name, "score": 1.0 - k / 10,
         "width": 64, "height": 64, "boxes": [{"bbox": [1.0, 2.0, 30.0, 40.0], "label": "circle", "score": 0.8}]}
        for k, i in enumerate(range(20, 24))]}  # fmt: skip
    (tmp_path / "picks.json").write_text(json.dumps(picks))
    return root / "annotations.json", tmp_path / "picks.json"


def run(capsys, *argv):
    capsys.readouterr()
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tasks_file_then_merge_an_export(data_and_picks, tmp_path, capsys):
    data, picks = data_and_picks
    out = tmp_path / "tasks.json"
    code, text, err = run(
        capsys, "labelstudio", "tasks", "--data", str(data), "--picks", str(picks), "--out", str(out)
    )
    assert code == 0, err
    info = json.loads(text)
    tasks = json.loads(out.read_text())
    assert info["tasks"] == 4 and info["document_root"] == str(data.parent.resolve())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=images/" + tasks[0]["data"]["mgral_key"]
    assert "<RectangleLabels" in Path(info["label_config"]).read_text()
    # what Label Studio exports after an annotator accepted the first prediction and marked the second empty
    export = [dict(t, id=k + 1, annotations=[]) for k, t in enumerate(tasks)]
    export[0]["annotations"] = [
        {"id": 1, "result": tasks[0]["predictions"][0]["result"], "was_cancelled": False}
    ]
    export[1]["annotations"] = [{"id": 2, "result": [], "was_cancelled": False}]
    export[2]["annotations"] = [{"id": 3, "result": [], "was_cancelled": True}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    code, text, err = run(
        capsys, "labelstudio", "merge", "--export", str(tmp_path / "export.json"), "--data", str(data)
    )
    assert code == 0, err
    res = json.loads(text)
    assert (res["newly_labeled"], res["negatives"], res["skipped_tasks"], res["tasks_not_annotated"]) == (
        2,
        1,
        1,
        1,
    )
    ds = read_coco(data, partial=True)
    by_name = {r.file_name: r for r in ds.images}
    first = by_name[tasks[0]["data"]["mgral_key"]]
    np.testing.assert_allclose(first.boxes, [[1, 2, 30, 40]], atol=1e-3)
    assert (
        by_name[tasks[1]["data"]["mgral_key"]].annotated
        and not by_name[tasks[2]["data"]["mgral_key"]].annotated
    )
    snapshot = data.read_bytes()
    code, text, err = run(
        capsys, "labelstudio", "merge", "--export", str(tmp_path / "export.json"), "--data", str(data)
    )
    assert code == 0 and json.loads(text)["unchanged"] == 2 and data.read_bytes() == snapshot


def _export_with(region_value):
    return [{"id": 5, "data": {"mgral_key": "000030.png"}, "annotations": [{"id": 1, "was_cancelled": False,
             "result": [{"type": "rectanglelabels", "value": region_value}]}]}]  # fmt: skip


@pytest.mark.parametrize(
    ("export", "message"),
    [
        (
            _export_with({"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["zebra"]}),
            "'zebra' (task 5)",
        ),
        (
            _export_with({"x": 120, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["circle"]}),
            "wholly outside",
        ),
        ("{not json", "malformed JSON"),
    ],
)
def test_bad_export_leaves_the_dataset_untouched(data_and_picks, tmp_path, capsys, export, message):
    data, _ = data_and_picks
    f = tmp_path / "export.json"
    f.write_text(export if isinstance(export, str) else json.dumps(export))
    before = {p: p.read_bytes() for p in data.parent.rglob("*") if p.is_file()}
    code, out, err = run(capsys, "labelstudio", "merge", "--export", str(f), "--data", str(data))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert str(f) in err and message in err
    assert {p: p.read_bytes() for p in data.parent.rglob("*") if p.is_file()} == before


def test_bad_picks_and_missing_token(data_and_picks, tmp_path, capsys, monkeypatch):
    data, picks = data_and_picks
    doc = json.loads(picks.read_text())
    for pick in doc["selected"]:
        del pick["boxes"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    code, _, err = run(
        capsys,
        "labelstudio",
        "tasks",
        "--data",
        str(data),
        "--picks",
        str(old),
        "--out",
        str(tmp_path / "t.json"),
    )
    assert code == 2 and "no model boxes" in err and not (tmp_path / "t.json").exists()
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    code, _, err = run(
        capsys,
        "labelstudio",
        "push",
        "--url",
        "http://127.0.0.1:9",
        "--data",
        str(data),
        "--picks",
        str(picks),
    )
    assert code == 2 and "--token" in err
    code, _, err = run(capsys, "labelstudio", "tasks", "--data", str(data), "--picks", str(picks), "--out",
                       str(tmp_path / "t.json"), "--document-root", str(tmp_path / "elsewhere"))  # fmt: skip
    assert code == 2 and "must be a parent folder of the image folder" in err


def test_ml_backend_endpoints(data_and_picks, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from mgral.config import load_config
    from mgral.data.labelstudio import label_config
    from mgral.integrations import serve as serve_mod

    data, _ = data_and_picks
    cfg = load_config(preset="smoke", overrides=["train.iterations=3", "progress=false"])
    service = serve_mod.ModelService(data, cfg, workdir=tmp_path / "work", box_threshold=0.0)
    service.start()
    api = TestClient(serve_mod.create_app(service))
    health = api.get("/health").json()
    assert (
        health["status"] == "UP"
        and health["model_version"].startswith("mgral-")
        and health["train_images"] == 10
    )
    assert api.post("/setup", json={"project": "1.1", "schema": "<View/>"}).json() == {
        "model_version": service.model_version
    }

    xml = label_config(["circle", "square"])  # the project knows only two classes
    tasks = [{"id": 1, "data": {"image": "/data/local-files/?d=ds/images/000030.png"}},
             {"id": 2, "data": {"image": "/data/upload/1/abc-nowhere.png"}}]  # fmt: skip
    res = api.post("/predict", json={"tasks": tasks, "label_config": xml}).json()
    assert res["model_version"] == service.model_version and len(res["results"]) == 2
    first = res["results"][0]
    assert first["result"] and {r["value"]["rectanglelabels"][0] for r in first["result"]} <= {
        "circle",
        "square",
    }
    assert all(0 <= r["value"]["x"] <= 100 and r["original_width"] == 64 for r in first["result"])
    assert res["results"][1] == {"result": [], "score": 0.0, "model_version": service.model_version}
    assert api.post("/predict", json={"tasks": "x"}).status_code == 400

    # an annotation event, then training on request: one more image, a new model version
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 1, "data": tasks[0]["data"]},
             "annotation": {"id": 9, "result": [], "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z"}}  # fmt: skip
    assert api.post("/webhook", json=event).status_code == 201
    assert json.loads(service.events_path.read_text().splitlines()[-1])["annotation"]["id"] == 9
    old = service.model_version
    assert api.post("/train").json()["status"] in ("training started", "already training")
    service.wait(120)
    assert service.n_train == 11 and service.model_version != old and service.last_error is None
    # deleting the annotation takes the image out of the next training; the cached first model is reused
    api.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 9}]})

    def no_training(*a, **k):
        raise AssertionError("the model should come from the cache")

    monkeypatch.setattr(serve_mod, "fit", no_training)
    api.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    service.wait(120)
    assert service.model_version == old and service.n_train == 10 and service.last_error is None

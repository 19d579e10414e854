"""The practitioner's loop against a real Label Studio: query -> push -> annotate (REST, as an annotator
would) -> pull -> query again; plus idempotence, uploads, the ML backend and bad input on the server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mgral.cli import main
from mgral.data.coco import read_coco
from mgral.data.labelstudio import label_config

QUERY = ["--preset", "smoke", "--set", "train.iterations=8", "--no-progress"]
N_LABELED, BUDGET = 12, 8


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def loop_data(label_studio, tmp_path_factory):
    """A partly labeled shapes dataset under the server's document root, and the first picks."""
    root = label_studio.document_root / "shapes"
    from mgral.data.synthetic import make_dataset, spec_for

    make_dataset("shapes", 60, 0, root, spec_for("easy", image_size=64))
    doc = json.loads((root / "annotations.json").read_text())
    keep = {im["id"] for im in doc["images"][:N_LABELED]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    for im in doc["images"][:N_LABELED]:
        im["labeled"] = True
    (root / "annotations.json").write_text(json.dumps(doc))
    picks = tmp_path_factory.mktemp("round1") / "picks.json"
    assert main(["-q", "query", "--data", str(root / "annotations.json"), "--budget", str(BUDGET),
                 "--out", str(picks), *QUERY]) == 0  # fmt: skip
    return root / "annotations.json", picks


def client(server):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=server.url, api_key=server.token)


def test_push_annotate_pull_query(label_studio, loop_data, capsys, tmp_path):
    data, picks = loop_data
    srv = ["--url", label_studio.url, "--token", label_studio.token]
    picked = json.loads(picks.read_text())["selected"]
    docroot = ["--document-root", str(label_studio.document_root)]

    # the server's document root is not the default (the image folder's parent): a clear error, no project
    code, out, err = run_cli(capsys, "labelstudio", "push", *srv, "--data", str(data), "--picks", str(picks),
                             "--project", "shapes round 1")  # fmt: skip
    assert (
        code == 2 and "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" in err and len(err.strip().splitlines()) == 1
    )
    assert not [p for p in client(label_studio).projects.list() if p.title == "shapes round 1"]

    code, out, err = run_cli(capsys, "labelstudio", "push", *srv, "--data", str(data), "--picks", str(picks),
                             "--project", "shapes round 1", *docroot)  # fmt: skip
    assert code == 0, err
    pushed = json.loads(out)
    assert (
        pushed["tasks_created"] == BUDGET and pushed["tasks_already_there"] == 0 and pushed["project_created"]
    )
    pid = pushed["project"]

    # what Label Studio holds: one task per pick, the model's boxes as a prediction, rank order
    ls = client(label_studio)
    project = ls.projects.get(id=pid)
    assert project.sampling == "Uncertainty sampling" and project.model_version == pushed["model_version"]
    views = [
        v
        for v in ls.views.list(project=pid)
        if (v.data or {}).get("title") == "mgral: most informative first"
    ]
    assert len(views) == 1
    tasks = list(ls.tasks.list(project=pid, view=views[0].id, fields="all"))
    assert [t.data["mgral_rank"] for t in tasks] == list(range(1, BUDGET + 1))  # sorted by prediction score
    assert [t.data["mgral_key"] for t in tasks] == [p["file_name"] for p in picked]
    for task, pick in zip(tasks, picked):
        (pred,) = task.predictions
        assert pred.model_version == pushed["model_version"]
        assert len(pred.result) == len(pick["boxes"])
        assert len({r["id"] for r in pred.result}) == len(pred.result)
        for region, box in zip(pred.result, pick["boxes"]):
            v = region["value"]
            assert region["original_width"] == pick["width"] and v["rectanglelabels"] == [box["label"]]
            assert v["x"] == pytest.approx(box["bbox"][0] / pick["width"] * 100)
            assert v["height"] == pytest.approx((box["bbox"][3] - box["bbox"][1]) / pick["height"] * 100)
            assert region["score"] == pytest.approx(box["score"])
    headers = {"Authorization": f"Token {label_studio.token}"}
    nxt = httpx.get(f"{label_studio.url}/api/projects/{pid}/next", headers=headers, timeout=30).json()
    assert nxt["data"]["mgral_rank"] == 1  # the label stream serves the most informative image first
    img = httpx.get(label_studio.url + tasks[0].data["image"], headers=headers, timeout=30)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"

    # pushing the same picks again creates nothing
    code, out, err = run_cli(capsys, "labelstudio", "push", *srv, "--data", str(data), "--picks", str(picks),
                             "--project", str(pid), *docroot)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["tasks_created"] == 0 and json.loads(out)["tasks_already_there"] == BUDGET
    assert len(list(ls.tasks.list(project=pid))) == BUDGET

    # an annotator: corrects one box (or draws one), submits one image as empty, skips one
    t1, t2, t3 = tasks[0], tasks[1], tasks[2]
    region = {"id": "fix1", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
              "original_width": 64, "original_height": 64, "image_rotation": 0,
              "value": {"x": 12.5, "y": 25.0, "width": 50.0, "height": 37.5, "rotation": 0,
                        "rectanglelabels": ["square"]}}  # fmt: skip
    corrected = [dict(r, value=dict(r["value"])) for r in t1.predictions[0].result[1:]] + [region]
    ls.annotations.create(id=t1.id, result=corrected)
    ls.annotations.create(id=t2.id, result=[])
    ls.annotations.create(id=t3.id, result=[], was_cancelled=True)

    before = read_coco(data)
    code, out, err = run_cli(capsys, "labelstudio", "pull", *srv, "--project", str(pid), "--data", str(data))
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["newly_labeled"] == 2 and pulled["negatives"] == 1 and pulled["skipped_tasks"] == 1
    assert pulled["tasks_not_annotated"] == BUDGET - 3 and pulled["n_labeled"] == N_LABELED + 2
    doc = json.loads(data.read_text())
    entries = {im["file_name"]: im for im in doc["images"]}
    assert entries[t1.data["mgral_key"]].get("labeled") and entries[t2.data["mgral_key"]].get("labeled")
    assert not entries[t3.data["mgral_key"]].get("labeled")
    after = read_coco(data, partial=True)
    by_name = {r.file_name: r for r in after.images}
    r1, r2, r3 = (by_name[t.data["mgral_key"]] for t in (t1, t2, t3))
    assert r1.annotated and len(r1.labels) == len(corrected)
    np.testing.assert_allclose(r1.boxes[-1], [8, 16, 40, 40], atol=1e-3)  # 12.5% of 64 = 8 px, ...
    assert after.class_names[int(r1.labels[-1])] == "square"
    assert r2.annotated and len(r2.labels) == 0 and not r3.annotated
    assert len(after.annotated_indices()) == N_LABELED + 2 == len(read_coco(data).images) - 46
    assert before.num_boxes <= after.num_boxes

    # pulling again changes nothing
    snapshot = data.read_bytes()
    code, out, err = run_cli(capsys, "labelstudio", "pull", *srv, "--project", str(pid), "--data", str(data))
    assert code == 0, err
    assert json.loads(out)["newly_labeled"] == 0 and json.loads(out)["backup"] is None
    assert data.read_bytes() == snapshot

    # the next round uses the new labels
    picks2 = tmp_path / "picks2.json"
    assert main(["-q", "query", "--data", str(data), "--budget", "5", "--out", str(picks2), *QUERY]) == 0
    round2 = json.loads(picks2.read_text())
    assert round2["n_labeled"] == N_LABELED + 2 and round2["n_unlabeled"] == 60 - N_LABELED - 2
    names2 = {p["file_name"] for p in round2["selected"]}
    assert names2.isdisjoint({t1.data["mgral_key"], t2.data["mgral_key"]})


def test_push_by_upload_and_pull(label_studio, loop_data, capsys, tmp_path):
    data, picks = loop_data
    srv = ["--url", label_studio.url, "--token", label_studio.token]
    code, out, err = run_cli(capsys, "labelstudio", "push", *srv, "--data", str(data), "--picks", str(picks),
                             "--project", "shapes uploaded", "--images", "upload")  # fmt: skip
    assert code == 0, err
    pid = json.loads(out)["project"]
    ls = client(label_studio)
    tasks = list(ls.tasks.list(project=pid, fields="all"))
    assert len(tasks) == BUDGET and all(t.data["image"].startswith("/data/upload/") for t in tasks)
    headers = {"Authorization": f"Token {label_studio.token}"}
    img = httpx.get(label_studio.url + tasks[0].data["image"], headers=headers, timeout=30)
    assert (
        img.status_code == 200
        and img.content == (data.parent / "images" / tasks[0].data["mgral_key"]).read_bytes()
    )
    code, out, err = run_cli(capsys, "labelstudio", "push", *srv, "--data", str(data), "--picks", str(picks),
                             "--project", str(pid), "--images", "upload")  # fmt: skip
    assert code == 0 and json.loads(out)["tasks_created"] == 0
    uploads = label_studio.document_root.parent / "data" / "media" / "upload" / str(pid)
    assert len(list(uploads.iterdir())) == BUDGET  # nothing uploaded the second time

    # pull into a copy in VOC layout: the same export lands in another format
    from dataclasses import replace

    from mgral.data.dataset import DetectionDataset
    from mgral.data.voc import write_voc

    voc = tmp_path / "voc"
    ds = read_coco(data, partial=True)
    (voc / "JPEGImages").mkdir(parents=True)
    for rec in ds.images:
        (voc / "JPEGImages" / rec.file_name).write_bytes((ds.image_root / rec.file_name).read_bytes())
    write_voc(
        DetectionDataset([replace(r, key=Path(r.file_name).stem) for r in ds.images], ds.class_names, None),
        voc,
    )
    (voc / "ImageSets" / "Main" / "trainval.txt").unlink()
    ls.annotations.create(id=tasks[4].id, result=[])
    code, out, err = run_cli(capsys, "labelstudio", "pull", *srv, "--project", str(pid), "--data", str(voc))
    assert code == 0, err
    assert json.loads(out)["newly_labeled"] == 1
    xml = voc / "Annotations" / (Path(tasks[4].data["mgral_key"]).stem + ".xml")
    assert xml.is_file() and "<object>" not in xml.read_text()


def test_bad_input_against_the_server(label_studio, loop_data, capsys):
    data, picks = loop_data
    good = ["--data", str(data), "--picks", str(picks)]
    snapshot = data.read_bytes()
    cases = [
        (["--url", label_studio.url, "--token", "not-the-token"], "token was refused"),
        (["--url", "http://127.0.0.1:9", "--token", "x"], "cannot reach Label Studio"),
    ]
    for srv, message in cases:
        code, out, err = run_cli(capsys, "labelstudio", "push", *srv, *good)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    # a project whose labels differ from the dataset's classes
    ls = client(label_studio)
    other = ls.projects.create(title="other labels", label_config=label_config(["cat", "circle"]))
    srv = ["--url", label_studio.url, "--token", label_studio.token]
    code, out, err = run_cli(capsys, "labelstudio", "push", *srv, *good, "--project", str(other.id))
    assert code == 2 and "'cat'" in err and "'square'" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(
        capsys, "labelstudio", "pull", *srv, "--project", str(other.id), "--data", str(data)
    )
    assert code == 2 and "labels differ" in err
    code, out, err = run_cli(capsys, "labelstudio", "pull", *srv, "--project", "987654", "--data", str(data))
    assert code == 2 and "no project with id 987654" in err
    assert len(list(ls.tasks.list(project=other.id))) == 0
    assert data.read_bytes() == snapshot


def test_ml_backend_in_label_studio(label_studio, loop_data, tmp_path):
    """Label Studio connects to `mgral serve`, gets its boxes for a task, sends events, asks to train."""
    import uvicorn

    from mgral.config import load_config
    from mgral.integrations.serve import ModelService, create_app
    from tests.integrations.lsserver import free_port

    data, _ = loop_data
    cfg = load_config(preset="smoke", overrides=["train.iterations=4", "progress=false"])
    service = ModelService(data, cfg, workdir=tmp_path / "serve", box_threshold=0.0)
    service.start()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        ls = client(label_studio)
        proj = ls.projects.create(
            title="with ml backend", label_config=label_config(read_coco(data).class_names)
        )
        # a task that Label Studio's own storage made: no mgral key, an image the dataset has not labeled
        name = next(r.file_name for r in read_coco(data, partial=True).images if not r.annotated)
        url = f"/data/local-files/?d=shapes/images/{name}"
        ls.projects.import_tasks(id=proj.id, request=[{"data": {"image": url}}])
        ml = ls.ml.create(url=f"http://127.0.0.1:{port}", project=proj.id, title="mgral")
        (task,) = list(ls.tasks.list(project=proj.id))
        headers = {"Authorization": f"Token {label_studio.token}"}
        r = httpx.post(f"{label_studio.url}/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": proj.id},
                       json={"selectedItems": {"all": True, "excluded": []}}, headers=headers, timeout=120)  # fmt: skip
        assert r.status_code == 200, r.text
        (task,) = list(ls.tasks.list(project=proj.id, fields="all"))
        (pred,) = task.predictions
        assert pred.model_version == service.model_version and pred.result
        assert all(reg["type"] == "rectanglelabels" and reg["original_width"] == 64 for reg in pred.result)

        ls.annotations.create(id=task.id, result=[])  # Label Studio sends ANNOTATION_CREATED to /webhook
        for _ in range(50):
            if service.events_path.is_file() and "ANNOTATION_CREATED" in service.events_path.read_text():
                break
            time.sleep(0.2)
        events = [json.loads(line) for line in service.events_path.read_text().splitlines()]
        created = [e for e in events if e["action"] == "ANNOTATION_CREATED"]
        assert created and created[-1]["task"]["id"] == task.id and created[-1]["annotation"]["result"] == []
        old, n_before = service.model_version, service.n_train
        ls.ml.train(id=ml.id)  # "Start training": START_TRAINING on /webhook
        for _ in range(50):
            if service.training or service.model_version != old:
                break
            time.sleep(0.2)
        service.wait(300)
        assert service.model_version != old and service.last_error is None
        assert service.n_train == n_before + 1  # the empty image annotated in Label Studio is a negative now
    finally:
        server.should_exit = True
        thread.join(30)

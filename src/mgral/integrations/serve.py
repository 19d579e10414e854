"""A Label Studio ML backend serving the current mgral model (FastAPI + uvicorn).

Protocol (what Label Studio 1.23 calls, read from its ``ml/api_connector.py`` and checked against the
``label-studio-ml`` package):

* ``GET /health`` (and ``GET /``): ``{"status": "UP", ...}``.
* ``POST /setup`` ``{"project", "schema", "hostname", "access_token", ...}`` -> ``{"model_version"}``.
* ``POST /predict`` ``{"tasks": [...], "label_config", ...}`` -> ``{"results": [one prediction per task],
  "model_version"}``; a prediction is ``{"result": [rectangles], "score", "model_version"}``.
* ``POST /webhook`` ``{"action", ...}``: Label Studio sends every project event to the backend's
  ``/webhook`` (it registers that webhook when the backend is connected), and its "Start training" button
  sends ``{"action": "START_TRAINING"}`` there. Events are appended to ``events.jsonl`` in the work
  folder; ``START_TRAINING`` retrains. ``POST /train`` retrains too.

The model is trained at start-up on the dataset's annotated images, or loaded from
``<workdir>/models/<fingerprint>.pt`` where the fingerprint hashes the config, the seed, the classes and
every annotated image's boxes and labels. Retraining re-reads the dataset (labels merged by ``mgral
labelstudio pull`` count) and adds the latest finished annotation of each task recorded in the event log,
without writing the dataset; it runs in a background thread while the previous model keeps answering.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request  # FastAPI resolves handler annotations by module name
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mgral.config import RunConfig, to_dict
from mgral.data.dataset import DetectionDataset
from mgral.data.formats import read_dataset, resolve_format
from mgral.data.labelstudio import (
    KEY,
    ImageIndex,
    LabelingSchema,
    label_config,
    parse_label_config,
    read_export,
    rectangle_results,
    region_id,
)
from mgral.data.torch_data import image_tensor
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.training.engine import fit
from mgral.training.supervised import Supervised
from mgral.utils import derive_seed, resolve_device, timer

log = logging.getLogger(__name__)

TRAIN_ACTIONS = ("START_TRAINING",)
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def default_workdir(data: str | Path, fmt: str = "auto") -> Path:
    """``.mgral-serve/`` in the dataset's folder (beside a COCO JSON, in a VOC or YOLO root)."""
    fmt, target = resolve_format(data, fmt)
    return (target.parent if fmt == "coco" else target) / ".mgral-serve"


class ModelService:
    """The model behind the server: training (or loading), prediction, the event log, retraining.

    Thread-safe: predictions use the current detector while a retraining builds the next one.
    """

    def __init__(
        self,
        data: str | Path,
        cfg: RunConfig,
        *,
        fmt: str = "auto",
        split: str | None = None,
        workdir: str | Path | None = None,
        box_threshold: float = 0.3,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= box_threshold <= 1.0:
            raise InputError("--box-threshold", f"expected a score between 0 and 1, got {box_threshold!r}")
        self.data, self.cfg, self.fmt, self.split, self.seed = data, cfg, fmt, split, seed
        self.box_threshold = box_threshold
        self.workdir = Path(workdir) if workdir else default_workdir(data, fmt)
        self.events_path = self.workdir / "events.jsonl"
        self.device = resolve_device(cfg.device)
        self._lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._training: threading.Thread | None = None
        self._job = 0
        self.last_error: str | None = None
        self.hostname = ""
        self._access_token = ""
        self.dataset: DetectionDataset = read_dataset(data, fmt, split=split, partial=True)
        self.detector: Detector | None = None
        self.model_version = ""
        self.n_train = 0

    # ------------------------------------------------------------------ training
    def training_set(self) -> DetectionDataset:
        """The dataset as on disk, plus the latest finished annotation per task from the event log."""
        ds = read_dataset(self.data, self.fmt, split=self.split, partial=True)
        images = list(ds.images)
        for task in self._tasks_from_events():
            try:
                reading = read_export([task], ds, str(self.events_path))
            except InputError as exc:
                log.warning("event log: task %s not used for training: %s", task.get("id"), exc.problem)
                continue
            for im in reading.images:
                images[im.index] = replace(
                    images[im.index], boxes=im.boxes, labels=im.labels,
                    ignore=np.zeros(len(im.labels), bool), annotated=True,
                )  # fmt: skip
        return DetectionDataset(images, ds.class_names, ds.image_root, ds.source, ds.category_ids)

    def fingerprint(self, ds: DetectionDataset) -> str:
        """A hash of everything the trained weights depend on."""
        cfg = to_dict(self.cfg)
        cfg.pop("progress", None)
        h = hashlib.sha256()
        h.update(json.dumps({"cfg": cfg, "seed": self.seed, "classes": ds.class_names}, sort_keys=True,
                            default=str).encode())  # fmt: skip
        for rec in ds.images:
            if rec.annotated:
                h.update(rec.file_name.encode())
                h.update(np.round(rec.boxes.astype(np.float64), 2).tobytes())
                h.update(rec.labels.tobytes())
        return h.hexdigest()

    def build_model(self) -> tuple[Detector, str, int]:
        """Train on the annotated images (or load the cached weights); ``(detector, version, n images)``."""
        ds = self.training_set()
        labeled = ds.annotated_indices()
        if len(labeled) == 0:
            raise InputError(self.data, "no annotated image to train on")
        fp = self.fingerprint(ds)
        version = f"mgral-{fp[:12]}"
        detector = Detector(
            self.cfg.detector, ds.num_classes, seed=derive_seed(self.seed, "init"), device=self.device
        )
        cached = self.workdir / "models" / f"{fp}.pt"
        if cached.is_file():
            detector.load(cached)
            log.info("loaded model %s (%d annotated images) from %s", version, len(labeled), cached)
            return detector, version, len(labeled)
        log.info("training %s on %d annotated images", self.cfg.detector.name, len(labeled))
        seed = derive_seed(self.seed, "train", 0)
        with timer() as t:
            fit(detector, Supervised(ds, labeled, seed=seed, augment=self.cfg.train.augment), self.cfg.train,
                progress=self.cfg.progress, desc="train")  # fmt: skip
        detector.save(cached)
        log.info("trained model %s in %.1fs", version, t["s"])
        return detector, version, len(labeled)

    def start(self) -> None:
        """Train or load the first model (blocking)."""
        detector, version, n = self.build_model()
        with self._lock:
            self.detector, self.model_version, self.n_train = detector, version, n

    def train_async(self) -> dict[str, Any]:
        """Retrain in a background thread unless a retraining runs already."""
        with self._lock:
            if self._training is not None and self._training.is_alive():
                return {"job": self._job, "status": "already training"}
            self._job += 1
            job = self._job
            self._training = threading.Thread(
                target=self._retrain, args=(job,), name=f"mgral-train-{job}", daemon=True
            )
            self._training.start()
        return {"job": job, "status": "training started"}

    def _retrain(self, job: int) -> None:
        try:
            detector, version, n = self.build_model()
        except Exception as exc:  # a failed retraining keeps the previous model serving
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            log.error("retraining %d failed: %s", job, self.last_error)
            return
        with self._lock:
            self.detector, self.model_version, self.n_train = detector, version, n
            self.last_error = None
        log.info("retraining %d done: model %s", job, version)

    @property
    def training(self) -> bool:
        return self._training is not None and self._training.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a running retraining ends (for tests and scripts)."""
        if self._training is not None:
            self._training.join(timeout)

    # ------------------------------------------------------------------ events
    def record_event(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Append a webhook event to the log (annotation results included); a training event retrains."""
        action = str(payload.get("action", ""))
        entry: dict[str, Any] = {"received": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action}
        project = payload.get("project")
        if isinstance(project, Mapping):
            entry["project"] = project.get("id")
        task = payload.get("task")
        if isinstance(task, Mapping):
            entry["task"] = {"id": task.get("id"), "data": task.get("data")}
        ann = payload.get("annotation")
        if isinstance(ann, Mapping):
            entry["annotation"] = {
                k: ann.get(k) for k in ("id", "result", "was_cancelled", "created_at", "updated_at")
            }
        anns = payload.get("annotations")
        if isinstance(anns, list):
            entry["annotations"] = [a.get("id") for a in anns if isinstance(a, Mapping)]
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self._events_lock, self.events_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        if action in TRAIN_ACTIONS:
            return self.train_async()
        return {"status": "recorded", "action": action}

    def _tasks_from_events(self) -> list[dict[str, Any]]:
        """Tasks (in export form) built from the event log: each annotation's last version, minus deleted."""
        if not self.events_path.is_file():
            return []
        anns: dict[Any, tuple[dict[str, Any], dict[str, Any]]] = {}
        for line in self.events_path.read_text(encoding="utf-8").splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("action") in ANNOTATION_ACTIONS and ev.get("annotation") and ev.get("task"):
                anns[ev["annotation"].get("id")] = (ev["task"], ev["annotation"])
            elif ev.get("action") in ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED"):
                for aid in ev.get("annotations") or [(ev.get("annotation") or {}).get("id")]:
                    anns.pop(aid, None)
        tasks: dict[Any, dict[str, Any]] = {}
        for task, ann in anns.values():
            if not isinstance(task.get("data"), dict):
                continue
            tasks.setdefault(task.get("id"), {"id": task.get("id"), "data": task["data"], "annotations": []})
            tasks[task.get("id")]["annotations"].append(ann)
        return list(tasks.values())

    # ------------------------------------------------------------------ prediction
    def setup(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Remember where Label Studio is (to fetch images of tasks that are not dataset images)."""
        self.hostname = str(payload.get("hostname") or self.hostname)
        self._access_token = str(payload.get("access_token") or self._access_token)
        return {"model_version": self.model_version}

    def _schema(self, xml: str | None) -> LabelingSchema:
        return parse_label_config(xml or label_config(self.dataset.class_names), "label_config")

    def _image(self, data: Mapping[str, Any], schema: LabelingSchema) -> torch.Tensor | None:
        """``float32[3, H, W]`` in ``[0, 1]`` of a task's image: a dataset image, else fetched by URL."""
        i = ImageIndex(self.dataset).find(data)
        if i is not None:
            return image_tensor(self.dataset, i)
        url = data.get(schema.data_key)
        if not isinstance(url, str) or not url:
            return None
        import httpx
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        headers = {}
        if url.startswith("/"):
            if not self.hostname:
                return None
            url = self.hostname.rstrip("/") + url
        if self._access_token and self.hostname and url.startswith(self.hostname.rstrip("/")):
            headers["Authorization"] = f"Token {self._access_token}"
        try:
            resp = httpx.get(url, headers=headers, timeout=30.0, follow_redirects=True)
            resp.raise_for_status()
            with Image.open(io.BytesIO(resp.content)) as im:
                rgb = im.convert("RGB")
        except Exception as exc:  # an unreachable image gives an empty prediction, not a failed batch
            log.warning("cannot load the image of a task (%s): %s", url, exc)
            return None
        return F.to_dtype(F.to_image(rgb), torch.float32, scale=True)

    def predict(self, tasks: list[Mapping[str, Any]], xml: str | None = None) -> dict[str, Any]:
        """One prediction per task: boxes scoring at least the threshold, whose labels the project has."""
        schema = self._schema(xml)
        with self._lock:
            detector, version = self.detector, self.model_version
        if detector is None:
            raise RuntimeError("the model is not ready")
        results = []
        names = self.dataset.class_names
        for task in tasks:
            data = task.get("data") or {}
            img = self._image(data, schema)
            if img is None:
                results.append({"result": [], "score": 0.0, "model_version": version})
                continue
            preds, _ = detector.infer_batch([img], predictions=True)
            assert preds is not None
            p = preds[0]
            keep = [k for k in np.argsort(-p.scores, kind="stable")
                    if p.scores[k] >= self.box_threshold and names[int(p.labels[k])] in schema.labels]  # fmt: skip
            h, w = int(img.shape[1]), int(img.shape[2])
            key = str(data.get(KEY) or task.get("id", ""))
            regions = rectangle_results(
                p.boxes[keep].clip(0, [w, h, w, h]), [names[int(p.labels[k])] for k in keep], w, h, schema,
                scores=[float(p.scores[k]) for k in keep], ids=[region_id(key, version, j) for j in range(len(keep))],
            )  # fmt: skip
            score = float(np.mean(p.scores[keep])) if keep else 0.0
            results.append({"result": regions, "score": score, "model_version": version})
        return {"results": results, "model_version": version}

    def status(self) -> dict[str, Any]:
        return {
            "status": "UP", "model_class": "mgral", "model_version": self.model_version,
            "training": self.training, "train_images": self.n_train, "last_error": self.last_error,
        }  # fmt: skip


def create_app(service: ModelService) -> FastAPI:
    """The FastAPI application of ``service`` (whose first model must be ready: :meth:`ModelService.start`)."""
    app = FastAPI(title="mgral ML backend for Label Studio")

    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="the body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(status_code=400, detail="the body should be a JSON object")
        return body

    @app.get("/")
    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.status()

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        return service.setup(await _json(request))

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        body = await _json(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise HTTPException(status_code=400, detail="'tasks' should be a list")
        return await run_in_threadpool(service.predict, tasks, body.get("label_config"))

    @app.post("/webhook")
    async def webhook(request: Request) -> Any:
        return JSONResponse(service.record_event(await _json(request)), status_code=201)

    @app.post("/train")
    def train() -> Any:
        return JSONResponse(service.train_async(), status_code=201)

    return app


def serve(service: ModelService, host: str = "127.0.0.1", port: int = 9090) -> None:
    """Train or load the model, then answer Label Studio until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise InputError(
            "mgral serve", "needs the optional extra: pip install 'mgral[labelstudio]'"
        ) from None
    service.start()
    log.info("ML backend on http://%s:%d (model %s); connect it in the project's Model settings", host, port,
             service.model_version)  # fmt: skip
    uvicorn.run(create_app(service), host=host, port=port, log_level="info")

"""Label Studio over its REST API, through the official client (``label-studio-sdk``).

``push`` puts the picks of ``mgral query`` into a project (created when missing) as tasks with the
model's boxes as pre-annotations, ordered so that Label Studio serves the most informative image first;
``pull`` brings finished annotations back into the dataset, in its own format. ``tasks`` and ``merge``
do the same through files, for a Label Studio that mgral cannot reach.

Images reach Label Studio in one of two ways:

* ``local-files`` (default): Label Studio reads them from disk. It serves ``/data/local-files/?d=PATH``
  (``PATH`` relative to its ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) only when serving is enabled
  (``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``) *and* a local-storage connection of a project the
  user can see covers the file's folder; that folder must lie strictly below the document root. ``push``
  creates that connection (path: the dataset's image folder) and never syncs it, so the storage adds no
  task of its own. The document root defaults to the image folder's parent.
* ``upload``: the image files are uploaded to Label Studio (each once: an image whose task exists is not
  sent again).
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from mgral.data.coco import load_json
from mgral.data.dataset import DetectionDataset
from mgral.data.formats import read_dataset
from mgral.data.labelstudio import (
    KEY,
    LOCAL_FILES_PREFIX,
    LabelingSchema,
    check_labels,
    check_picks,
    label_config,
    parse_label_config,
    read_export,
    task_for_pick,
)
from mgral.data.update import update_annotations
from mgral.errors import InputError
from mgral.utils import atomic_write_json, atomic_write_text, stable_hash

log = logging.getLogger(__name__)

IMAGE_MODES = ("local-files", "upload")
VIEW_TITLE = "mgral: most informative first"
IMPORT_CHUNK = 500
UPLOAD_CHUNK = 20


# ----------------------------------------------------------------------------- errors and client
@contextmanager
def _api(url: str, doing: str) -> Iterator[None]:
    """Turn the client's failures into one-line :class:`InputError` s naming the server."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as exc:
        code = exc.status_code
        if code == 401:
            raise InputError(url, f"{doing}: the token was refused (HTTP 401); check --token") from None
        if code == 403:
            raise InputError(url, f"{doing}: not allowed for this user (HTTP 403)") from None
        raise InputError(url, f"{doing}: HTTP {code}: {_short(exc.body)}") from None
    except httpx.HTTPError as exc:
        raise InputError(
            url, f"{doing}: cannot reach Label Studio ({exc.__class__.__name__}: {exc})"
        ) from None


def _short(body: Any) -> str:
    if isinstance(body, dict):
        body = body.get("validation_errors") or body.get("detail") or body
    text = json.dumps(body) if not isinstance(body, str) else body
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def connect(url: str, token: str, timeout: float = 120.0) -> Any:
    """A ``label_studio_sdk.LabelStudio`` client, after checking that the server answers and takes the
    token (legacy API tokens and personal access tokens both work)."""
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise InputError(
            "mgral labelstudio", "needs the optional extra: pip install 'mgral[labelstudio]'"
        ) from None
    if not url.startswith(("http://", "https://")):
        raise InputError(url, "the Label Studio URL should start with http:// or https://")
    with _api(url, "connecting"):
        ls = LabelStudio(base_url=url.rstrip("/"), api_key=token, timeout=timeout)
        ls.users.whoami()
    return ls


@dataclass
class Project:
    id: int
    title: str
    schema: LabelingSchema
    created: bool


def ensure_project(
    ls: Any, url: str, name_or_id: str | None, dataset: DetectionDataset, *, create: bool
) -> Project:
    """The project named (title) or numbered ``name_or_id``; created with a labeling config built from the
    dataset's classes when ``create`` and no project has that title. An existing project's rectangle
    labels must be the dataset's classes."""
    title = name_or_id or f"mgral {Path(dataset.source).stem or 'dataset'}"
    with _api(url, "finding the project"):
        if title.isdigit():
            found = [p for p in ls.projects.list(ids=title) if p.id == int(title)]
            if not found:
                raise InputError("--project", f"no project with id {title} on {url}")
        else:
            found = [p for p in ls.projects.list(title=title) if p.title == title]
            if len(found) > 1:
                ids = ", ".join(str(p.id) for p in found)
                raise InputError(
                    "--project", f"{len(found)} projects are titled {title!r} (ids {ids}); give an id"
                )
    if found:
        with _api(url, "reading the project"):
            proj = ls.projects.get(id=found[0].id)
        where = f"{url} project {proj.id}"
        schema = parse_label_config(proj.label_config or "", where)
        check_labels(schema, dataset.class_names, where)
        return Project(int(proj.id), str(proj.title), schema, created=False)
    if not create:
        raise InputError("--project", f"no project titled {title!r} on {url}")
    if len(title) < 3:
        raise InputError("--project", "a project title needs at least 3 characters")
    xml = label_config(dataset.class_names)
    with _api(url, "creating the project"):
        proj = ls.projects.create(
            title=title,
            label_config=xml,
            description=f"Active learning with mgral on {dataset.source}",
            sampling="Uncertainty sampling",  # the label stream serves the lowest prediction score first
            show_collab_predictions=True,
        )
    log.info("created Label Studio project %d %r", proj.id, title)
    return Project(int(proj.id), title, parse_label_config(xml, url), created=True)


def _existing_keys(ls: Any, url: str, project: int) -> dict[str, int]:
    """``mgral_key`` -> task id of the project's tasks that carry one."""
    out: dict[str, int] = {}
    with _api(url, "listing tasks"):
        for task in ls.tasks.list(project=project, include="id,data", page_size=1000):
            key = (task.data or {}).get(KEY)
            if isinstance(key, str):
                out.setdefault(key, int(task.id))
    return out


# ----------------------------------------------------------------------------- image URLs
def local_files_url(path: Path, document_root: Path) -> str:
    """``/data/local-files/?d=...`` of ``path`` (both absolute) relative to Label Studio's document root."""
    rel = path.relative_to(document_root)
    return LOCAL_FILES_PREFIX + quote(PurePosixPath(*rel.parts).as_posix())


def _image_root(dataset: DetectionDataset) -> Path:
    if dataset.image_root is None:
        raise InputError(dataset.source, "images with absolute paths (a merged dataset) cannot be pushed")
    return dataset.image_root.resolve()


def _document_root(dataset: DetectionDataset, document_root: str | Path | None) -> Path:
    images = _image_root(dataset)
    root = Path(document_root).resolve() if document_root else images.parent
    if root not in images.parents:
        raise InputError(
            "--document-root",
            f"{root} must be a parent folder of the image folder {images}: Label Studio serves local files "
            "only from a storage folder strictly below its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
        )
    return root


def _ensure_local_storage(ls: Any, url: str, project: int, folder: Path) -> None:
    """A local-files storage connection of ``project`` covering ``folder`` (never synced: tasks come from
    mgral, not from a scan of the folder)."""
    with _api(url, "listing local storages"):
        for st in ls.import_storage.local.list(project=project):
            if st.path and (Path(st.path) == folder or Path(st.path) in folder.parents):
                return
    with _api(url, "connecting the image folder as local storage"):
        ls.import_storage.local.create(
            project=project, path=str(folder), title="mgral images", use_blob_urls=False,
            description="created by mgral labelstudio push; not synced (tasks are imported by mgral)",
        )  # fmt: skip
    log.info("project %d: local-files storage %s", project, folder)


def _check_served(ls: Any, url: str, image_url: str, docroot: Path) -> None:
    """Label Studio must serve the first image, else its document root is not ``docroot``."""
    with _api(url, "checking that Label Studio serves the images"):
        resp = ls._client_wrapper.httpx_client.request(image_url.lstrip("/"), method="GET")
    if resp.status_code != 200:
        raise InputError(
            url,
            f"it does not serve {image_url} (HTTP {resp.status_code}): start it with "
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={docroot}, "
            "or give its document root with --document-root, or use --images upload",
        )


def _upload(ls: Any, url: str, project: int, files: list[Path]) -> list[str]:
    """Upload image files to the project without creating tasks; their ``/data/upload/...`` URLs."""
    out: list[str] = []
    for start in range(0, len(files), UPLOAD_CHUNK):
        chunk = files[start : start + UPLOAD_CHUNK]
        parts = {
            f"file{k}": (
                p.name,
                p.read_bytes(),
                mimetypes.guess_type(p.name)[0] or "application/octet-stream",
            )
            for k, p in enumerate(chunk)
        }
        with _api(url, "uploading images"):
            resp = ls._client_wrapper.httpx_client.request(  # the SDK has no call for a raw upload
                f"api/projects/{project}/import",
                method="POST",
                params={"commit_to_project": "false"},
                files=parts,
            )
            if resp.status_code >= 400:
                raise InputError(url, f"uploading images: HTTP {resp.status_code}: {_short(resp.text)}")
            ids = resp.json().get("file_upload_ids", [])
            if len(ids) != len(chunk):
                raise InputError(url, f"uploading images: {len(chunk)} files sent, {len(ids)} stored")
            for p, fid in zip(chunk, ids):
                name = ls.files.get(id=fid).file
                if not str(name).endswith(p.name):
                    raise InputError(url, f"uploading images: stored {name!r} for {p.name!r}")
                out.append("/data/" + str(name).lstrip("/"))
    return out


# ----------------------------------------------------------------------------- push
def _model_version(picks: Mapping[str, Any]) -> str:
    sel = [(p["file_name"], p["rank"]) for p in picks["selected"]]
    digest = stable_hash(json.dumps(sel), picks.get("detector"), picks.get("strategy")) % 16**8
    return f"mgral-{picks.get('strategy', 'query')}-{digest:08x}"


def read_picks(path: str | Path, dataset: DetectionDataset) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = load_json(Path(path))
    return doc, check_picks(doc, dataset, str(path))


def make_tasks(
    picks: Mapping[str, Any], selected: list[dict[str, Any]], schema: LabelingSchema, urls: list[str]
) -> list[dict[str, Any]]:
    """Label Studio tasks for ``selected`` picks, with the image URLs ``urls`` (aligned)."""
    mv = _model_version(picks)
    n = len(picks["selected"])
    strategy = str(picks.get("strategy", ""))
    return [
        task_for_pick(p, u, schema, strategy=strategy, model_version=mv, n_picks=n)
        for p, u in zip(selected, urls)
    ]


def push(
    url: str,
    token: str,
    data: str | Path,
    picks_path: str | Path,
    *,
    project: str | None = None,
    images: str = "local-files",
    document_root: str | Path | None = None,
    fmt: str = "auto",
    split: str | None = None,
) -> dict[str, Any]:
    """Create (or reuse) a project and import one task per pick that it does not hold yet.

    Returns ``{"project", "url", "tasks_created", "tasks_already_there", "model_version"}``.
    """
    if images not in IMAGE_MODES:
        raise InputError("--images", f"expected one of {', '.join(IMAGE_MODES)}, got {images!r}")
    dataset = read_dataset(data, fmt, split=split, partial=True)
    picks, selected = read_picks(picks_path, dataset)
    docroot = _document_root(dataset, document_root) if images == "local-files" else None
    ls = connect(url, token)
    proj = ensure_project(ls, url, project, dataset, create=True)
    existing = _existing_keys(ls, url, proj.id)
    todo = [p for p in selected if p["file_name"] not in existing]
    by_name = {r.file_name: i for i, r in enumerate(dataset.images)}
    paths = [dataset.image_path(by_name[p["file_name"]]).resolve() for p in todo]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(missing[0], "image file not found")
    try:
        if docroot is not None:
            urls = [local_files_url(p, docroot) for p in paths]
            if todo:
                _ensure_local_storage(ls, url, proj.id, _image_root(dataset))
                _check_served(ls, url, urls[0], docroot)
        else:
            urls = _upload(ls, url, proj.id, paths)
    except BaseException:
        if proj.created:  # leave no empty project behind
            with _api(url, "removing the project just created"):
                ls.projects.delete(id=proj.id)
        raise
    tasks = make_tasks(picks, todo, proj.schema, urls)
    mv = _model_version(picks)
    for start in range(0, len(tasks), IMPORT_CHUNK):
        with _api(url, "importing tasks"):
            ls.projects.import_tasks(
                id=proj.id, request=tasks[start : start + IMPORT_CHUNK], return_task_ids=True
            )
    if tasks:
        with _api(url, "setting the project's model version"):
            # uncertainty sampling only serves tasks whose prediction has the project's model version
            ls.projects.update(id=proj.id, model_version=mv)
        _ensure_view(ls, url, proj.id)
    log.info(
        "project %d: %d task(s) created, %d already there", proj.id, len(tasks), len(selected) - len(todo)
    )
    return {
        "project": proj.id, "url": f"{url.rstrip('/')}/projects/{proj.id}", "project_created": proj.created,
        "tasks_created": len(tasks), "tasks_already_there": len(selected) - len(todo), "model_version": mv,
    }  # fmt: skip


def _ensure_view(ls: Any, url: str, project: int) -> None:
    """A Data Manager tab listing tasks by ascending prediction score (= rank), the most informative first."""
    with _api(url, "creating the Data Manager tab"):
        if any((v.data or {}).get("title") == VIEW_TITLE for v in ls.views.list(project=project)):
            return
        ls.views.create(project=project, data={"title": VIEW_TITLE, "ordering": ["tasks:predictions_score"]})


def write_tasks(
    data: str | Path,
    picks_path: str | Path,
    out: str | Path,
    *,
    document_root: str | Path | None = None,
    fmt: str = "auto",
    split: str | None = None,
) -> dict[str, Any]:
    """Without a server: ``out`` (tasks to import, local-files URLs) and ``<out stem>.label_config.xml``."""
    dataset = read_dataset(data, fmt, split=split, partial=True)
    picks, selected = read_picks(picks_path, dataset)
    docroot = _document_root(dataset, document_root)
    by_name = {r.file_name: i for i, r in enumerate(dataset.images)}
    urls = [local_files_url(dataset.image_path(by_name[p["file_name"]]).resolve(), docroot) for p in selected]
    xml = label_config(dataset.class_names)
    tasks = make_tasks(picks, selected, parse_label_config(xml, "label config"), urls)
    out = Path(out)
    config_path = out.with_name(out.stem + ".label_config.xml")
    atomic_write_text(config_path, xml + "\n")
    atomic_write_json(out, tasks)
    return {
        "tasks": len(tasks), "out": str(out), "label_config": str(config_path), "document_root": str(docroot),
        "storage_folder": str(_image_root(dataset)), "model_version": _model_version(picks),
    }  # fmt: skip


# ----------------------------------------------------------------------------- pull
def merge_export(
    export: Any, data: str | Path, *, source: str, fmt: str = "auto", split: str | None = None
) -> dict[str, Any]:
    """Merge the finished annotations of a Label Studio JSON export into the dataset (all or nothing)."""
    dataset = read_dataset(data, fmt, split=split, partial=True)
    reading = read_export(export, dataset, source)
    new = {im.index: (im.boxes, im.labels) for im in reading.images}
    res = update_annotations(data, dataset, new, fmt=fmt, split=split)
    negatives = sum(1 for im in reading.images if len(im.labels) == 0)
    return {
        "dataset": str(data), "annotated_tasks": len(reading.images), "newly_labeled": len(res.labeled),
        "relabeled": len(res.relabeled), "unchanged": len(res.unchanged), "negatives": negatives,
        "skipped_tasks": reading.skipped, "tasks_not_annotated": reading.pending,
        "boxes": int(sum(len(im.labels) for im in reading.images)),
        "backup": str(res.backup) if res.backup else None,
        "n_labeled": int(len(dataset.annotated_indices()) + len(res.labeled)),
    }  # fmt: skip


def merge_file(
    export_path: str | Path, data: str | Path, *, fmt: str = "auto", split: str | None = None
) -> dict[str, Any]:
    export = load_json(Path(export_path))
    return merge_export(export, data, source=str(export_path), fmt=fmt, split=split)


def pull(
    url: str, token: str, project: str, data: str | Path, *, fmt: str = "auto", split: str | None = None
) -> dict[str, Any]:
    """Export the project's tasks (JSON) and merge their finished annotations into ``data``."""
    dataset = read_dataset(data, fmt, split=split, partial=True)
    ls = connect(url, token)
    proj = ensure_project(ls, url, project, dataset, create=False)
    with _api(url, "exporting annotations"):
        export = ls.projects.exports.as_json(proj.id)
    out = merge_export(export, data, source=f"{url} project {proj.id}", fmt=fmt, split=split)
    return {"project": proj.id, **out}


__all__ = ["connect", "merge_export", "merge_file", "pull", "push", "write_tasks"]

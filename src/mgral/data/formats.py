"""Reading a dataset from a path whatever its format."""

from __future__ import annotations

from pathlib import Path

from mgral.data.coco import read_coco
from mgral.data.dataset import DetectionDataset
from mgral.data.voc import read_voc
from mgral.data.yolo import read_yolo
from mgral.errors import InputError

FORMATS = ("auto", "coco", "voc", "yolo")


def detect_format(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if path.is_dir():
        if (path / "Annotations").is_dir() or (path / "JPEGImages").is_dir():
            return "voc"
        if (
            (path / "labels").is_dir()
            or (path / "images").is_dir()
            and any((path / n).is_file() for n in ("classes.txt", "obj.names", "data.yaml"))
        ):
            return "yolo"
        jsons = sorted(path.glob("*.json"))
        if len(jsons) == 1:
            return "coco"
    if not path.exists():
        raise InputError(path, "no such file or folder")
    raise InputError(
        path, "cannot tell the dataset format (COCO .json, VOC folder or YOLO folder); pass --format"
    )


def resolve_format(path: str | Path, fmt: str = "auto") -> tuple[str, Path]:
    """The format of the dataset at ``path`` and the path its reader takes (for COCO, the JSON file even
    when ``path`` is the folder holding it)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError("--format", f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "coco" and path.is_dir():
        jsons = sorted(path.glob("*.json"))
        if len(jsons) != 1:
            raise InputError(path, "expected exactly one .json file in the folder")
        path = jsons[0]
    return fmt, path


def read_dataset(
    path: str | Path,
    fmt: str = "auto",
    *,
    split: str | None = None,
    image_root: str | Path | None = None,
    partial: bool = False,
    check_images: bool = True,
    allow_outside: bool = False,
) -> DetectionDataset:
    """Read a COCO JSON (or a folder holding one), a VOC folder or a YOLO folder.

    ``allow_outside`` lets an annotation file name image files outside the dataset folder (a YOLO folder
    cannot: its images are the files under ``images/``)."""
    fmt, path = resolve_format(path, fmt)
    if fmt == "coco":
        return read_coco(
            path, image_root, partial=partial, check_images=check_images, allow_outside=allow_outside
        )
    if fmt == "voc":
        return read_voc(path, split, partial=partial, check_images=check_images, allow_outside=allow_outside)
    return read_yolo(path, partial=partial, check_images=check_images)

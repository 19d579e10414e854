"""Pascal VOC devkit layout: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

VOC pixel coordinates are 1-based and inclusive; like detectron2 we subtract one from ``xmin``/``ymin``
so that a box ``[x1, y1, x2, y2]`` spans ``x2 - x1`` pixels, and the writer adds it back.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.data.validate import (
    BoxStats,
    check_boxes,
    check_image_file,
    check_inside,
    check_not_empty,
    warn_clipped,
)
from mgral.errors import InputError
from mgral.utils import atomic_write_text, read_text

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _image_ids_for_split(root: Path, split: str | None) -> list[str]:
    if split is not None:
        f = root / "ImageSets" / "Main" / f"{split}.txt"
        if not f.is_file():
            raise InputError(f, f"split file for '{split}' not found")
        return [line.split()[0] for line in read_text(f).splitlines() if line.strip()]
    stems = {p.stem for p in (root / "JPEGImages").glob("*") if p.suffix.lower() in IMAGE_EXTS}
    stems |= {p.stem for p in (root / "Annotations").glob("*.xml")}
    return sorted(stems)


def _find_image(root: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTS:
        p = root / "JPEGImages" / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _text(node: ET.Element, tag: str, xml: Path, item: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise InputError(xml, f"{item}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml: Path, item: str) -> float:
    text = _text(node, tag, xml, item)
    try:
        return float(text)
    except ValueError:
        raise InputError(xml, f"{item}: <{tag}> is not a number: {text!r}") from None


def _pixels(size: ET.Element, tag: str, xml: Path) -> int:
    """A side of ``<size>`` in whole pixels (0 or less: unknown, read from the image)."""
    value = _number(size, tag, xml, "size")
    if not math.isfinite(value) or not value.is_integer():
        raise InputError(xml, f"size: <{tag}> should be a whole number of pixels, got {value!r}")
    return int(value)


def parse_voc_xml(xml: Path) -> tuple[int | None, int | None, list[tuple[str, list[float], bool]]]:
    """``(width, height, [(name, [xmin, ymin, xmax, ymax] 1-based, difficult), ...])`` of one XML file."""
    try:
        tree = ET.parse(xml)
    except ET.ParseError as exc:
        raise InputError(xml, f"malformed XML: {exc}") from None
    except OSError as exc:
        raise InputError(xml, f"cannot read ({exc})") from None
    root = tree.getroot()
    size = root.find("size")
    width = height = None
    if size is not None and size.find("width") is not None:
        width, height = (_pixels(size, tag, xml) for tag in ("width", "height"))
    objects = []
    for k, obj in enumerate(root.findall("object")):
        item = f"object {k}"
        name = _text(obj, "name", xml, item)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InputError(xml, f"{item}: missing <bndbox>")
        coords = [_number(bnd, t, xml, item) for t in ("xmin", "ymin", "xmax", "ymax")]
        diff = obj.find("difficult")
        difficult = diff is not None and diff.text is not None and diff.text.strip() == "1"
        objects.append((name, coords, difficult))
    return width, height, objects


def read_voc(
    root: str | Path,
    split: str | None = None,
    *,
    class_names: Sequence[str] | None = None,
    partial: bool = False,
    check_images: bool = True,
    allow_outside: bool = False,
) -> DetectionDataset:
    """Read a VOC-layout folder (``root`` holds ``Annotations`` and ``JPEGImages``).

    ``split`` picks ``ImageSets/Main/<split>.txt``; without it every image (and XML) is taken. Classes
    are ``class_names`` when given, the 20 VOC classes when every object name is one of them, else the
    sorted names found. With ``partial=True`` an image without XML is unlabeled; otherwise it is an error.
    An id in the split file that leads outside ``Annotations/`` or ``JPEGImages/`` (``../x``, ``/abs/x``) is
    refused unless ``allow_outside``.
    """
    root = Path(root)
    if not (root / "Annotations").is_dir() and not (root / "JPEGImages").is_dir():
        raise InputError(root, "not a VOC folder (no Annotations/ or JPEGImages/ inside)")
    stems = _image_ids_for_split(root, split)
    check_not_empty(len(stems), str(root))

    parsed: dict[str, tuple[int | None, int | None, list[tuple[str, list[float], bool]]] | None] = {}
    for stem in stems:
        xml = root / "Annotations" / f"{stem}.xml"
        source = str(root / "ImageSets" / "Main" / f"{split}.txt") if split is not None else str(root)
        check_inside(xml, root / "Annotations", source, f"image {stem}", stem, allow_outside)
        check_inside(
            root / "JPEGImages" / stem, root / "JPEGImages", source, f"image {stem}", stem, allow_outside
        )
        if xml.is_file():
            parsed[stem] = parse_voc_xml(xml)
        elif partial:
            parsed[stem] = None
        else:
            raise InputError(xml, "annotation file not found")
    if class_names is None:
        found = sorted({o[0] for p in parsed.values() if p is not None for o in p[2]})
        class_names = list(VOC_CLASSES) if set(found) <= set(VOC_CLASSES) else found
    if not class_names:
        raise InputError(root, "no object classes found in the annotations")
    cls_index = {n: i for i, n in enumerate(class_names)}

    # ids from numeric stems (VOC's 000005 -> 5): ASCII digits only (int() refuses '²', which isdigit()
    # accepts), distinct, and small enough for 64 bits
    numeric = all(s.isascii() and s.isdigit() and len(s) <= 18 for s in stems)
    numeric = numeric and len({int(s) for s in stems}) == len(stems)
    stats = BoxStats()
    records = []
    for k, stem in enumerate(stems):
        xml = root / "Annotations" / f"{stem}.xml"
        image_path = _find_image(root, stem)
        if image_path is None and check_images:
            raise InputError(root / "JPEGImages", f"image {stem}: image file not found")
        # relative to JPEGImages/ as the split file names it (an id may hold a sub-folder)
        file_name = f"{stem}{image_path.suffix}" if image_path is not None else f"{stem}.jpg"
        p = parsed[stem]
        width, height, objects = p if p is not None else (None, None, [])
        if width is None or height is None or width <= 0 or height <= 0:
            if image_path is None:
                raise InputError(xml, "no <size> and no image file to read the size from")
            size = check_image_file(image_path, str(root), f"image {stem}", read_header=True)
            assert size is not None
            width, height = size
        for name, _, _ in objects:
            if name not in cls_index:
                raise InputError(xml, f"unknown class name {name!r} (known: {', '.join(class_names)})")
        coords = np.array([o[1] for o in objects], np.float64).reshape(-1, 4)
        coords[:, :2] -= 1.0
        boxes = check_boxes(coords, width, height, str(xml), f"image {stem}", stats)
        records.append(
            ImageRecord(
                image_id=int(stem) if numeric else k + 1,
                file_name=file_name,
                width=width,
                height=height,
                boxes=boxes,
                labels=np.array([cls_index[o[0]] for o in objects], np.int64),
                ignore=np.array([o[2] for o in objects], bool),
                annotated=p is not None,
                key=stem,
            )
        )
    warn_clipped(stats, str(root))
    return DetectionDataset(records, class_names, root / "JPEGImages", root)


def write_voc(dataset: DetectionDataset, root: str | Path, split: str = "trainval") -> None:
    """Write the annotations of ``dataset`` in VOC layout under ``root`` (XMLs and the split file).

    Unannotated images get no XML. Image files are not copied.
    """
    root = Path(root)
    for rec in dataset.images:
        if not rec.annotated:
            continue
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = rec.file_name
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", rec.width), ("height", rec.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
        for box, label, ign in zip(rec.boxes.tolist(), rec.labels.tolist(), rec.ignore.tolist()):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = dataset.class_names[label]
            ET.SubElement(obj, "difficult").text = "1" if ign else "0"
            bnd = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (box[0] + 1, box[1] + 1, box[2], box[3])):
                ET.SubElement(bnd, tag).text = f"{v:g}"
        ET.indent(ann)
        atomic_write_text(
            root / "Annotations" / f"{rec.key}.xml", ET.tostring(ann, encoding="unicode") + "\n"
        )
    keys = "".join(f"{rec.key}\n" for rec in dataset.images)
    atomic_write_text(root / "ImageSets" / "Main" / f"{split}.txt", keys)

"""YOLO layout: ``images/**``, ``labels/**/<stem>.txt`` with ``class cx cy w h`` (normalised), and a
class-names file (``classes.txt``, ``obj.names`` or ``data.yaml`` with ``names``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.data.validate import BoxStats, check_boxes, check_image_file, check_not_empty, warn_clipped
from mgral.data.voc import IMAGE_EXTS
from mgral.errors import InputError
from mgral.utils import atomic_write_text, parse_yaml, read_text


def _read_names(root: Path, names_file: str | Path | None) -> list[str]:
    candidates = (
        [Path(names_file)] if names_file else [root / "classes.txt", root / "obj.names", root / "data.yaml"]
    )
    for f in candidates:
        if not f.is_file():
            continue
        if f.suffix in (".yaml", ".yml"):
            data = parse_yaml(read_text(f), f)
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                keys = list(names)
                if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(
                    keys
                ) != list(range(len(keys))):
                    raise InputError(
                        f, f"'names' keys should be the class ids 0..{len(keys) - 1}, got {keys!r}"
                    )
                names = [names[k] for k in range(len(keys))]
            if not isinstance(names, list) or not names:
                raise InputError(f, "no 'names' list")
            for n in names:
                if not isinstance(n, (str, int, float)) or isinstance(n, bool):
                    raise InputError(f, f"class name {n!r} is not text")
            return [str(n) for n in names]
        names = [line.strip() for line in read_text(f).splitlines() if line.strip()]
        if not names:
            raise InputError(f, "class-names file is empty")
        return names
    raise InputError(root, "no class-names file (classes.txt, obj.names or data.yaml)")


def read_yolo(
    root: str | Path,
    *,
    names_file: str | Path | None = None,
    partial: bool = False,
    check_images: bool = True,
) -> DetectionDataset:
    """Read a YOLO folder. An image without a label file is unlabeled with ``partial=True`` and a
    negative otherwise (the YOLO convention); an empty label file is always a labeled negative."""
    root = Path(root)
    img_dir, lbl_dir = root / "images", root / "labels"
    if not img_dir.is_dir():
        raise InputError(root, "not a YOLO folder (no images/ inside)")
    names = _read_names(root, names_file)
    files = sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    check_not_empty(len(files), str(root))
    stats = BoxStats()
    records = []
    for k, img in enumerate(files):
        rel = img.relative_to(img_dir)
        label_file = (lbl_dir / rel).with_suffix(".txt")
        size = check_image_file(img, str(root), f"image {rel}", read_header=True)
        assert size is not None
        width, height = size
        rows: list[list[float]] = []
        if label_file.is_file():
            for ln, line in enumerate(read_text(label_file).splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    values = [float(v) for v in parts[:5]]
                except ValueError:
                    raise InputError(label_file, f"line {ln}: not numbers: {line!r}") from None
                if len(parts) != 5 or not values[0].is_integer():  # 6+ values: a polygon or a score
                    raise InputError(label_file, f"line {ln}: expected 'class cx cy w h', got {line!r}")
                if not 0 <= values[0] < len(names):
                    raise InputError(
                        label_file, f"line {ln}: unknown class id {int(values[0])} ({len(names)} classes)"
                    )
                rows.append(values)
        arr = np.array(rows, np.float64).reshape(-1, 5)
        with np.errstate(over="ignore", invalid="ignore"):  # NaN, inf and overflows: check_boxes reports them
            cx, cy, w, h = arr[:, 1] * width, arr[:, 2] * height, arr[:, 3] * width, arr[:, 4] * height
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        boxes = check_boxes(boxes, width, height, str(label_file), f"image {rel}", stats)
        records.append(
            ImageRecord(
                image_id=k + 1,
                file_name=str(rel),
                width=width,
                height=height,
                boxes=boxes,
                labels=arr[:, 0].astype(np.int64),
                annotated=label_file.is_file() or not partial,
                key=str(rel.with_suffix("")),
            )
        )
    warn_clipped(stats, str(root))
    return DetectionDataset(records, names, img_dir, root)


def write_yolo_labels(dataset: DetectionDataset, root: str | Path) -> None:
    """Write ``labels/*.txt`` and ``classes.txt`` for the annotated images of ``dataset`` under ``root``.

    Each file is written atomically and ``classes.txt`` last: a first write that stopped half-way leaves
    no class-names file, which the reader refuses, rather than a folder with labels silently missing."""
    root = Path(root)
    for rec in dataset.images:
        if not rec.annotated:
            continue
        lines = []
        for box, label in zip(rec.boxes.tolist(), rec.labels.tolist()):
            cx, cy = (box[0] + box[2]) / 2 / rec.width, (box[1] + box[3]) / 2 / rec.height
            w, h = (box[2] - box[0]) / rec.width, (box[3] - box[1]) / rec.height
            lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        atomic_write_text((root / "labels" / rec.file_name).with_suffix(".txt"), "".join(lines))
    atomic_write_text(root / "classes.txt", "".join(f"{n}\n" for n in dataset.class_names))

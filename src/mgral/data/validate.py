"""Checks shared by every reader: boxes, ids, files. Errors name the file, the item and the problem."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mgral.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class BoxStats:
    """Counts of what the box check repaired, for one warning per dataset."""

    clipped: int = 0


#: boxes and scores are kept in float32; a larger number would overflow in the cast
FLOAT32_MAX = float(np.finfo(np.float32).max)


def finite_number(value: object, bound: float = math.inf) -> float | None:
    """``value`` as a float when it is a finite number from a file (not a boolean) of magnitude at most
    ``bound``, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) and abs(number) <= bound else None


def check_boxes(
    boxes: np.ndarray, width: int, height: int, source: str, item: str, stats: BoxStats
) -> np.ndarray:
    """Validate ``[x1, y1, x2, y2]`` boxes of one image; clip overhangs (counted in ``stats``).

    Raises :class:`InputError` for a coordinate that is not finite (or not one as a 32-bit float, the
    dtype boxes are kept in), a box with no area, or one wholly outside the image. Readers hand boxes in
    float64, so that an out-of-range number is reported here rather than overflowing in a cast.
    """
    wide = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(wide) == 0:
        return wide.astype(np.float32)
    bad_number = ~np.isfinite(wide).all(1) | (np.abs(wide) > FLOAT32_MAX).any(1)
    if bad_number.any():
        k = int(np.nonzero(bad_number)[0][0])
        raise InputError(
            source, f"{item}: box {k} {wide[k].tolist()} has a coordinate that is NaN, infinite or huge"
        )
    boxes = wide.astype(np.float32)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    bad = (w <= 0) | (h <= 0)
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise InputError(source, f"{item}: box {k} {boxes[k].tolist()} has no area")
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
    if outside.any():
        k = int(np.nonzero(outside)[0][0])
        raise InputError(
            source, f"{item}: box {k} {boxes[k].tolist()} lies wholly outside the {width}x{height} image"
        )
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    changed = (clipped != boxes).any(1)
    stats.clipped += int(changed.sum())
    return clipped


def warn_clipped(stats: BoxStats, source: str) -> None:
    if stats.clipped:
        log.warning("%s: clipped %d box(es) that overhung their image", source, stats.clipped)


#: what PIL raises for a file it cannot decode (a missing file aside): an unknown format, a truncated or
#: corrupted stream (OSError, SyntaxError, EOFError, ValueError from its plugins), a header claiming far
#: more pixels than PIL's limit (DecompressionBombError)
IMAGE_ERRORS: tuple[type[Exception], ...] = (
    UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError,
)  # fmt: skip


def unreadable_image(path: Path, exc: Exception) -> InputError:
    return InputError(path, f"unreadable image ({exc.__class__.__name__}: {exc})")


def check_image_file(path: Path, source: str, item: str, read_header: bool) -> tuple[int, int] | None:
    """Check that an image file exists (and, with ``read_header``, that PIL can read it); return its size."""
    if not path.is_file():
        raise InputError(source, f"{item}: image file {path} not found")
    if not read_header:
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except IMAGE_ERRORS as exc:
        raise unreadable_image(path, exc) from None


def check_inside(path: Path, root: Path, source: str, item: str, name: str, allow_outside: bool) -> None:
    """Refuse a file that an annotation file names (``name``, giving ``path``) when it lies outside ``root``,
    the folder the dataset's files are relative to: ``../x.png`` or an absolute path elsewhere would make
    mgral read (and report on) files the user never handed it. The test is on the path as written
    (normalised, not resolved), so a symlink inside the folder is followed wherever it leads.
    ``allow_outside`` lifts the rule (``--allow-outside-paths``, ``data.allow_outside_paths``)."""
    if allow_outside:
        return
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.abspath(path))
    if target == base or os.path.commonpath([base, target]) != base:
        raise InputError(
            source,
            f"{item}: file name {name!r} is not inside the dataset folder {root} "
            "(pass --allow-outside-paths, or set data.allow_outside_paths, to allow it)",
        )


def check_file_name(name: str, source: str, item: str) -> None:
    """A file name from an annotation file must be able to name a file."""
    if not name.strip():
        raise InputError(source, f"{item}: empty file name")
    if "\x00" in name:
        raise InputError(source, f"{item}: file name {name!r} contains a NUL character")


def check_unique_ids(ids: list[int], source: str) -> None:
    seen: set[int] = set()
    for image_id in ids:
        if image_id in seen:
            raise InputError(source, f"duplicate image id {image_id}")
        seen.add(image_id)


def check_not_empty(n: int, source: str) -> None:
    if n == 0:
        raise InputError(source, "the dataset has no images")

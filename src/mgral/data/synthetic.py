"""Built-in datasets generated deterministically from a seed and written to disk as COCO.

* ``shapes``: filled shapes on noisy backgrounds. Knobs: number of classes, objects per image, object
  size range, noise, long-tail class frequency, clutter; ``easy`` and ``hard`` settings.
* ``digits``: scenes composed from scikit-learn's 8x8 handwritten digits (10 classes), upscaled.

Image ``i`` of a dataset depends only on ``(seed, i)``, so the first ``n`` images of a larger set are the
same as the ``n`` images of a smaller one.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mgral.config import from_mapping
from mgral.data.coco import read_coco, write_coco
from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.errors import InputError
from mgral.utils import atomic_write_bytes, derive_seed, make_dir

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross", "ring", "hexagon", "bar")
GENERATORS = ("shapes", "digits")


@dataclass(frozen=True)
class SyntheticSpec:
    """Knobs of the generators (sizes in pixels)."""

    image_size: int = 96  # square images, side in pixels
    num_classes: int = 5  # shapes: at most 8; digits: always 10
    min_objects: int = 1
    max_objects: int = 4
    min_size: int = 14  # object side range in pixels
    max_size: int = 36
    noise: float = 0.08  # std of the Gaussian pixel noise, in [0, 1] units
    longtail: float = 0.0  # class k drawn with weight (k + 1) ** -longtail; 0 = balanced
    clutter: int = 0  # number of distracting strokes per image
    class_colors: bool = True  # shapes: each class has its own hue, or colours are random
    color_jitter: float = 0.0  # std of per-channel noise added to a class colour
    max_overlap: float = 0.3  # reject placements whose IoU with an earlier object exceeds this
    frames: int = 1  # mean frames per scene: consecutive images of a scene are near-duplicates (video-like)
    jitter: int = 3  # frames: the largest shift in pixels of a frame against its scene


DIFFICULTIES: dict[str, SyntheticSpec] = {
    "easy": SyntheticSpec(),
    "hard": SyntheticSpec(
        num_classes=8, min_objects=1, max_objects=6, min_size=8, max_size=30, noise=0.2,
        longtail=1.0, clutter=4, class_colors=True, color_jitter=0.15, max_overlap=0.4,
    ),
    # the hard shapes as frames of short videos (scenes of 1-11 near-duplicate frames, 6 on average) with a
    # longer tail: redundancy that uncertainty sampling walks into, and rare classes worth finding
    "redundant": SyntheticSpec(
        num_classes=8, min_objects=1, max_objects=6, min_size=8, max_size=30, noise=0.2,
        longtail=1.5, clutter=4, class_colors=True, color_jitter=0.15, max_overlap=0.4, frames=6, jitter=3,
    ),
}  # fmt: skip


def spec_for(difficulty: str = "easy", **overrides: Any) -> SyntheticSpec:
    if difficulty not in DIFFICULTIES:
        raise InputError(
            "--difficulty", f"unknown setting {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}"
        )
    # the config's converter: unknown knobs and wrong types are one-line errors naming the knob
    knobs = {**asdict(DIFFICULTIES[difficulty]), **{k: v for k, v in overrides.items() if v is not None}}
    spec = from_mapping(SyntheticSpec, knobs, "data.synthetic.options")
    if spec.min_objects < 0 or spec.max_objects < max(1, spec.min_objects):
        raise InputError(
            "synthetic", "objects per image: need 0 <= min_objects <= max_objects, max_objects >= 1"
        )
    if not 4 <= spec.min_size <= spec.max_size <= spec.image_size:
        raise InputError("synthetic", "object size: need 4 <= min_size <= max_size <= image_size")
    return spec


def _background(rng: np.random.Generator, s: int, noise: float) -> np.ndarray:
    base = rng.uniform(0.2, 0.8, size=3)
    gx, gy = rng.uniform(-0.25, 0.25, size=2)
    yy, xx = np.mgrid[0:s, 0:s] / s - 0.5
    img = base[None, None, :] + (gx * xx + gy * yy)[..., None]
    return img


def _draw_shape(
    draw: ImageDraw.ImageDraw, name: str, box: tuple[float, float, float, float], fill: int
) -> None:
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    if name == "circle":
        draw.ellipse(box, fill=fill)
    elif name == "square":
        draw.rectangle(box, fill=fill)
    elif name == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    elif name == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    elif name == "cross":
        t = r / 3
        draw.rectangle((cx - t, y1, cx + t, y2), fill=fill)
        draw.rectangle((x1, cy - t, x2, cy + t), fill=fill)
    elif name == "ring":
        draw.ellipse(box, fill=fill)
        draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=0)
    elif name == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, fill=fill)
    elif name == "bar":
        draw.rectangle((x1, cy - r / 3, x2, cy + r / 3), fill=fill)
    else:  # pragma: no cover - names come from SHAPE_NAMES
        raise ValueError(name)


@lru_cache(maxsize=1)
def _digit_bank() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(area, 1e-9)


def render_image(
    kind: str, spec: SyntheticSpec, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render image ``index``: ``(uint8[s, s, 3], boxes float32[N, 4], labels int64[N])``."""
    rng = np.random.default_rng(derive_seed("synthetic", kind, seed, index))
    s = spec.image_size
    num_classes = 10 if kind == "digits" else spec.num_classes
    img = _background(rng, s, spec.noise)
    weights = (np.arange(num_classes) + 1.0) ** -spec.longtail
    weights /= weights.sum()
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    hues = np.linspace(0, 1, num_classes, endpoint=False)
    for _ in range(n):
        for _attempt in range(20):
            size = float(rng.uniform(spec.min_size, spec.max_size))
            x1, y1 = rng.uniform(0, s - size, size=2)
            cand = np.array([x1, y1, x1 + size, y1 + size], np.float32)
            if not boxes or _iou(cand, np.stack(boxes)).max() <= spec.max_overlap:
                break
        else:
            continue
        label = int(rng.choice(num_classes, p=weights))
        mask_img = Image.new("L", (s, s), 0)
        if kind == "digits":
            bank, targets = _digit_bank()
            choices = np.nonzero(targets == label)[0]
            glyph = bank[int(rng.choice(choices))]
            side = max(4, int(round(size)))
            g = Image.fromarray((glyph * 255).astype(np.uint8)).resize(
                (side, side), Image.Resampling.BILINEAR
            )
            mask_img.paste(g, (int(x1), int(y1)))
        else:
            draw = ImageDraw.Draw(mask_img)
            _draw_shape(draw, SHAPE_NAMES[label], tuple(cand.tolist()), 255)  # type: ignore[arg-type]
        mask = np.asarray(mask_img, np.float32) / 255.0
        bbox = Image.fromarray((mask > 0.35).astype(np.uint8) * 255).getbbox()
        if bbox is None:
            continue
        if spec.class_colors and kind == "shapes":
            h = hues[label]
            color = 0.5 + 0.45 * np.array([math.cos(2 * math.pi * (h + o)) for o in (0, 1 / 3, 2 / 3)])
            color = (
                np.clip(color + rng.normal(0, spec.color_jitter, size=3), 0, 1)
                if spec.color_jitter
                else color
            )
        else:
            color = rng.uniform(0, 1, size=3)
            if np.abs(color - img.mean((0, 1))).max() < 0.3:  # keep some contrast with the background
                color = 1.0 - color
        img = img * (1 - mask[..., None]) + color[None, None, :] * mask[..., None]
        boxes.append(np.array(bbox, np.float32))
        labels.append(label)
    for _ in range(spec.clutter):
        stroke = Image.new("L", (s, s), 0)
        pts = rng.uniform(0, s, size=4).tolist()
        ImageDraw.Draw(stroke).line(pts, fill=255, width=int(rng.integers(1, 3)))
        m = np.asarray(stroke, np.float32)[..., None] / 255.0
        img = img * (1 - m) + rng.uniform(0, 1, size=3)[None, None, :] * m
    img = img + rng.normal(0, spec.noise, size=img.shape)
    out = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def scene_of(seed: int, index: int, frames: int) -> tuple[int, int]:
    """``(scene, frame)`` of image ``index`` when scenes last ``1 .. 2 * frames - 1`` frames (mean ``frames``).

    Scene lengths come from a generator seeded by ``seed`` alone, so image ``i`` is the same whatever the
    number of images generated."""
    rng = np.random.default_rng(derive_seed("synthetic-scenes", seed, frames))
    start, scene = 0, 0
    while True:
        lengths = rng.integers(1, 2 * frames, size=256)
        ends = start + np.cumsum(lengths)
        k = int(np.searchsorted(ends, index, side="right"))
        if k < len(lengths):
            first = start if k == 0 else int(ends[k - 1])
            return scene + k, index - first
        start, scene = int(ends[-1]), scene + len(lengths)


def scenes(seed: int, n: int, frames: int) -> np.ndarray:
    """The scene of each of the first ``n`` images (int64[n]); with ``frames <= 1`` every image is its own."""
    if frames <= 1:
        return np.arange(n, dtype=np.int64)
    return np.array([scene_of(seed, i, frames)[0] for i in range(n)], np.int64)


def render_frame(
    kind: str, spec: SyntheticSpec, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of a dataset whose images come in scenes (``spec.frames > 1``): its scene rendered by
    :func:`render_image`, shifted by up to ``spec.jitter`` pixels, with fresh noise; boxes move with it (a
    box left with less than half its area inside the image is dropped)."""
    if spec.frames <= 1:
        return render_image(kind, spec, seed, index)
    scene, frame = scene_of(seed, index, spec.frames)
    pixels, boxes, labels = render_image(kind, spec, seed, scene)
    if frame == 0:
        return pixels, boxes, labels
    rng = np.random.default_rng(derive_seed("synthetic-frame", kind, seed, index))
    dx, dy = (int(v) for v in rng.integers(-spec.jitter, spec.jitter + 1, size=2))
    s = spec.image_size
    padded = np.pad(pixels, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
    y0, x0 = abs(dy) - dy, abs(dx) - dx
    shifted = padded[y0 : y0 + s, x0 : x0 + s].astype(np.float64) / 255.0
    shifted = np.clip(shifted + rng.normal(0, spec.noise / 2, size=shifted.shape), 0, 1)
    moved = boxes + np.array([dx, dy, dx, dy], np.float32)
    clipped = np.clip(moved, 0, s)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    keep = area(clipped) >= 0.5 * np.maximum(area(moved), 1e-6)
    return (shifted * 255).astype(np.uint8), clipped[keep].astype(np.float32), labels[keep]


def class_names_for(kind: str, spec: SyntheticSpec) -> list[str]:
    if kind == "digits":
        return [str(d) for d in range(10)]
    if not 1 <= spec.num_classes <= len(SHAPE_NAMES):
        raise InputError(
            "--num-classes", f"shapes supports 1..{len(SHAPE_NAMES)} classes, got {spec.num_classes}"
        )
    return list(SHAPE_NAMES[: spec.num_classes])


def make_dataset(
    kind: str, n: int, seed: int, out: str | Path, spec: SyntheticSpec | None = None
) -> DetectionDataset:
    """Generate ``n`` images into ``out/images/`` and write ``out/annotations.json``; return the dataset.

    A folder that already holds the same generation (same kind, n, seed and knobs) is reused as it is.
    """
    if kind not in GENERATORS:
        raise InputError("data make", f"unknown generator {kind!r}; expected one of {', '.join(GENERATORS)}")
    if n <= 0:
        raise InputError("--n", f"need a positive number of images, got {n}")
    spec = spec or SyntheticSpec()
    names = class_names_for(kind, spec)
    out = Path(out)
    ann = out / "annotations.json"
    stamp = out / "generator.json"
    knobs = asdict(spec)
    if spec.frames <= 1:  # the stamp of data generated before scenes existed stays valid
        knobs = {k: v for k, v in knobs.items() if k not in ("frames", "jitter")}
    meta = {"kind": kind, "n": n, "seed": seed, "spec": knobs, "version": 1}
    if ann.is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == meta:
                return read_coco(ann, out / "images")
        except (json.JSONDecodeError, OSError):
            pass
    make_dir(out / "images")
    records = []
    for i in range(n):
        pixels, boxes, labels = render_frame(kind, spec, seed, i)
        name = f"{i:06d}.png"
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
        atomic_write_bytes(out / "images" / name, buf.getvalue())
        records.append(ImageRecord(i + 1, name, spec.image_size, spec.image_size, boxes, labels))
    ds = DetectionDataset(records, names, out / "images", ann)
    write_coco(ds, ann)
    atomic_write_bytes(stamp, (json.dumps(meta) + "\n").encode())
    return ds

"""The one in-memory representation every reader produces and every component consumes.

Conventions (the tensor contracts of the whole package):

* ``boxes``: ``float32[N, 4]`` as ``[x1, y1, x2, y2]`` in absolute pixels of the original image;
* ``labels``: ``int64[N]`` contiguous class indices ``0 .. num_classes - 1`` into ``class_names``;
  detectors shift them by one internally (torchvision keeps 0 for background);
* ``ignore``: ``bool[N]``, boxes that neither count as misses nor as matches in evaluation
  (VOC ``difficult``, COCO ``iscrowd``); they are not used for training either;
* ``annotated``: whether a person has labeled this image. An annotated image with no boxes is a
  labeled negative; an image that is not annotated belongs to the unlabeled pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from mgral.data.validate import IMAGE_ERRORS, unreadable_image
from mgral.errors import InputError

#: dataset indices: a list of ints or an integer array
Indices = Sequence[int] | np.ndarray


@dataclass
class ImageRecord:
    """One image and its annotations (see the module docstring for the array contracts)."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    annotated: bool = True
    key: str = ""  # the source's own id (VOC/YOLO file stem, COCO id as text)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if len(self.ignore) != len(self.labels):
            self.ignore = np.zeros(len(self.labels), bool)
        self.ignore = np.asarray(self.ignore, bool).reshape(-1)
        if not self.key:
            self.key = str(self.image_id)

    def without_labels(self) -> ImageRecord:
        """The same image with its annotations hidden, as the unlabeled pool sees it."""
        return replace(
            self,
            boxes=np.zeros((0, 4), np.float32),
            labels=np.zeros((0,), np.int64),
            ignore=np.zeros((0,), bool),
            annotated=False,
        )


class DetectionDataset:
    """A list of :class:`ImageRecord` with class names and the folder the ``file_name`` s are relative to.

    Images are loaded lazily by :meth:`load_image`. ``category_ids`` keeps the source's category id of
    each class (COCO's ids; ``1..K`` for VOC and YOLO) so results can be written back in its terms.
    """

    def __init__(
        self,
        images: Sequence[ImageRecord],
        class_names: Sequence[str],
        image_root: str | Path | None,
        source: str | Path = "",
        category_ids: Sequence[int] | None = None,
    ) -> None:
        self.images = list(images)
        self.class_names = list(class_names)
        self.image_root = Path(image_root) if image_root is not None else None
        self.source = str(source)
        self.category_ids = (
            list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        )
        if len(self.category_ids) != len(self.class_names):
            raise ValueError("category_ids and class_names differ in length")
        self._by_id = {rec.image_id: i for i, rec in enumerate(self.images)}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.images[i]

    def __repr__(self) -> str:
        n_ann = sum(r.annotated for r in self.images)
        return (
            f"DetectionDataset({len(self)} images, {n_ann} annotated, {self.num_boxes} boxes, "
            f"{self.num_classes} classes, source={self.source!r})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(r.labels) for r in self.images))

    def index_of(self, image_id: int) -> int:
        return self._by_id[image_id]

    def image_path(self, i: int) -> Path:
        rec = self.images[i]
        return (self.image_root / rec.file_name) if self.image_root is not None else Path(rec.file_name)

    def load_image(self, i: int) -> Image.Image:
        """The image as RGB. A missing or unreadable file, and one whose size is not its record's (a
        corrupted header, or annotations made for another image), raise :class:`InputError` naming it."""
        path = self.image_path(i)
        rec = self.images[i]
        try:
            with Image.open(path) as im:
                if im.size != (rec.width, rec.height):
                    raise InputError(
                        path,
                        f"the image is {im.size[0]}x{im.size[1]} but its annotations say {rec.width}x{rec.height}",
                    )
                return im.convert("RGB")
        except FileNotFoundError:
            raise InputError(path, "image file not found") from None
        except IMAGE_ERRORS as exc:
            raise unreadable_image(path, exc) from None

    def subset(self, indices: Iterable[int]) -> DetectionDataset:
        return DetectionDataset(
            [self.images[int(i)] for i in indices],
            self.class_names,
            self.image_root,
            self.source,
            self.category_ids,
        )

    def annotated_indices(self) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.images) if r.annotated], dtype=np.int64)

    def unannotated_indices(self) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.images) if not r.annotated], dtype=np.int64)


def thumbnails(dataset: DetectionDataset, indices: Indices, side: int = 8) -> np.ndarray:
    """Each image as a ``side`` x ``side`` grey thumbnail (box-filtered), centred and scaled to unit norm:
    ``float64[N, side * side]``. What near-duplicate detection compares: frames of one video stay close
    (a shift of a few pixels, new noise, another exposure), independent images do not. A flat image is the
    zero vector. Unreadable images raise :class:`InputError` naming them (:meth:`DetectionDataset.load_image`)."""
    return normalised(grey_thumbnails(dataset, indices, (side,))[0].reshape(len(indices), side * side))


def grey_thumbnails(dataset: DetectionDataset, indices: Indices, sides: Sequence[int]) -> list[np.ndarray]:
    """Each image decoded once, as a box-filtered grey thumbnail of every size in ``sides``, the grey levels
    as they are: one ``float64[N, side, side]`` per side."""
    out = [np.zeros((len(indices), side, side)) for side in sides]
    for row, i in enumerate(indices):
        grey = dataset.load_image(int(i)).convert("L")
        for arr, side in zip(out, sides):
            arr[row] = np.asarray(grey.resize((side, side), Image.Resampling.BOX), np.float64)
    return out


def normalised(rows: np.ndarray) -> np.ndarray:
    """Each row centred and scaled to unit norm; a flat row (norm under 1e-9 once centred) is zero."""
    out = np.zeros(np.shape(rows))
    for k, row in enumerate(np.asarray(rows, np.float64)):
        t = row - row.mean()
        norm = float(np.linalg.norm(t))
        out[k] = t / norm if norm > 1e-9 else 0.0
    return out


def merge_datasets(parts: Sequence[DetectionDataset], source: str) -> DetectionDataset:
    """Concatenate datasets that share class names and have distinct images; image ids are renumbered
    when they collide (VOC2007 and VOC2012 share ids like ``000005``) and ``file_name`` becomes absolute."""
    if not parts:
        raise InputError(source, "no dataset to merge")
    names = parts[0].class_names
    for p in parts[1:]:
        if p.class_names != names:
            raise InputError(
                p.source, f"class names {p.class_names} differ from {names} of {parts[0].source}"
            )
    images: list[ImageRecord] = []
    seen: set[int] = set()
    next_id = 1 + max((r.image_id for p in parts for r in p.images), default=0)
    for p in parts:
        for i, rec in enumerate(p.images):
            image_id = rec.image_id
            if image_id in seen:
                image_id, next_id = next_id, next_id + 1
            seen.add(image_id)
            images.append(replace(rec, image_id=image_id, file_name=str(p.image_path(i))))
    return DetectionDataset(images, names, None, source, parts[0].category_ids)

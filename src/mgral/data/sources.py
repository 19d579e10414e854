"""Resolve a run's data config into the pool dataset and the test dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from mgral.config import DataConfig
from mgral.data.coco import read_coco
from mgral.data.dataset import DetectionDataset, merge_datasets
from mgral.data.formats import read_dataset
from mgral.data.synthetic import make_dataset, spec_for
from mgral.data.voc import read_voc
from mgral.errors import InputError
from mgral.utils import derive_seed

log = logging.getLogger(__name__)


def load_run_data(cfg: DataConfig, cache_dir: str | Path) -> tuple[DetectionDataset, DetectionDataset]:
    """``(pool, test)`` for ``cfg``. Synthetic data is generated under ``cache_dir`` (reused if present).

    Annotation files may name images outside their dataset folder only with ``cfg.allow_outside_paths``;
    the merged VOC07+12 pool makes its file names absolute after reading, which needs no permission."""
    outside = cfg.allow_outside_paths
    if cfg.kind == "synthetic":
        s = cfg.synthetic
        spec = spec_for(s.difficulty, **s.options)
        root = Path(cache_dir)
        pool = make_dataset(s.generator, s.n_train, s.seed, root / "train", spec)
        test = make_dataset(s.generator, s.n_test, derive_seed(s.seed, "test"), root / "test", spec)
        return pool, test
    if cfg.kind == "voc0712":
        root = Path(cfg.root or "")
        for sub in ("VOC2007", "VOC2012"):
            if not (root / sub).is_dir():
                raise InputError(root, f"expected a VOCdevkit folder holding {sub}/")
        pool = merge_datasets(
            [read_voc(root / sub, "trainval", allow_outside=outside) for sub in ("VOC2007", "VOC2012")],
            str(root) + " (07+12 trainval)",
        )
        return pool, read_voc(root / "VOC2007", "test", allow_outside=outside)
    if cfg.kind == "coco2017":
        root = Path(cfg.root or "")
        ann = root / "annotations"
        pool = read_coco(ann / "instances_train2017.json", root / "train2017", allow_outside=outside)
        test = read_coco(ann / "instances_val2017.json", root / "val2017", allow_outside=outside)
        return pool, test
    assert cfg.train and cfg.test
    pool = read_dataset(cfg.train, cfg.train_format, split=cfg.train_split, allow_outside=outside)
    test = read_dataset(cfg.test, cfg.test_format, split=cfg.test_split, allow_outside=outside)
    if pool.class_names != test.class_names:
        raise InputError(
            cfg.test, f"class names {test.class_names} differ from the pool's {pool.class_names}"
        )
    return pool, test

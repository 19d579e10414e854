"""Practitioner mode: which images of a partly annotated dataset should be labeled next?"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mgral.config import RunConfig
from mgral.data.dataset import DetectionDataset
from mgral.data.formats import read_dataset
from mgral.data.pool import Pool
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.strategies.base import SelectionContext, build_strategy, pool_view, strategy_inputs
from mgral.utils import atomic_write_json, atomic_write_text, derive_seed, resolve_device, rng_for, timer

log = logging.getLogger(__name__)


def parse_budget(budget: Any, n_unlabeled: int) -> int:
    """A budget must be a positive whole number no larger than the unlabeled pool."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise InputError("--budget", f"expected a positive whole number, got {budget!r}") from None
    if not value.is_integer() or value <= 0:
        raise InputError("--budget", f"expected a positive whole number, got {budget!r}")
    if value > n_unlabeled:
        raise InputError("--budget", f"{int(value)} is more than the {n_unlabeled} unlabeled images")
    return int(value)


def query(
    data: str | Path,
    budget: Any,
    strategy: str,
    out: str | Path,
    cfg: RunConfig,
    *,
    fmt: str = "auto",
    split: str | None = None,
    seed: int = 0,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Train on the annotated images of ``data``, pick ``budget`` unannotated ones with ``strategy``.

    Writes ``out`` (JSON with ranks and scores) and, beside it, the same name with ``.txt`` (one file
    name per line). Returns the JSON document.
    """
    out = Path(out)
    strat = build_strategy(strategy, cfg.strategy_params.get(strategy))
    if "oracle" in strat.needs:
        raise InputError(
            f"strategy_params.{strategy}",
            "the oracle reward needs ground truth of unlabeled images; use it in simulation runs only",
        )
    ds = read_dataset(data, fmt, split=split, partial=True)
    labeled, unlabeled = ds.annotated_indices(), ds.unannotated_indices()
    if len(labeled) == 0:
        raise InputError(data, "no annotated image to train on")
    if len(unlabeled) == 0:
        raise InputError(data, "every image is already annotated: nothing to select")
    b = parse_budget(budget, len(unlabeled))
    if "oracle" in strat.needs:
        raise InputError(
            f"strategy_params.{strategy}",
            "the oracle reward needs ground truth of unlabeled images; use it in simulation runs only",
        )
    device = resolve_device(cfg.device)
    pool = Pool.with_initial(len(ds), labeled)
    detector = Detector(cfg.detector, ds.num_classes, seed=derive_seed(seed, "init"), device=device)
    log.info(
        "training %s on %d annotated images (%d unannotated)", cfg.detector.name, len(labeled), len(unlabeled)
    )
    with timer() as t_train:
        detector.fit(ds, labeled, cfg.train, seed=derive_seed(seed, "train", 0), progress=cfg.progress)
    view: DetectionDataset = pool_view(ds, pool)
    kw: dict[str, Any] = {
        "batch_size": cfg.train.eval_batch_size,
        "num_workers": cfg.train.num_workers,
        "progress": cfg.progress,
    }
    with timer() as t_infer:
        preds, emb_u, emb_l = strategy_inputs(detector, view, unlabeled, labeled, strat.needs, **kw)
    ctx = SelectionContext(
        dataset=view, pool=pool, cycle=0, rng=rng_for(seed, strategy, "select", 0), unlabeled=unlabeled,
        labeled=labeled, predictions=preds, embeddings_unlabeled=emb_u, embeddings_labeled=emb_l, detector=detector,
        config=cfg, workdir=Path(workdir) if workdir else out.parent / f".{out.stem}-work", progress=cfg.progress,
        extras={"seed": seed},  # no run store: a search is not resumable in query mode
    )  # fmt: skip
    with timer() as t_select:
        sel = strat.select(ctx, b)
    picks = [
        {
            "rank": r + 1,
            "image_id": int(ds[int(i)].image_id),
            "file_name": ds[int(i)].file_name,
            "score": float(s),
        }
        for r, (i, s) in enumerate(zip(np.asarray(sel.indices), np.asarray(sel.scores)))
    ]
    doc = {
        "dataset": str(data), "strategy": strategy, "budget": b, "seed": seed, "n_labeled": int(len(labeled)),
        "n_unlabeled": int(len(unlabeled)), "detector": cfg.detector.name,
        "seconds": {"train": t_train["s"], "infer": t_infer["s"], "select": t_select["s"]}, "selected": picks,
    }  # fmt: skip
    atomic_write_text(out.with_suffix(".txt"), "".join(f"{p['file_name']}\n" for p in picks))
    atomic_write_json(out, doc)
    return doc

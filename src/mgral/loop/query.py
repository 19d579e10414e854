"""Practitioner mode: which images of a partly annotated dataset should be labeled next?"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mgral.config import RunConfig
from mgral.data.formats import read_dataset
from mgral.data.pool import Pool
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.loop.context import build_context
from mgral.strategies.base import StrategyState, build_strategy, pool_view, validate_strategy_params
from mgral.training.engine import Objective, fit
from mgral.training.supervised import Supervised
from mgral.utils import atomic_write_json, atomic_write_text, derive_seed, resolve_device, timer

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
    allow_outside: bool = False,
) -> dict[str, Any]:
    """Train on the annotated images of ``data``, pick ``budget`` unannotated ones with ``strategy``.

    Writes ``out`` (JSON with ranks and scores) and, beside it, the same name with ``.txt`` (one file
    name per line). Returns the JSON document. ``allow_outside`` lets the annotation file name images
    outside the dataset folder.
    """
    out = Path(out)
    validate_strategy_params(cfg)
    strat = build_strategy(strategy, cfg.strategy_params.get(strategy))
    if "oracle" in strat.needs:
        raise InputError(
            f"strategy_params.{strategy}",
            "the oracle reward needs ground truth of unlabeled images; use it in simulation runs only",
        )
    ds = read_dataset(data, fmt, split=split, partial=True, allow_outside=allow_outside)
    labeled, unlabeled = ds.annotated_indices(), ds.unannotated_indices()
    if len(labeled) == 0:
        raise InputError(data, "no annotated image to train on")
    if len(unlabeled) == 0:
        raise InputError(data, "every image is already annotated: nothing to select")
    b = parse_budget(budget, len(unlabeled))
    device = resolve_device(cfg.device)
    pool = Pool.with_initial(len(ds), labeled)
    view = pool_view(ds, pool)
    detector = Detector(cfg.detector, ds.num_classes, seed=derive_seed(seed, "init"), device=device)
    train_seed = derive_seed(seed, "train", 0)
    own = strat.training_objective(view, labeled, unlabeled, cfg.train, seed=train_seed)
    objective: Objective = (
        own if own is not None else Supervised(view, labeled, seed=train_seed, augment=cfg.train.augment)
    )
    log.info(
        "training %s on %d annotated images (%d unannotated)", cfg.detector.name, len(labeled), len(unlabeled)
    )
    with timer() as t_train:
        fit(detector, objective, cfg.train, progress=cfg.progress, desc="train")
    ctx, infer_s = build_context(
        strat, strategy, cfg=cfg, detector=detector, view=view, unlabeled=unlabeled, labeled=labeled, seed=seed,
        cycle=0, state=StrategyState(), progress=cfg.progress, objective=own,
        workdir=Path(workdir) if workdir else out.parent / f".{out.stem}-work",
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
        "seconds": {"train": t_train["s"], "infer": infer_s, "select": t_select["s"]}, "selected": picks,
    }  # fmt: skip
    atomic_write_text(out.with_suffix(".txt"), "".join(f"{p['file_name']}\n" for p in picks))
    atomic_write_json(out, doc)
    return doc

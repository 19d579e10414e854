"""Practitioner mode: which images of a partly annotated dataset should be labeled next?"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mgral.config import RunConfig
from mgral.data.formats import read_dataset
from mgral.data.pool import Pool
from mgral.data.structures import Prediction
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
    box_threshold: float = 0.3,
    allow_outside: bool = False,
) -> dict[str, Any]:
    """Train on the annotated images of ``data``, pick ``budget`` unannotated ones with ``strategy``.

    Writes ``out`` (JSON with ranks and scores) and, beside it, the same name with ``.txt`` (one file
    name per line). Returns the JSON document. Each pick also carries its image's ``width`` and
    ``height`` and the trained model's ``boxes`` scoring at least ``box_threshold`` (best first), as
    ``{"bbox": [x1, y1, x2, y2] original pixels, "label": class name, "score": s}``: the pre-annotations
    an annotation tool shows for correction. ``allow_outside`` lets the annotation file name images
    outside the dataset folder.
    """
    out = Path(out)
    if not 0.0 <= float(box_threshold) <= 1.0:
        raise InputError("--box-threshold", f"expected a score between 0 and 1, got {box_threshold!r}")
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
    chosen = np.asarray(sel.indices, np.int64)
    with timer() as t_boxes:
        preds = _picked_predictions(ctx, detector, view, unlabeled, chosen, cfg)
    picks = [
        {
            "rank": r + 1,
            "image_id": int(ds[int(i)].image_id),
            "file_name": ds[int(i)].file_name,
            "score": float(s),
            "width": int(ds[int(i)].width),
            "height": int(ds[int(i)].height),
            "boxes": _boxes(pred, ds.class_names, float(box_threshold)),
        }
        for r, (i, s, pred) in enumerate(zip(chosen, np.asarray(sel.scores), preds))
    ]
    doc = {
        "dataset": str(data), "strategy": strategy, "budget": b, "seed": seed, "n_labeled": int(len(labeled)),
        "n_unlabeled": int(len(unlabeled)), "detector": cfg.detector.name, "class_names": list(ds.class_names),
        "box_threshold": float(box_threshold),
        "seconds": {"train": t_train["s"], "infer": infer_s, "select": t_select["s"], "boxes": t_boxes["s"]},
        "selected": picks,
    }  # fmt: skip
    atomic_write_text(out.with_suffix(".txt"), "".join(f"{p['file_name']}\n" for p in picks))
    atomic_write_json(out, doc)
    return doc


def _picked_predictions(
    ctx: Any, detector: Detector, view: Any, unlabeled: np.ndarray, chosen: np.ndarray, cfg: RunConfig
) -> list[Prediction]:
    """The detector's predictions on the picked images: taken from the selection context when the
    strategy had the pool predicted anyway (aligned with ``unlabeled``), else computed for the picks only."""
    if "predictions" in ctx.needs:
        pos = {int(i): k for k, i in enumerate(unlabeled)}
        return [ctx.predictions[pos[int(i)]] for i in chosen]
    return detector.predict(
        view, chosen, batch_size=cfg.train.eval_batch_size, num_workers=cfg.train.num_workers,
        progress=cfg.progress, desc="boxes of picks",
    )  # fmt: skip


def _boxes(pred: Prediction, class_names: list[str], threshold: float) -> list[dict[str, Any]]:
    """Detections scoring at least ``threshold``, best first, as JSON (pixels rounded to 0.01)."""
    keep = np.nonzero(np.asarray(pred.scores) >= threshold)[0]
    keep = keep[np.argsort(-np.asarray(pred.scores)[keep], kind="stable")]
    return [
        {
            "bbox": [round(float(v), 2) for v in np.asarray(pred.boxes)[k]],
            "label": class_names[int(pred.labels[k])],
            "score": round(float(pred.scores[k]), 4),
        }
        for k in keep
    ]

"""Building a strategy's selection context: one inference pass for what it declares, nothing more.

Shared by the experiment loop and practitioner mode, so both give a strategy exactly the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mgral.config import RunConfig
from mgral.data.dataset import DetectionDataset
from mgral.detectors.detector import Detector
from mgral.strategies.base import SelectionContext, Strategy, StrategyState, TrainingSpec
from mgral.training.engine import Objective
from mgral.utils import rng_for, timer


def build_context(
    strategy: Strategy, name: str, *, cfg: RunConfig, detector: Detector, view: DetectionDataset,
    unlabeled: np.ndarray, labeled: np.ndarray, seed: int, cycle: int, state: StrategyState,
    workdir: Path | None, progress: bool, objective: Objective | None = None,
    oracle: DetectionDataset | None = None,
) -> tuple[SelectionContext, float]:  # fmt: skip
    """The context of ``strategy`` for one selection, and the seconds its inference pass took.

    ``view`` is the pool with unlabeled annotations hidden; ``oracle`` (the full pool) is passed on only
    when the strategy declares ``oracle``, and ``objective`` (its trained training objective) only when it
    declares ``objective``."""
    needs = strategy.needs
    kw: dict[str, Any] = {"batch_size": cfg.train.eval_batch_size, "num_workers": cfg.train.num_workers,
                          "progress": progress}  # fmt: skip
    inputs: dict[str, Any] = {}
    with timer() as t:
        want_preds = bool(needs & {"predictions", "instance_features"})
        if want_preds or "embeddings" in needs:
            inf = detector.infer(view, unlabeled, predictions=want_preds, embeddings="embeddings" in needs,
                                 instance_features="instance_features" in needs, desc="infer pool", **kw)  # fmt: skip
            if want_preds:
                inputs["predictions"] = inf.predictions
            if "embeddings" in needs:
                inputs["embeddings_unlabeled"] = inf.embeddings
                inputs["embeddings_labeled"] = detector.embed(view, labeled, desc="embed labeled", **kw)
    if "detector" in needs:
        inputs["detector"] = detector
    if "training" in needs:
        inputs["training"] = TrainingSpec.from_config(cfg, view.num_classes, detector.device)
    if "objective" in needs:
        if objective is None:
            raise RuntimeError(
                f"strategy {name!r} declares 'objective' but the cycle was trained without one"
            )
        inputs["objective"] = objective
    if "oracle" in needs:
        if oracle is None:
            raise RuntimeError(f"strategy {name!r} declares 'oracle', which only simulation runs provide")
        inputs["oracle"] = oracle
    ctx = SelectionContext(
        strategy=name, needs=needs, dataset=view, unlabeled=unlabeled, labeled=labeled, seed=seed, cycle=cycle,
        rng=rng_for(seed, name, "select", cycle), state=state, device=detector.device, softmax=detector.softmax,
        workdir=workdir, progress=progress, inputs=inputs,
    )  # fmt: skip
    return ctx, t["s"]


__all__ = ["build_context"]

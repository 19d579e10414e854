"""One protocol for every query strategy, and the registry.

A strategy declares what it ``needs`` (detector predictions on the unlabeled images, embeddings of the
labeled and unlabeled images, the detector itself); the loop computes exactly that, once, and passes it
in a :class:`SelectionContext`. Strategies never see ground truth of unlabeled images: the context's
dataset hides it (see :func:`pool_view`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mgral.data.dataset import DetectionDataset
from mgral.data.pool import Pool
from mgral.errors import InputError

if TYPE_CHECKING:
    from mgral.config import RunConfig
    from mgral.detectors.detector import Detector, Prediction

NEEDS = frozenset({"predictions", "embeddings", "detector", "oracle"})


@dataclass
class SelectionContext:
    """What a strategy may use to pick images. Arrays are aligned with ``unlabeled`` / ``labeled``."""

    dataset: DetectionDataset  # unlabeled images carry no annotations here
    pool: Pool
    cycle: int
    rng: np.random.Generator
    unlabeled: np.ndarray  # dataset indices, int64[U]
    labeled: np.ndarray  # dataset indices, int64[L]
    predictions: list[Prediction] | None = None  # detector outputs on the unlabeled images
    embeddings_unlabeled: np.ndarray | None = None  # float32[U, 256]
    embeddings_labeled: np.ndarray | None = None  # float32[L, 256]
    detector: Detector | None = None
    config: RunConfig | None = None
    workdir: Path | None = None  # where a strategy may keep files of its own for this (seed, cycle)
    progress: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Selection:
    """Picked dataset indices in rank order, a score per pick (higher = more wanted), and free-form info."""

    indices: np.ndarray
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """Base class. Subclasses take keyword-only options in ``__init__`` and implement :meth:`select`."""

    name: ClassVar[str] = ""
    needs: frozenset[str] = frozenset()  # instances may narrow or widen it (see mgral)

    @abstractmethod
    def select(self, ctx: SelectionContext, budget: int) -> Selection: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in params if k != "self" and hasattr(self, k))
        return f"{type(self).__name__}({shown})"


class ScoringStrategy(Strategy):
    """A strategy that scores every unlabeled image and takes the ``budget`` best (ties broken at random)."""

    @abstractmethod
    def score(self, ctx: SelectionContext) -> np.ndarray:
        """One float per unlabeled image (aligned with ``ctx.unlabeled``); higher is picked first."""

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        scores = np.asarray(self.score(ctx), np.float64)
        if scores.shape != (len(ctx.unlabeled),):
            raise RuntimeError(f"{self.name}: expected {len(ctx.unlabeled)} scores, got shape {scores.shape}")
        tie = ctx.rng.permutation(len(scores))
        order = np.lexsort((tie, -scores))[:budget]
        return Selection(ctx.unlabeled[order], scores[order])


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding ``cls`` under ``cls.name``; a name may be registered once."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy {cls.name!r} is already registered")
    if not cls.needs <= NEEDS:
        raise ValueError(f"{cls.name}: unknown needs {set(cls.needs - NEEDS)}")
    STRATEGIES[cls.name] = cls
    return cls


def available_strategies() -> list[str]:
    import mgral.strategies  # noqa: F401 - registers the built-in strategies

    return list(STRATEGIES)


def build_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy with keyword options, with a clear error for unknown ones."""
    available_strategies()
    if name not in STRATEGIES:
        raise InputError("strategy", f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    params = dict(params or {})
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = set(params) - set(accepted)
    if bad:
        raise InputError(
            f"strategy_params.{name}",
            f"unknown option(s) {', '.join(sorted(bad))}; accepted: {', '.join(accepted) or 'none'}",
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise InputError(f"strategy_params.{name}", str(exc)) from None


def expand_strategy_names(names: tuple[str, ...] | list[str]) -> list[str]:
    """``all`` stands for every registered strategy."""
    out: list[str] = []
    for n in names:
        for m in available_strategies() if n == "all" else [n]:
            if m not in out:
                out.append(m)
    for n in out:
        if n not in STRATEGIES:
            raise InputError("loop.strategies", f"unknown strategy {n!r}; known: {', '.join(STRATEGIES)}")
    return out


def strategy_inputs(
    detector: Detector, view: DetectionDataset, unlabeled: np.ndarray, labeled: np.ndarray, needs: frozenset[str],
    **infer_kw: Any,
) -> tuple[list[Prediction] | None, np.ndarray | None, np.ndarray | None]:  # fmt: skip
    """What ``needs`` asks for, in one inference pass over the pool: (predictions on the unlabeled images,
    their embeddings, the labeled images' embeddings); ``None`` for what is not needed."""
    preds = emb_u = emb_l = None
    if needs & {"predictions", "embeddings"}:
        inf = detector.infer(view, unlabeled, predictions="predictions" in needs, embeddings="embeddings" in needs,
                             desc="infer pool", **infer_kw)  # fmt: skip
        preds, emb_u = inf.predictions, inf.embeddings
    if "embeddings" in needs:
        emb_l = detector.embed(view, labeled, desc="embed labeled", **infer_kw)
    return preds, emb_u, emb_l


def pool_view(dataset: DetectionDataset, pool: Pool) -> DetectionDataset:
    """``dataset`` with the annotations of every unlabeled image removed (leak-free by construction)."""
    unlabeled = set(pool.unlabeled.tolist())
    images = [rec.without_labels() if i in unlabeled else rec for i, rec in enumerate(dataset.images)]
    return replace_images(dataset, images)


def replace_images(dataset: DetectionDataset, images: list[Any]) -> DetectionDataset:
    return DetectionDataset(
        images, dataset.class_names, dataset.image_root, dataset.source, dataset.category_ids
    )


__all__ = [
    "STRATEGIES", "ScoringStrategy", "Selection", "SelectionContext", "Strategy", "available_strategies",
    "build_strategy", "expand_strategy_names", "pool_view", "register_strategy",
]  # fmt: skip

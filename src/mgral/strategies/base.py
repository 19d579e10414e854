"""One protocol for every query strategy, its typed selection context, its state, and the registry.

A strategy declares what it ``needs``; the loop computes exactly that (in one inference pass) and hands it
over in a :class:`SelectionContext`, together with a typed seed and cycle, a seeded generator and one
handle on the strategy's persistent state (:class:`StrategyState`). Reading an input that was not declared
raises :class:`UndeclaredInput`, so the contract test catches a strategy that relies on something the loop
would not compute for it. Strategies never see the ground truth of unlabeled images: the context's
dataset hides it (:func:`pool_view`), and only a strategy that declares ``oracle`` (an explicitly named
ablation, simulation only) gets the full pool.

Options are a frozen dataclass per strategy (``Options``), built from ``strategy_params.<name>`` with the
config's own checks, so an unknown or ill-typed option is a one-line error when the run starts.
"""

from __future__ import annotations

import dataclasses
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

from mgral.config import DetectorConfig, RunConfig, SemiConfig, TrainConfig, from_mapping
from mgral.data.dataset import DetectionDataset
from mgral.data.pool import Pool
from mgral.data.structures import Prediction
from mgral.errors import InputError
from mgral.utils import safe_torch_load

if TYPE_CHECKING:
    from mgral.detectors.detector import Detector
    from mgral.training.engine import Objective

#: what a strategy may declare in ``needs``
NEEDS = frozenset({
    "predictions",  # the cycle's detector's predictions on the unlabeled images (class-probability vectors)
    "instance_features",  # ... with a 256-d feature per detection (implies predictions)
    "embeddings",  # 256-d image embeddings of the unlabeled and the labeled images
    "detector",  # the cycle's detector itself
    "training",  # the run's detector, train and semi-supervised settings (to train models of its own)
    "objective",  # the strategy's own training objective, trained with the cycle's detector (its modules)
    "oracle",  # ground truth of the unlabeled pool: an explicitly named ablation, simulation only
})  # fmt: skip


class UndeclaredInput(RuntimeError):
    """A strategy read a context input it did not declare in ``needs``."""


class KeyValue(Protocol):
    """Where strategy state is kept: the loop's run store, or memory."""

    def put(self, scope: str, key: str, value: bytes) -> None: ...

    def get(self, scope: str, key: str) -> Any: ...

    def delete(self, scope: str, key: str) -> None: ...


class MemoryStore:
    """A :class:`KeyValue` in memory (tests, one-off selections)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}

    def put(self, scope: str, key: str, value: bytes) -> None:
        self.data[(scope, key)] = bytes(value)

    def get(self, scope: str, key: str) -> bytes | None:
        return self.data.get((scope, key))

    def delete(self, scope: str, key: str) -> None:
        self.data.pop((scope, key), None)


class StrategyState:
    """The one handle on a strategy's persistent state (one owner, one format).

    Values are tensors, numbers, strings, lists and dicts (a policy's ``state_dict``, a table's records);
    they are serialised with ``torch.save`` and loaded with ``weights_only=True``, so a run directory from
    someone else cannot execute code when resumed. The loop keeps one scope per (strategy, seed) in its run
    store, so state written in one cycle (a policy carried over) is there in the next and after a resume.
    """

    def __init__(self, backend: KeyValue | None = None, scope: str = "strategy") -> None:
        self.backend: KeyValue = backend if backend is not None else MemoryStore()
        self.scope = scope

    def get(self, key: str, default: Any = None) -> Any:
        blob = self.backend.get(self.scope, key)
        return default if blob is None else safe_torch_load(bytes(blob))

    def put(self, key: str, value: Any) -> None:
        buf = io.BytesIO()
        torch.save(value, buf)
        self.backend.put(self.scope, key, buf.getvalue())

    def delete(self, key: str) -> None:
        self.backend.delete(self.scope, key)


@dataclass(frozen=True)
class TrainingSpec:
    """What a strategy that trains models of its own (MGRAL's proxy) may use."""

    detector: DetectorConfig
    num_classes: int
    train: TrainConfig
    semi: SemiConfig
    metric: str  # the loop's metric: voc07 | voc | coco
    device: torch.device

    @classmethod
    def from_config(cls, cfg: RunConfig, num_classes: int, device: torch.device) -> TrainingSpec:
        return cls(cfg.detector, num_classes, cfg.train, cfg.semi, cfg.loop.metric, device)


_GUARDED = {
    "predictions": "predictions",
    "embeddings_unlabeled": "embeddings",
    "embeddings_labeled": "embeddings",
    "detector": "detector",
    "training": "training",
    "objective": "objective",
    "oracle": "oracle",
}


@dataclass
class SelectionContext:
    """What a strategy may use to pick images. Arrays are aligned with ``unlabeled`` / ``labeled``.

    Always there: the pool view (unlabeled images carry no annotations), the index arrays, ``seed``,
    ``cycle``, a generator seeded by ``(seed, strategy, cycle)``, the ``state`` handle, the compute
    ``device``, ``softmax`` (the layout of the class-probability vectors: background in column 0 when true,
    independent sigmoids otherwise), a scratch ``workdir`` and ``progress``. The other inputs exist only
    when declared in ``needs``; reading one that was not raises :class:`UndeclaredInput`.
    """

    strategy: str
    needs: frozenset[str]
    dataset: DetectionDataset
    unlabeled: np.ndarray  # dataset indices, int64[U]
    labeled: np.ndarray  # dataset indices, int64[L]
    seed: int
    cycle: int
    rng: np.random.Generator
    state: StrategyState = field(default_factory=StrategyState)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    softmax: bool = True
    workdir: Path | None = None  # scratch files of this (strategy, seed, cycle)
    progress: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)  # the declared inputs, by attribute name

    def _input(self, attr: str) -> Any:
        need = _GUARDED[attr]
        if need not in self.needs and not (need == "predictions" and "instance_features" in self.needs):
            raise UndeclaredInput(
                f"strategy {self.strategy!r} reads ctx.{attr}, which needs {need!r}; declare it in `needs`"
            )
        if attr not in self.inputs:
            raise UndeclaredInput(f"strategy {self.strategy!r}: ctx.{attr} was declared but not provided")
        return self.inputs[attr]

    @property
    def predictions(self) -> list[Prediction]:
        """Detections on each unlabeled image (with ``features`` when ``instance_features`` is declared)."""
        return self._input("predictions")

    @property
    def embeddings_unlabeled(self) -> np.ndarray:
        """float32[U, 256]."""
        return self._input("embeddings_unlabeled")

    @property
    def embeddings_labeled(self) -> np.ndarray:
        """float32[L, 256]."""
        return self._input("embeddings_labeled")

    @property
    def detector(self) -> Detector:
        return self._input("detector")

    @property
    def training(self) -> TrainingSpec:
        return self._input("training")

    @property
    def objective(self) -> Objective:
        """The strategy's own training objective, as trained with this cycle's detector."""
        return self._input("objective")

    @property
    def oracle(self) -> DetectionDataset:
        """The pool with its ground truth (simulation only; never offered by ``mgral query``)."""
        return self._input("oracle")


@dataclass
class Selection:
    """Picked dataset indices in rank order, a score per pick (higher = more wanted), and free-form info."""

    indices: np.ndarray
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoOptions:
    """A strategy without options."""


class Strategy(ABC):
    """Base class. Subclasses set ``name``, ``needs``, an ``Options`` dataclass, and implement :meth:`select`.

    Strategies hold no state between calls other than their options: what must persist (a policy carried
    across cycles, a search to resume) goes through ``ctx.state``.
    """

    name: ClassVar[str] = ""
    needs: frozenset[str] = frozenset()  # instances may widen it from their options (see mgral's oracle)
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def training_objective(self, dataset: DetectionDataset, labeled: np.ndarray, unlabeled: np.ndarray,
                           train: TrainConfig, *, seed: int) -> Objective | None:  # fmt: skip
        """The objective that trains the cycle's detector when this strategy changes training (learning loss,
        MI-AOD); ``None`` (the default) keeps supervised training, shared by every such strategy."""
        return None

    @abstractmethod
    def select(self, ctx: SelectionContext, budget: int) -> Selection: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class ScoringStrategy(Strategy):
    """A strategy that scores every unlabeled image and takes the ``budget`` best (ties broken at random)."""

    @abstractmethod
    def score(self, ctx: SelectionContext) -> np.ndarray:
        """One float per unlabeled image (aligned with ``ctx.unlabeled``); higher is picked first."""

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        scores = np.asarray(self.score(ctx), np.float64)
        if scores.shape != (len(ctx.unlabeled),):
            raise RuntimeError(f"{self.name}: expected {len(ctx.unlabeled)} scores, got shape {scores.shape}")
        return top_k(ctx, scores, budget)


def top_k(ctx: SelectionContext, scores: np.ndarray, budget: int) -> Selection:
    """The ``budget`` highest-scoring unlabeled images, ties broken by the context's generator."""
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
    if not dataclasses.is_dataclass(cls.Options):
        raise ValueError(f"{cls.name}: Options must be a dataclass")
    STRATEGIES[cls.name] = cls
    return cls


#: the order strategies are listed in (the paper's, then the newer peer, then MGRAL); others follow by name
LISTING_ORDER = ("random", "entropy", "coreset", "cdal", "learning_loss", "mial", "ebal", "ppal", "mgral")


def available_strategies() -> list[str]:
    import mgral.strategies  # noqa: F401 - registers the built-in strategies

    rank = {n: k for k, n in enumerate(LISTING_ORDER)}
    return sorted(STRATEGIES, key=lambda n: (rank.get(n, len(rank)), n))


def _known(name: str) -> type[Strategy]:
    available_strategies()
    if name not in STRATEGIES:
        raise InputError("strategy", f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def strategy_options(name: str, params: dict[str, Any] | None = None) -> Any:
    """The typed options of strategy ``name`` from ``strategy_params.<name>`` (one-line errors)."""
    return from_mapping(_known(name).Options, params, f"strategy_params.{name}")


def resolved_strategy_params(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """``cfg.strategy_params`` with every option of every strategy of the run (and of any other entry)
    written out, defaults included: what a run directory records, so that a run resumed under a later
    version whose defaults changed keeps the options it started with. A strategy without options has no
    entry. Raises :class:`InputError` as :func:`validate_strategy_params`."""
    from mgral.config import to_dict

    validate_strategy_params(cfg)
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys([*expand_strategy_names(cfg.loop.strategies), *cfg.strategy_params]):
        params = to_dict(strategy_options(name, cfg.strategy_params.get(name)))
        if params:
            out[name] = params
    return out


def build_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy from its raw options."""
    return _known(name)(strategy_options(name, params))


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


def validate_strategy_params(cfg: RunConfig) -> None:
    """Check every ``strategy_params`` entry names a known strategy and has valid options (at start)."""
    expand_strategy_names(cfg.loop.strategies)
    for name, params in cfg.strategy_params.items():
        if name not in STRATEGIES:
            raise InputError(
                f"strategy_params.{name}", f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}"
            )
        strategy_options(name, params)


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
    "NEEDS", "STRATEGIES", "KeyValue", "MemoryStore", "NoOptions", "ScoringStrategy", "Selection",
    "SelectionContext", "Strategy", "StrategyState", "TrainingSpec", "UndeclaredInput", "available_strategies",
    "build_strategy", "expand_strategy_names", "pool_view", "register_strategy", "resolved_strategy_params",
    "strategy_options", "top_k", "validate_strategy_params",
]  # fmt: skip

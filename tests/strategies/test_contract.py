"""Every registered strategy obeys the protocol: budget, pool membership, no duplicates, determinism, no
input it did not declare, state that round-trips through its one handle, and no access to the ground
truth of unlabeled images."""

from __future__ import annotations

import numpy as np
import pytest

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.loop.context import build_context
from mgral.strategies.base import (
    STRATEGIES,
    MemoryStore,
    Selection,
    SelectionContext,
    Strategy,
    StrategyState,
    UndeclaredInput,
    available_strategies,
    build_strategy,
    pool_view,
    strategy_options,
)
from mgral.training.engine import fit
from mgral.training.supervised import train_supervised
from tests.conftest import TINY_DET, TINY_TRAIN

#: options that keep CPU-heavy strategies fast; the contract is the same
FAST: dict[str, dict] = {
    "mgral": {"iterations": 4, "table_size": 3, "passes": 1.0, "base_iterations": 4, "presize": 1},
}


@pytest.fixture(scope="module")
def cfg():
    return load_config(preset="smoke", overrides=["device=cpu", "train.iterations=6"])


@pytest.fixture(scope="module")
def trained(shapes):
    det = Detector(TINY_DET, shapes.num_classes, seed=0)
    train_supervised(det, shapes, np.arange(12), TINY_TRAIN, seed=0, progress=False)
    return det


def _select(name, shapes, cfg, det, budget, *, labeled, cycle, state, tmp_path, seed=0, strategy=None):
    """One selection exactly as the loop makes it: the strategy's own objective when it has one, and a
    context holding only what it declares."""
    strategy = strategy or build_strategy(name, FAST.get(name))
    pool = Pool.with_initial(len(shapes), labeled)
    view = pool_view(shapes, pool)
    own = strategy.training_objective(view, pool.labeled, pool.unlabeled, cfg.train, seed=seed)
    detector = det
    if own is not None:  # the strategy trains the cycle's detector itself
        detector = Detector(TINY_DET, shapes.num_classes, seed=0)
        fit(detector, own, cfg.train, progress=False)
    ctx, _ = build_context(
        strategy, name, cfg=cfg, detector=detector, view=view, unlabeled=pool.unlabeled, labeled=pool.labeled,
        seed=seed, cycle=cycle, state=state, workdir=tmp_path / f"{name}-{cycle}", progress=False, objective=own,
        oracle=shapes if "oracle" in strategy.needs else None,
    )  # fmt: skip
    return ctx, strategy.select(ctx, budget)


@pytest.mark.parametrize("name", available_strategies())
@pytest.mark.parametrize("budget", [1, 7])
def test_strategy_contract(shapes, cfg, trained, name, budget, tmp_path):
    state = StrategyState(MemoryStore(), "s")
    ctx, sel = _select(name, shapes, cfg, trained, budget, labeled=np.arange(12), cycle=0, state=state,
                       tmp_path=tmp_path)  # fmt: skip
    assert isinstance(sel, Selection)
    assert len(sel.indices) == budget == len(sel.scores)
    assert len(set(sel.indices.tolist())) == budget
    assert np.isin(sel.indices, ctx.unlabeled).all()
    # the context never carries annotations of unlabeled images
    assert all(
        not ctx.dataset[int(i)].annotated and len(ctx.dataset[int(i)].boxes) == 0 for i in ctx.unlabeled
    )
    # same seed, same picks
    _, again = _select(name, shapes, cfg, trained, budget, labeled=np.arange(12), cycle=0,
                       state=StrategyState(MemoryStore(), "s"), tmp_path=tmp_path / "again")  # fmt: skip
    np.testing.assert_array_equal(sel.indices, again.indices)


@pytest.mark.parametrize("name", available_strategies())
def test_strategy_state_round_trips_across_cycles(shapes, cfg, trained, name, tmp_path):
    """Cycle 1 after cycle 0 gives the same picks whether the strategy object lives on or a fresh one is
    built from the saved state (what a resumed run does): state has one owner, ``ctx.state``."""
    store = MemoryStore()
    living = build_strategy(name, FAST.get(name))
    _, first = _select(name, shapes, cfg, trained, 5, labeled=np.arange(12), cycle=0,
                       state=StrategyState(store, "s"), tmp_path=tmp_path, strategy=living)  # fmt: skip
    labeled = np.sort(np.concatenate([np.arange(12), first.indices]))
    saved = dict(store.data)
    _, second = _select(name, shapes, cfg, trained, 5, labeled=labeled, cycle=1, state=StrategyState(store, "s"),
                        tmp_path=tmp_path / "a", strategy=living)  # fmt: skip
    resumed_store = MemoryStore()
    resumed_store.data.update(saved)
    _, again = _select(name, shapes, cfg, trained, 5, labeled=labeled, cycle=1,
                       state=StrategyState(resumed_store, "s"), tmp_path=tmp_path / "b")  # fmt: skip
    np.testing.assert_array_equal(second.indices, again.indices)
    np.testing.assert_allclose(second.scores, again.scores)


class _Sneaky(Strategy):
    """Declares nothing but reads predictions."""

    name = "sneaky"

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        scores = np.array([len(p.boxes) for p in ctx.predictions], float)
        return Selection(ctx.unlabeled[np.argsort(-scores)[:budget]], np.sort(scores)[::-1][:budget])


def test_reading_an_undeclared_input_fails(shapes, cfg, trained, tmp_path):
    pool = Pool.with_initial(len(shapes), np.arange(12))
    ctx, _ = build_context(
        _Sneaky(), "sneaky", cfg=cfg, detector=trained, view=pool_view(shapes, pool), unlabeled=pool.unlabeled,
        labeled=pool.labeled, seed=0, cycle=0, state=StrategyState(), workdir=None, progress=False,
    )  # fmt: skip
    with pytest.raises(UndeclaredInput, match="sneaky.*ctx.predictions.*declare it"):
        _Sneaky().select(ctx, 3)


def test_registry_rejects_duplicates_and_typed_options_are_checked():
    from mgral.strategies.base import register_strategy

    with pytest.raises(ValueError, match="already registered"):
        register_strategy(STRATEGIES["random"])
    with pytest.raises(InputError, match=r"strategy_params.entropy: unknown key\(s\) agregate"):
        build_strategy("entropy", {"agregate": "sum"})
    with pytest.raises(InputError, match="strategy_params.entropy.aggregate: expected one of mean, sum, max"):
        build_strategy("entropy", {"aggregate": "median"})
    with pytest.raises(InputError, match="strategy_params.mgral.iterations: expected a whole number"):
        strategy_options("mgral", {"iterations": "many"})
    with pytest.raises(InputError, match="strategy_params.mgral: baseline_decay must be in"):
        strategy_options("mgral", {"baseline_decay": 1.5})
    with pytest.raises(InputError, match="unknown strategy"):
        build_strategy("nope")
    assert build_strategy("entropy", {"aggregate": "sum"}).options.aggregate == "sum"


def test_bad_strategy_options_fail_when_the_run_starts(tmp_path):
    """A typo in a strategy option is an input error at start, not at the cycle that first uses it."""
    from mgral.loop.active_loop import ActiveLearningRun

    cfg = load_config(
        preset="smoke", overrides=["loop.strategies=[random, mgral]", "strategy_params.mgral.iteration=3"]
    )
    with pytest.raises(InputError, match="strategy_params.mgral: unknown key"):
        ActiveLearningRun(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()

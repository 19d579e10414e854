"""Every registered strategy obeys the protocol: budget, pool membership, no duplicates, determinism,
state round-trip, and no access to the ground truth of unlabeled images."""

from __future__ import annotations

import numpy as np
import pytest

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.detectors.detector import Detector
from mgral.strategies.base import (
    STRATEGIES,
    SelectionContext,
    available_strategies,
    build_strategy,
    pool_view,
)
from tests.conftest import TINY_DET, TINY_TRAIN


@pytest.fixture(scope="module")
def trained(shapes):
    det = Detector(TINY_DET, shapes.num_classes, seed=0)
    det.fit(shapes, np.arange(12), TINY_TRAIN, seed=0, progress=False)
    return det


FAST = {
    "mgral": {"iterations": 4, "table_size": 3, "proxy_steps": 2, "base_iterations": 4},
}  # options that keep CPU-heavy strategies fast; the contract is the same


def _context(shapes, det, needs, seed=0):
    pool = Pool.with_initial(len(shapes), np.arange(12))
    view = pool_view(shapes, pool)
    inf = det.infer(view, pool.unlabeled, predictions=True, embeddings=True, progress=False)
    ctx = SelectionContext(
        dataset=view, pool=pool, cycle=0, rng=np.random.default_rng(seed), unlabeled=pool.unlabeled,
        labeled=pool.labeled, predictions=inf.predictions, embeddings_unlabeled=inf.embeddings,
        embeddings_labeled=det.embed(view, pool.labeled, progress=False), detector=det,
        config=load_config(preset="smoke"), extras={"seed": seed},
    )  # fmt: skip
    return ctx


@pytest.mark.parametrize("name", available_strategies())
@pytest.mark.parametrize("budget", [1, 7])
def test_strategy_contract(shapes, trained, name, budget, tmp_path):
    strategy = build_strategy(name, FAST.get(name))
    ctx = _context(shapes, trained, strategy.needs)
    ctx.workdir = tmp_path
    sel = strategy.select(ctx, budget)
    assert len(sel.indices) == budget == len(sel.scores)
    assert len(set(sel.indices.tolist())) == budget
    assert np.isin(sel.indices, ctx.unlabeled).all()
    # the context never carries annotations of unlabeled images
    assert all(
        not ctx.dataset[int(i)].annotated and len(ctx.dataset[int(i)].boxes) == 0 for i in ctx.unlabeled
    )
    # same seed, same picks
    ctx2 = _context(shapes, trained, strategy.needs)
    ctx2.workdir = tmp_path / "again"
    again = build_strategy(name, FAST.get(name)).select(ctx2, budget)
    np.testing.assert_array_equal(sel.indices, again.indices)
    # state round-trips
    fresh = build_strategy(name, FAST.get(name))
    fresh.load_state_dict(strategy.state_dict())
    assert repr(fresh) == repr(strategy)


def test_registry_rejects_duplicates_and_unknown_options():
    from mgral.errors import InputError
    from mgral.strategies.base import register_strategy

    with pytest.raises(ValueError, match="already registered"):
        register_strategy(STRATEGIES["random"])
    with pytest.raises(InputError, match="unknown option"):
        build_strategy("entropy", {"agregate": "sum"})
    with pytest.raises(InputError, match="aggregate must be one of"):
        build_strategy("entropy", {"aggregate": "median"})
    with pytest.raises(InputError, match="unknown strategy"):
        build_strategy("nope")

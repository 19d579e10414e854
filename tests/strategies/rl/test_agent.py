"""MGRAL in the loop: smoke run, resume during the search, leak-freedom, oracle ablation."""

from __future__ import annotations

import numpy as np
import pytest

from mgral.config import load_config
from mgral.errors import InputError
from mgral.loop.active_loop import ActiveLearningRun
from mgral.loop.store import RunStore
from mgral.strategies.rl import reward as reward_mod

FAST = ["strategy_params.mgral.iterations=6", "strategy_params.mgral.table_size=3", "strategy_params.mgral.proxy_steps=3",
        "strategy_params.mgral.base_iterations=6"]  # fmt: skip


def _cfg(*extra):
    return load_config(
        preset="smoke",
        overrides=["loop.strategies=[mgral]", "device=cpu", "train.iterations=8", *FAST, *extra],
    )


def _picks(run_dir):
    store = RunStore(run_dir / "store.sqlite")
    try:
        rows = [(r["cycle"], r["n_labeled"], r["map"]) for r in store.results()]
        return store.selection("mgral", 0, 0), store.selection_info("mgral", 0, 0), rows
    finally:
        store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mgral")
    ActiveLearningRun(_cfg(), out).run()
    return out, _picks(out)


def test_mgral_smoke_run_records_both_batches(reference):
    _, (picks, info, rows) = reference
    assert len(picks) == 20 and len(set(picks)) == 20
    assert info["final"] == "best" and len(info["best_batch"]) == 20 and len(info["greedy_batch"]) == 20
    assert sorted(picks) == sorted(info["best_batch"])
    assert info["true_rewards"] >= 3 and info["table_size"] >= 3 and len(info["rewards"]) == 6
    assert len(rows) == 2


class Killed(Exception):
    pass


def test_killed_during_the_search_resumes_to_the_same_selection(reference, tmp_path, monkeypatch):
    _, expected = reference
    real = reward_mod.ProxyReward.__call__
    calls = {"n": 0}

    def die(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # after the table (3 rewards) and into the search
            raise Killed
        return real(self, batch)

    monkeypatch.setattr(reward_mod.ProxyReward, "__call__", die)
    with pytest.raises(Killed):
        ActiveLearningRun(_cfg(), tmp_path).run()
    monkeypatch.undo()
    store = RunStore(tmp_path / "store.sqlite")
    assert store.get("mgral/seed0/cycle0", "agent") is not None  # the search state was saved
    store.close()
    ActiveLearningRun(_cfg(), tmp_path).run()
    got = _picks(tmp_path)
    assert got[0] == expected[0]
    assert got[1]["rewards"] == expected[1]["rewards"] and got[2] == expected[2]


def test_pseudo_reward_never_reads_unlabeled_ground_truth(tmp_path, monkeypatch):
    seen = {}
    real_init = reward_mod.ProxyReward.__init__

    def spy(self, cfg, **kw):
        seen["unannotated"] = all(not kw["dataset"][int(i)].annotated for i in kw["unlabeled"])
        seen["boxes"] = sum(len(kw["dataset"][int(i)].boxes) for i in kw["unlabeled"])
        seen["oracle"] = kw["oracle_dataset"]
        real_init(self, cfg, **kw)

    monkeypatch.setattr(reward_mod.ProxyReward, "__init__", spy)
    ActiveLearningRun(_cfg("loop.cycles=2"), tmp_path).run()
    assert seen == {"unannotated": True, "boxes": 0, "oracle": None}


def test_oracle_ablation_gets_ground_truth_in_simulation_only(tmp_path, monkeypatch, shapes_dir):
    seen = {}
    real_init = reward_mod.ProxyReward.__init__

    def spy(self, cfg, **kw):
        seen["kind"], seen["oracle"] = cfg.kind, kw["oracle_dataset"]
        real_init(self, cfg, **kw)

    monkeypatch.setattr(reward_mod.ProxyReward, "__init__", spy)
    ActiveLearningRun(_cfg("strategy_params.mgral.reward=oracle"), tmp_path / "run").run()
    assert seen["kind"] == "oracle" and seen["oracle"].num_boxes > 0
    from mgral.loop.query import query

    with pytest.raises(InputError, match="oracle reward needs ground truth"):
        query(
            shapes_dir / "annotations.json",
            3,
            "mgral",
            tmp_path / "q.json",
            _cfg("strategy_params.mgral.reward=oracle"),
        )


def test_bad_options_are_input_errors():
    from mgral.strategies.base import build_strategy

    with pytest.raises(InputError, match="final must be one of"):
        build_strategy("mgral", {"final": "median"})
    with pytest.raises(InputError, match="unknown option"):
        build_strategy("mgral", {"iteration": 3})
    assert np.isclose(build_strategy("mgral").baseline_decay, 0.5)

"""MGRAL in the loop: smoke run, resume during the search, leak-freedom, oracle ablation, and each option."""

from __future__ import annotations

import numpy as np
import pytest

from mgral.config import load_config
from mgral.errors import InputError
from mgral.loop.active_loop import ActiveLearningRun
from mgral.loop.store import RunStore
from mgral.strategies.base import StrategyState
from mgral.strategies.rl import agent as agent_mod
from mgral.strategies.rl import curve as curve_mod

FAST = ["strategy_params.mgral.iterations=6", "strategy_params.mgral.table_size=3", "strategy_params.mgral.passes=0.5",
        "strategy_params.mgral.base_iterations=6", "strategy_params.mgral.true_every=3", "strategy_params.mgral.presize=1",
        "strategy_params.mgral.rescore_top=2"]  # fmt: skip


def _cfg(*extra):
    return load_config(
        preset="smoke",
        overrides=["loop.strategies=[mgral]", "device=cpu", "train.iterations=8", *FAST, *extra],
    )


def _picks(run_dir, cycle=0):
    store = RunStore(run_dir / "store.sqlite")
    try:
        rows = [(r["cycle"], r["n_labeled"], r["map"]) for r in store.results()]
        return store.selection("mgral", 0, cycle), store.selection_info("mgral", 0, cycle), rows
    finally:
        store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mgral")
    ActiveLearningRun(_cfg("loop.cycles=3"), out).run()
    return out, _picks(out)


def test_mgral_smoke_run_records_the_alternatives(reference):
    _, (picks, info, rows) = reference
    assert len(picks) == 20 and len(set(picks)) == 20
    assert info["final"] == "rescore" and len(info["best_batch"]) == 20 and len(info["greedy_batch"]) == 20
    # the chosen batch is the re-scored candidate with the best true reward
    trues = [r["true"] for r in info["rescored"]]
    assert len(trues) == 3 and sorted(picks) == sorted(info["rescored"][int(np.argmax(trues))]["batch"])
    # the curve reward (default) is cheaper than any estimate: every search iteration gets its true value;
    # records: 3 random + 1 presized (40 = 2b fits in half the pool of 100) + the 6 policy batches
    assert info["kinds"] == ["true"] * 6 and info["estimates"] == 0
    assert info["records"] == 3 + 1 + 6
    assert len(rows) == 3


def test_mgral_with_a_trained_proxy_estimates_between_true_rewards(tmp_path):
    """A proxy that trains (head) is costly: the estimator answers, and every 3rd iteration is true."""
    ActiveLearningRun(_cfg("loop.cycles=2", "strategy_params.mgral.proxy=head"), tmp_path).run()
    picks, info, rows = _picks(tmp_path)
    assert info["kinds"].count("true") == 2 and len(info["rewards"]) == 6 and info["estimates"] == 4
    assert info["records"] == 3 + 1 + 2 and len(picks) == 20


def test_the_policy_carries_over_to_the_next_cycle(tmp_path, monkeypatch):
    """Cycle 1's search starts from cycle 0's trained policy, not from a fresh one. (The reward is a stub
    that depends on the batch, so that the policy does learn something in six steps.)"""
    monkeypatch.setattr(curve_mod.CurveReward, "__call__", lambda self, batch: float(np.mean(batch)) / 120.0)
    out = tmp_path
    ActiveLearningRun(_cfg("loop.cycles=3"), out).run()
    store = RunStore(out / "store.sqlite")
    try:
        state = StrategyState(store, "strategy/mgral/seed0")
        cycle0 = state.get("search/cycle0")
        cycle1 = state.get("search/cycle1")
    finally:
        store.close()
    assert cycle0["iteration"] == 6 and cycle1["iteration"] == 6
    assert len(cycle1["records"]["rewards"]) > len(
        cycle0["records"]["rewards"]
    )  # the records carried over too
    from mgral.strategies.rl.policy import LSTMPolicy
    from mgral.utils import derive_seed

    fresh = LSTMPolicy(seed=derive_seed(0, "policy")).state_dict()
    trained0 = cycle0["policy"]
    # the trained cycle-0 weights differ from a fresh policy, and the cycle-1 search started from them:
    # the LSTM weights of cycle 1 are closer to cycle 0's than to a fresh policy's
    w = "lstm.weight_hh_l0"
    assert not np.allclose(trained0[w].numpy(), fresh[w].numpy())
    d_from_trained = float((cycle1["policy"][w] - trained0[w]).abs().sum())
    d_from_fresh = float((cycle1["policy"][w] - fresh[w]).abs().sum())
    assert d_from_trained < d_from_fresh


class Killed(Exception):
    pass


def test_killed_during_the_search_resumes_to_the_same_selection(reference, tmp_path, monkeypatch):
    _, expected = reference
    real = curve_mod.CurveReward.__call__
    calls = {"n": 0}

    def die(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # after the table (3 rewards) and into the search
            raise Killed
        return real(self, batch)

    monkeypatch.setattr(curve_mod.CurveReward, "__call__", die)
    with pytest.raises(Killed):
        ActiveLearningRun(_cfg("loop.cycles=3"), tmp_path).run()
    monkeypatch.undo()
    store = RunStore(tmp_path / "store.sqlite")
    assert store.get("strategy/mgral/seed0", "search/cycle0") is not None  # the search state was saved
    store.close()
    ActiveLearningRun(_cfg("loop.cycles=3"), tmp_path).run()
    got = _picks(tmp_path)
    assert got[0] == expected[0]
    assert got[1]["rewards"] == expected[1]["rewards"] and got[2] == expected[2]


def test_pseudo_reward_never_reads_unlabeled_ground_truth(tmp_path, monkeypatch):
    seen = {}
    real = agent_mod.make_reward

    def spy(opts, spec, **kw):
        seen["unannotated"] = all(not kw["dataset"][int(i)].annotated for i in kw["unlabeled"])
        seen["boxes"] = sum(len(kw["dataset"][int(i)].boxes) for i in kw["unlabeled"])
        seen["oracle"] = kw["oracle"]
        return real(opts, spec, **kw)

    monkeypatch.setattr(agent_mod, "make_reward", spy)
    ActiveLearningRun(_cfg("loop.cycles=2"), tmp_path).run()
    assert seen == {"unannotated": True, "boxes": 0, "oracle": None}


@pytest.mark.parametrize("proxy", ["curve", "head"])
def test_oracle_ablation_gets_ground_truth_in_simulation_only(tmp_path, monkeypatch, shapes_dir, proxy):
    seen = {}
    real = agent_mod.make_reward

    def spy(opts, spec, **kw):
        seen["kind"], seen["oracle"] = opts.reward, kw["oracle"]
        return real(opts, spec, **kw)

    monkeypatch.setattr(agent_mod, "make_reward", spy)
    cfg = _cfg("loop.cycles=2", "strategy_params.mgral.reward=oracle", f"strategy_params.mgral.proxy={proxy}")
    ActiveLearningRun(cfg, tmp_path / "run").run()
    assert seen["kind"] == "oracle" and seen["oracle"].num_boxes > 0
    from mgral.loop.query import query

    with pytest.raises(InputError, match="oracle reward needs ground truth"):
        query(shapes_dir / "annotations.json", 3, "mgral", tmp_path / "q.json", cfg)


@pytest.mark.parametrize(
    "option, check",
    [
        ("final=greedy,polish_swaps=0", lambda info, picks: sorted(picks) == sorted(info["greedy_batch"])),
        ("final=best,polish_swaps=0", lambda info, picks: sorted(picks) == sorted(info["best_batch"])),
        ("estimator=table", lambda info, picks: info["records"] >= 4),
        ("estimator=ridge", lambda info, picks: info["estimates"] == 4),
        ("estimator=gp", lambda info, picks: info["estimates"] == 4),
        ("estimator=none", lambda info, picks: info["estimates"] == 0 and info["kinds"] == ["true"] * 6),
        ("feature=mean", lambda info, picks: info["records"] >= 4),
        ("feature=histogram", lambda info, picks: info["records"] >= 4),
        ("proxy=head", lambda info, picks: info["base_map"] is not None and info["estimates"] == 4),
        ("curve_calibrate=true", lambda info, picks: info["base_map"] is not None),
        # a proxy that trains polishes nothing by default: a swap would cost a training
        ("proxy=semi", lambda info, picks: info["base_map"] is not None and info["polish"] is None),
        ("proxy=linear", lambda info, picks: info["base_map"] is not None),
        ("polish_swaps=0", lambda info, picks: info["polish"] is None),
        (  # the default with the curve reward: 3,000 swaps from the chosen batch, never lowering its reward
            "curve_duplicates=scenes",
            lambda info, picks: (
                info["polish"]["swaps"] == 3000 and info["polish"]["end"] >= info["polish"]["start"]
            ),
        ),
        (  # the reward's scenes on the thumbnails, recorded: how many the pool has, the batch reaches, and new
            "curve_probe=0,curve_scene_space=pixels",
            lambda info, picks: (
                info["duplicates"]["discounted"]
                and info["duplicates"]["scenes"]["space"] == "pixels"
                and 0 <= info["duplicates"]["scenes"]["new"] <= info["duplicates"]["scenes"]["batch"] <= 20
                and info["duplicates"]["scenes"]["batch"] <= info["duplicates"]["scenes"]["pool"]
            ),
        ),
        (
            "polish_swaps=200",
            lambda info, picks: (
                info["polish"]["swaps"] == 200 and info["polish"]["end"] >= info["polish"]["start"]
            ),
        ),
    ],
)
def test_each_option_runs_and_does_what_it_says(tmp_path, option, check):
    opts = [f"strategy_params.mgral.{o}" for o in option.split(",")]
    ActiveLearningRun(_cfg("loop.cycles=2", *opts), tmp_path).run()
    picks, info, rows = _picks(tmp_path)
    assert len(picks) == 20 and len(rows) == 2
    assert check(info, picks), info


def test_no_model_that_saw_a_fold_touches_its_measurement(tmp_path, monkeypatch):
    """The reward's fold models (which also label the batch) train on the labeled images minus their fold."""
    seen = []
    from mgral.training import supervised

    real = supervised.Supervised.__init__

    def spy(self, dataset, indices, **kw):
        seen.append(sorted(int(i) for i in indices))
        real(self, dataset, indices, **kw)

    monkeypatch.setattr(supervised.Supervised, "__init__", spy)
    ActiveLearningRun(_cfg("loop.cycles=2", "strategy_params.mgral.proxy=head"), tmp_path).run()
    cycle0 = seen[0]  # (the loop also builds the objective when it loads a trained cycle from its checkpoint)
    folds = [s for s in seen if len(s) < len(cycle0)]
    assert len(cycle0) == 20 and len(folds) == 2
    fold_a, fold_b = folds
    assert len(fold_a) == len(fold_b) == 10
    assert sorted(fold_a + fold_b) == cycle0  # two disjoint halves: each fold model never saw the other fold


def test_bad_options_are_input_errors():
    from mgral.strategies.base import build_strategy

    with pytest.raises(InputError, match="final: expected one of rescore, best, greedy"):
        build_strategy("mgral", {"final": "median"})
    with pytest.raises(InputError, match="unknown key"):
        build_strategy("mgral", {"iteration": 3})
    assert np.isclose(build_strategy("mgral").options.baseline_decay, 0.5)

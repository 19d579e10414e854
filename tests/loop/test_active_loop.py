"""The loop: a run killed at any step and resumed equals an uninterrupted run of the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mgral.config import load_config
from mgral.errors import InputError
from mgral.loop import active_loop
from mgral.loop.active_loop import ActiveLearningRun
from mgral.loop.store import RunStore
from mgral.strategies.entropy import EntropyStrategy


def _cfg(**train):
    cfg = load_config(
        preset="smoke",
        overrides=[
            "loop.cycles=3",
            "loop.strategies=[random, entropy, coreset]",
            "train.iterations=8",
            "device=cpu",
        ],
    )
    return replace(cfg, train=replace(cfg.train, **train)) if train else cfg


def _snapshot(run_dir: Path) -> tuple[list, dict]:
    store = RunStore(run_dir / "store.sqlite")
    try:
        rows = [(r["strategy"], r["seed"], r["cycle"], r["n_labeled"], r["map"]) for r in store.results()]
        sels = {(s, c): store.selection(s, 0, c) for s in ("random", "entropy", "coreset") for c in range(2)}
    finally:
        store.close()
    return rows, sels


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    ActiveLearningRun(_cfg(checkpoint_every=3), out).run()
    return out, _snapshot(out)


def test_uninterrupted_run_is_complete(reference):
    out, (rows, sels) = reference
    assert len(rows) == 9 and all(r[4] is not None for r in rows)
    assert [r[3] for r in rows if r[0] == "random"] == [20, 40, 60]
    # cycle 0 is shared by every strategy (same seed, same initial set, same init)
    assert len({r[4] for r in rows if r[2] == 0}) == 1
    assert all(len(v) == 20 for v in sels.values())
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("strategy,seed,cycle,n_labeled,map") and len(lines) == 10
    assert (out / "config.yaml").is_file()


class Killed(Exception):
    pass


@pytest.mark.parametrize("where", ["mid-training", "after-evaluation", "during-selection"])
def test_killed_run_resumes_to_the_same_result(reference, tmp_path, monkeypatch, where):
    _, expected = reference
    cfg = _cfg(checkpoint_every=3)
    if where == "mid-training":
        from mgral.training import engine

        real = engine.atomic_torch_save
        calls = {"n": 0}

        def die(obj, path):
            real(obj, path)
            calls["n"] += 1
            if calls["n"] == 4:
                raise Killed

        monkeypatch.setattr(engine, "atomic_torch_save", die)
    elif where == "after-evaluation":
        real_record = RunStore.record_cycle

        def die_after(self, strategy, seed, cycle, **kw):
            real_record(self, strategy, seed, cycle, **kw)
            if strategy == "entropy" and cycle == 1:
                raise Killed

        monkeypatch.setattr(RunStore, "record_cycle", die_after)
    else:
        real_score = EntropyStrategy.score

        def die_in_select(self, ctx):
            if ctx.cycle == 1:
                raise Killed
            return real_score(self, ctx)

        monkeypatch.setattr(EntropyStrategy, "score", die_in_select)
    with pytest.raises(Killed):
        ActiveLearningRun(cfg, tmp_path).run()
    monkeypatch.undo()
    ActiveLearningRun(cfg, tmp_path).run()
    assert _snapshot(tmp_path) == expected


def test_config_mismatch_is_refused(reference):
    out, _ = reference
    other = load_config(preset="smoke", overrides=["loop.cycles=4", "device=cpu"])
    with pytest.raises(InputError, match="first difference at 'loop"):
        ActiveLearningRun(other, out).run()


def test_the_run_records_every_strategy_option_and_resumes_with_them(tmp_path):
    """config.yaml writes every option of the run's strategies out, defaults included, so that a later
    version with other defaults cannot change a run half-way: the same command is then refused naming the
    option, and the stored config resumes with the options the run started with. A directory written before
    the options were recorded in full resumes as before and is written out in full; a strategy the grid adds
    brings its options."""
    from mgral.config import save_config, to_dict
    from mgral.strategies.base import build_strategy
    from mgral.strategies.rl.agent import MgralOptions

    cfg = load_config(preset="smoke", overrides=["loop.strategies=[random, mgral]", "device=cpu"])
    new = tmp_path / "new"
    new.mkdir()
    run = ActiveLearningRun(cfg, new)
    run._save_config(run._check_dir())
    stored = ActiveLearningRun.stored_config(new)
    assert stored is not None and stored.strategy_params == {"mgral": to_dict(MgralOptions())}
    # as if the run had started under a version whose default was the other scene space
    old = "pixels" if MgralOptions().curve_scene_space == "embeddings" else "embeddings"
    mgral_params = {**stored.strategy_params["mgral"], "curve_scene_space": old}
    save_config(replace(stored, strategy_params={"mgral": mgral_params}), new / "config.yaml")
    with pytest.raises(InputError, match="strategy_params.mgral.curve_scene_space.*--out DIR"):
        ActiveLearningRun(cfg, new)._check_dir()
    kept = ActiveLearningRun(ActiveLearningRun.stored_config(new), new)  # type: ignore[arg-type]
    kept._check_dir()
    assert build_strategy("mgral", kept.cfg.strategy_params["mgral"]).options.curve_scene_space == old
    # a directory of an earlier version: only the options given were written
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    save_config(replace(cfg, strategy_params={"mgral": {"iterations": 7}}), earlier / "config.yaml")
    given = load_config(preset="smoke", overrides=["loop.strategies=[random, mgral, entropy]", "device=cpu",
                                                  "strategy_params.mgral.iterations=7"])  # fmt: skip
    run = ActiveLearningRun(given, earlier)
    run._save_config(run._check_dir())
    grown = ActiveLearningRun.stored_config(earlier)
    assert grown is not None and grown.loop.strategies == ("random", "mgral", "entropy")
    assert grown.strategy_params["mgral"] == to_dict(MgralOptions(iterations=7))
    assert set(grown.strategy_params) == {"mgral", "entropy"}


def test_pool_too_small_is_an_input_error(tmp_path):
    cfg = load_config(preset="smoke", overrides=["loop.initial=100", "loop.budget=50", "loop.cycles=3"])
    with pytest.raises(InputError, match="exceeds the pool of 120 images"):
        ActiveLearningRun(cfg, tmp_path).run()


def test_sigkill_of_the_cli_then_resume(reference, tmp_path):
    """A real kill -9 of `mgral run` at an arbitrary moment, then the same command again."""
    _, expected = reference
    cfg_file = tmp_path / "cfg.yaml"
    from mgral.config import save_config

    save_config(_cfg(checkpoint_every=3), cfg_file)
    out = tmp_path / "run"
    # the reference's torch threads: the same sums, the same result
    cmd = [sys.executable, "-m", "mgral.cli", "-q", "run", "--config", str(cfg_file), "--out", str(out),
           "--workers", "1", "--threads", str(torch.get_num_threads())]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until at least two cycles are stored, then kill mid-way
        if (out / "results.csv").is_file() and len((out / "results.csv").read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _snapshot(out) == expected


def test_resolve_count():
    assert active_loop.resolve_count(0.02, 1000, "k") == 20
    assert active_loop.resolve_count(30, 1000, "k") == 30
    with pytest.raises(InputError):
        active_loop.resolve_count(0.0001, 100, "loop.budget")
    assert np.isclose(active_loop.resolve_count(0.5, 11, "k"), 6)

"""The benchmark runner: a two-strategy, two-seed grid gives the same numbers inline, in worker processes
and on Ray (same torch threads per cell); one run per directory; the dry run plans without writing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgral.config import load_config, save_config
from mgral.errors import InputError
from mgral.loop.active_loop import ActiveLearningRun
from mgral.loop.executors import InlineExecutor, LocalExecutor, make_executor
from mgral.loop.lock import RunLock
from mgral.loop.store import RunStore

GRID = ["loop.strategies=[random, entropy]", "loop.seeds=[0, 1]", "loop.cycles=2", "train.iterations=6",
        "device=cpu"]  # fmt: skip


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _grid(run_dir: Path, executor) -> list[tuple]:
    run = ActiveLearningRun(load_config(preset="smoke", overrides=GRID), run_dir)
    run.executor = executor
    try:
        run.run()
    finally:
        executor.close()
    store = RunStore(run_dir / "store.sqlite")
    try:
        rows = [(r["strategy"], r["seed"], r["cycle"], r["n_labeled"], r["map"]) for r in store.results()]
        picks = [store.selection(s, seed, 0) for s in ("random", "entropy") for seed in (0, 1)]
    finally:
        store.close()
    return rows + picks


def test_workers_and_ray_give_the_inline_result(tmp_path, keep_threads):
    inline = _grid(tmp_path / "inline", InlineExecutor(threads=1))
    assert len([r for r in inline if isinstance(r, tuple)]) == 8  # 2 strategies x 2 seeds x 2 cycles
    assert _grid(tmp_path / "workers", LocalExecutor(2, 1)) == inline
    ray = pytest.importorskip("ray")
    try:
        assert _grid(tmp_path / "ray", make_executor("ray", 2, threads=1)) == inline
    finally:
        ray.shutdown()


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    cfg_file = tmp_path / "smoke.yaml"
    save_config(load_config(preset="smoke", overrides=["device=cpu"]), cfg_file)
    out = tmp_path / "run"
    with RunLock(out):  # another process's run, as far as the CLI can tell (flock is per open file)
        done = subprocess.run([sys.executable, "-m", "mgral.cli", "run", "--config", str(cfg_file), "--out", str(out)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        with pytest.raises(InputError, match="in use by another mgral run"), RunLock(out):
            pass
    assert done.returncode == 2
    assert "in use by another mgral run" in done.stderr and f"pid {os.getpid()}" in done.stderr
    assert not (out / "store.sqlite").exists()
    with RunLock(out):  # released with its holder
        pass


def test_dry_run_on_a_voc_folder_plans_and_writes_nothing(shapes, tmp_path):
    from mgral.data.voc import write_voc

    root = tmp_path / "VOCdevkit"
    for sub, split, part in (("VOC2007", "trainval", range(0, 24)), ("VOC2012", "trainval", range(24, 36)),
                             ("VOC2007", "test", range(36, 48))):  # fmt: skip
        ds = shapes.subset(part)
        (root / sub / "JPEGImages").mkdir(parents=True, exist_ok=True)
        for rec in ds.images:
            (root / sub / "JPEGImages" / f"{rec.key}.png").write_bytes(
                (shapes.image_root / rec.file_name).read_bytes()
            )
        write_voc(ds, root / sub, split)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mgral.cli", "-q", "run", "--preset", "voc-ssd300", "--out", str(out), "--dry-run",
           "--set", f"data.root={root}", "--set", "detector.pretrained=none",
           "--set", "detector.name=tiny_ssd", "--set", "detector.image_size=64", "--set", "train.num_workers=0",
           "--set", "train.amp=false", "--set", "loop.initial=8", "--set", "loop.budget=4", "--set", "loop.cycles=3",
           "--set", "loop.strategies=[random, entropy]"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "pool 36 images, test 12" in done.stdout and "estimated wall time" in done.stdout
    ran = next(line for line in done.stdout.splitlines() if "every strategy ran" in line)
    assert "random" in ran and "entropy" in ran and "WARNING" not in done.stdout
    assert not out.exists() or not any(out.iterdir())

"""``mgral run --dry-run``: the plan of a run, a time estimate from short measurements, and one short cycle
of every strategy on a small sample, so a user can check a 16,000-image set-up in a minute.

Nothing is written to the run directory: the short cycle runs in a temporary folder.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mgral.config import DataConfig, RunConfig
from mgral.data.coco import write_coco
from mgral.data.dataset import DetectionDataset
from mgral.data.sources import load_run_data
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.loop.active_loop import ActiveLearningRun, resolve_count
from mgral.strategies.base import expand_strategy_names, validate_strategy_params
from mgral.training.engine import num_iterations
from mgral.training.supervised import train_supervised
from mgral.utils import resolve_device

log = logging.getLogger(__name__)


def plan(cfg: RunConfig, pool_size: int, test_size: int) -> dict[str, Any]:
    """Cells, cycles, labeled images and training iterations per cycle of ``cfg`` on a pool of ``pool_size``."""
    initial = resolve_count(cfg.loop.initial, pool_size, "loop.initial")
    budget = resolve_count(cfg.loop.budget, pool_size, "loop.budget")
    labeled = [initial + k * budget for k in range(cfg.loop.cycles)]
    strategies = expand_strategy_names(cfg.loop.strategies)
    return {
        "strategies": strategies, "seeds": list(cfg.loop.seeds), "cells": len(strategies) * len(cfg.loop.seeds),
        "cycles": cfg.loop.cycles, "pool": pool_size, "test": test_size, "initial": initial, "budget": budget,
        "labeled": labeled, "iterations": [num_iterations(cfg.train, n) for n in labeled],
        "fits": labeled[-1] <= pool_size,
    }  # fmt: skip


def _measure(
    cfg: RunConfig, pool: DetectionDataset, iterations: int = 4, images: int = 32
) -> dict[str, float]:
    """Seconds of one training iteration and of the inference of one image, on this machine."""
    det = Detector(cfg.detector, pool.num_classes, seed=0, device=resolve_device(cfg.device))
    idx = np.arange(min(len(pool), max(images, cfg.train.batch_size)))
    quick = replace(cfg.train, iterations=iterations + 1, checkpoint_every=0, warmup_iters=0, num_workers=0)
    train_supervised(det, pool, idx, replace(quick, iterations=1), seed=0, progress=False)  # warm-up
    t = time.perf_counter()
    train_supervised(det, pool, idx, replace(quick, iterations=iterations), seed=0, progress=False)
    per_it = (time.perf_counter() - t) / iterations
    t = time.perf_counter()
    det.infer(pool, idx[:images], predictions=True, embeddings=True, batch_size=cfg.train.eval_batch_size,
              progress=False)  # fmt: skip
    per_img = (time.perf_counter() - t) / len(idx[:images])
    return {"train_iteration_s": per_it, "infer_image_s": per_img}


def estimate_seconds(p: dict[str, Any], cost: dict[str, float], cfg: RunConfig) -> float:
    """A rough wall time of the whole run on one worker: training, pool inference and test evaluation per
    cycle, plus MGRAL's fold models and proxy rewards (``true`` rewards cost about one training step per
    pseudo-labeled image)."""
    total = 0.0
    shared = sum(p["iterations"][:1]) * cost["train_iteration_s"] * len(p["seeds"])
    for name in p["strategies"]:
        for k, n in enumerate(p["labeled"]):
            if k > 0:
                total += p["iterations"][k] * cost["train_iteration_s"]
            total += p["test"] * cost["infer_image_s"]
            if k < p["cycles"] - 1:
                total += (p["pool"] - n) * cost["infer_image_s"]
                if name == "mgral":
                    opts = cfg.strategy_params.get("mgral", {})
                    base = opts.get("base_iterations") or p["iterations"][k]
                    records = opts.get("table_size", 16) + opts.get("iterations", 200) // max(
                        1, opts.get("true_every", 10)
                    )
                    total += 2 * base * cost["train_iteration_s"]
                    total += (
                        records
                        * 2
                        * opts.get("passes", 2.0)
                        * p["budget"]
                        / 8
                        * cost["train_iteration_s"]
                        / 4
                    )
    return total * len(p["seeds"]) + shared


def dry_run(cfg: RunConfig, workers: int = 1) -> dict[str, Any]:
    """The plan, the measured costs, the time estimate, and a short cycle of every strategy on a sample."""
    validate_strategy_params(cfg)
    with tempfile.TemporaryDirectory(prefix="mgral-dry-run-") as tmp:
        t0 = time.perf_counter()
        pool, test = load_run_data(cfg.data, Path(tmp) / "data")
        p = plan(cfg, len(pool), len(test))
        p["load_s"] = time.perf_counter() - t0
        cost = _measure(cfg, pool)
        p.update(cost)
        p["estimated_s"] = estimate_seconds(p, cost, cfg) / max(1, workers)
        # one short cycle of every strategy on a small sample of the data, end to end
        sample = _short_config(cfg, _write_sample(pool, 160, Path(tmp) / "sample-train.json"),
                               _write_sample(test, 40, Path(tmp) / "sample-test.json"), len(pool))  # fmt: skip
        t = time.perf_counter()
        rows = ActiveLearningRun(sample, Path(tmp) / "run", progress=False).run()
        p["short_cycle_s"] = time.perf_counter() - t
        p["short_cycle_rows"] = len(rows)
        p["short_cycle_strategies"] = sorted({r["strategy"] for r in rows})
    return p


def _write_sample(ds: DetectionDataset, n: int, path: Path) -> Path:
    """The first ``n`` images of ``ds`` (every ``len/n``-th one) as a COCO file naming them by absolute path."""
    step = max(1, len(ds) // n)
    images = [replace(ds[i], file_name=str(ds.image_path(i).resolve())) for i in range(0, len(ds), step)][:n]
    write_coco(DetectionDataset(images, ds.class_names, None, ds.source, ds.category_ids), path)
    return path


def _short_config(cfg: RunConfig, train: Path, test: Path, pool_size: int) -> RunConfig:
    """``cfg`` shrunk to two cycles on a sample of its own data, every strategy at minimal effort."""
    n = min(160, pool_size)
    initial, budget = max(8, min(32, n // 4)), max(4, min(16, n // 8))
    if initial + budget > n:
        raise InputError("data", f"the pool has {pool_size} images: too few even for a dry run")
    params = {k: dict(v) for k, v in cfg.strategy_params.items()}
    params["mgral"] = {**params.get("mgral", {}), "iterations": 2, "table_size": 2, "presize": 0, "true_every": 1,
                       "rescore_top": 1, "base_iterations": 2, "passes": 0.5}  # fmt: skip
    train_cfg = replace(cfg.train, iterations=2, epochs=0.0, checkpoint_every=0, warmup_iters=0, lr_steps=())
    loop = replace(cfg.loop, seeds=cfg.loop.seeds[:1], initial=initial, budget=budget, cycles=2)
    data = DataConfig(
        kind="files",
        train=str(train),
        test=str(test),
        train_format="coco",
        test_format="coco",
        allow_outside_paths=True,
    )  # the sample names the images where they are
    return replace(cfg, data=data, train=train_cfg, loop=loop, strategy_params=params, progress=False)


def format_plan(p: dict[str, Any]) -> str:
    lines = [
        f"pool {p['pool']} images, test {p['test']}; {p['cells']} cells ({len(p['strategies'])} strategies x "
        f"{len(p['seeds'])} seeds): {', '.join(p['strategies'])}",
        f"{p['cycles']} cycles: labeled " + ", ".join(f"{n:,}" for n in p["labeled"]),
        "training iterations per cycle: " + ", ".join(f"{n:,}" for n in p["iterations"]),
        f"measured here: {p['train_iteration_s']:.3f} s per training iteration, {1000 * p['infer_image_s']:.1f} ms "
        f"per image of inference",
        f"estimated wall time: {_hours(p['estimated_s'])}",
        f"short cycle on a sample: every strategy ran ({', '.join(p['short_cycle_strategies'])}) in "
        f"{p['short_cycle_s']:.0f}s",
    ]
    if not p["fits"]:
        lines.append(f"WARNING: the protocol needs {p['labeled'][-1]:,} pool images but the pool has {p['pool']:,}: "
                     "the real run would stop with an error")  # fmt: skip
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:.1f} h" if h >= 1 else f"{math.ceil(seconds / 60)} min"


__all__ = ["dry_run", "format_plan", "plan"]

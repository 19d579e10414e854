"""The active-learning loop: per seed and strategy, cycles of train, evaluate, select; resumable.

A run directory holds ``config.yaml`` (the resolved config), ``store.sqlite`` (:class:`RunStore`),
``checkpoints/`` (atomic, per cycle), ``data/`` (generated data) and ``results.csv``. Every step leaves
the directory consistent, so running again after a kill continues at the first unfinished step and,
since every random stream is derived from ``(seed, purpose, cycle)``, gives the same selections and
metrics as an uninterrupted run.

Seeds: the initial labeled set depends on the seed only; the detector's initial weights on the seed
only; cycle ``k``'s training order and augmentation on ``(seed, k)``. Strategies therefore share the
cycle-0 model (trained once per seed) and differ only by what they select.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgral.config import RunConfig, config_from_yaml_text, save_config, to_dict
from mgral.data.dataset import DetectionDataset
from mgral.data.pool import Pool
from mgral.data.sources import load_run_data
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.loop.store import RESULT_COLUMNS, RunStore
from mgral.metrics.evaluate import evaluate_predictions
from mgral.strategies.base import (
    SelectionContext,
    Strategy,
    build_strategy,
    expand_strategy_names,
    pool_view,
    strategy_inputs,
)
from mgral.utils import atomic_torch_save, atomic_write_text, derive_seed, resolve_device, rng_for, timer

log = logging.getLogger(__name__)


def resolve_count(value: float, n: int, key: str) -> int:
    """A count from a config value: whole numbers as they are, fractions of ``n`` rounded."""
    count = int(value) if value >= 1 else int(round(value * n))
    if count <= 0:
        raise InputError(key, f"{value} of {n} images is no image")
    return count


def _diff_key(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _diff_key(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    return prefix or "(top level)"


class ActiveLearningRun:
    """Runs (or resumes) every (seed, strategy) of a config in ``run_dir``."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = cfg.progress if progress is None else progress
        self.strategy_names = expand_strategy_names(cfg.loop.strategies)
        self.device = resolve_device(cfg.device)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def stored_config(run_dir: str | Path) -> RunConfig | None:
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            return None
        return config_from_yaml_text(path.read_text(), str(path))

    def _prepare_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stored = self.stored_config(self.run_dir)
        if stored is not None:
            a, b = to_dict(stored), to_dict(self.cfg)
            a.pop("progress", None), b.pop("progress", None)
            if a != b:
                raise InputError(
                    self.run_dir / "config.yaml",
                    f"this run directory holds a run with another config (first difference at '{_diff_key(a, b)}'); "
                    "use another --out, or the same config to resume",
                )
        else:
            save_config(self.cfg, self.run_dir / "config.yaml")

    # ------------------------------------------------------------------ main
    def run(self) -> list[dict[str, Any]]:
        self._prepare_dir()
        self.pool_ds, self.test_ds = load_run_data(self.cfg.data, self.run_dir / "data")
        log.info("pool: %s; test: %s", self.pool_ds, self.test_ds)
        self.store = RunStore(self.run_dir / "store.sqlite")
        try:
            for seed in self.cfg.loop.seeds:
                for name in self.strategy_names:
                    self._run_strategy(name, seed)
            self.write_results()
            return self.store.results()
        finally:
            self.store.close()

    def sizes(self) -> tuple[int, int]:
        n = len(self.pool_ds)
        initial = resolve_count(self.cfg.loop.initial, n, "loop.initial")
        budget = resolve_count(self.cfg.loop.budget, n, "loop.budget")
        need = initial + budget * (self.cfg.loop.cycles - 1)
        if need > n:
            raise InputError(
                "loop",
                f"{initial} initial + {self.cfg.loop.cycles - 1} x {budget} images exceeds the pool of {n} images",
            )
        return initial, budget

    def initial_pool(self, seed: int) -> Pool:
        initial, _ = self.sizes()
        return Pool.random_initial(len(self.pool_ds), initial, rng_for(seed, "initial"))

    def _ckpt_path(self, name: str, seed: int, cycle: int) -> Path:
        shared = cycle == 0
        who = "shared" if shared else name
        return self.run_dir / "checkpoints" / f"seed{seed}" / who / f"cycle{cycle}.pt"

    def _run_strategy(self, name: str, seed: int) -> None:
        cfg = self.cfg
        _, budget = self.sizes()
        pool = self.initial_pool(seed)
        strategy = build_strategy(name, cfg.strategy_params.get(name))
        state_scope = f"strategy/{name}/seed{seed}"
        for cycle in range(cfg.loop.cycles):
            if cycle > 0:
                picked = self.store.selection(name, seed, cycle - 1)
                assert picked is not None, "a cycle ran without the previous selection"
                pool.label(picked, cycle)
            last = cycle == cfg.loop.cycles - 1
            row = self.store.cycle_row(name, seed, cycle)
            if row is not None and (last or self.store.selection(name, seed, cycle) is not None):
                continue
            labeled = pool.labeled
            detector, train_stats = self._train(name, seed, cycle, labeled)
            if row is None:
                with timer() as t_eval:
                    idx = np.arange(len(self.test_ds))
                    preds = detector.predict(
                        self.test_ds, idx, batch_size=cfg.train.eval_batch_size, num_workers=cfg.train.num_workers,
                        progress=self.progress, desc="evaluate",
                    )  # fmt: skip
                    value, metrics = evaluate_predictions(self.test_ds, idx, preds, cfg.loop.metric)
                self.store.record_cycle(
                    name, seed, cycle, n_labeled=len(labeled), map_value=value, metrics=metrics,
                    train_s=train_stats["seconds"], infer_s=None, eval_s=t_eval["s"],
                    train_loss=train_stats.get("final_loss"),
                )  # fmt: skip
                log.info(
                    "[%s seed %d] cycle %d/%d: %d labeled, %s %.4f (train %.1fs, eval %.1fs)", name, seed, cycle + 1,
                    cfg.loop.cycles, len(labeled), cfg.loop.metric, value, train_stats["seconds"], t_eval["s"],
                )  # fmt: skip
                self.write_results()
            if not last:
                self._select(strategy, name, seed, cycle, pool, detector, budget, state_scope)
                if not (self.cfg.loop.keep_checkpoints or self.cfg.loop.warm_start) and cycle > 0:
                    self._ckpt_path(name, seed, cycle).unlink(missing_ok=True)

    def _train(
        self, name: str, seed: int, cycle: int, labeled: np.ndarray
    ) -> tuple[Detector, dict[str, float]]:
        cfg = self.cfg
        path = self._ckpt_path(name, seed, cycle)
        detector = Detector(
            cfg.detector, self.pool_ds.num_classes, seed=derive_seed(seed, "init"), device=self.device
        )
        if path.is_file():
            state = torch.load(path, map_location=self.device, weights_only=False)
            detector.load_state_dict(state["detector"])
            return detector, state["train_stats"]
        if cfg.loop.warm_start and cycle > 0:
            prev = self._ckpt_path(name, seed, cycle - 1)
            detector.load_state_dict(
                torch.load(prev, map_location=self.device, weights_only=False)["detector"]
            )
        log.info("[%s seed %d] cycle %d: training on %d labeled images", name, seed, cycle + 1, len(labeled))
        stats = detector.fit(
            pool_view(self.pool_ds, Pool.with_initial(len(self.pool_ds), labeled)), labeled, cfg.train,
            seed=derive_seed(seed, "train", cycle), checkpoint=path.with_suffix(".train-state"), progress=self.progress,
        )  # fmt: skip
        atomic_torch_save({"detector": detector.state_dict(), "train_stats": stats}, path)
        return detector, stats

    def context(self, name: str, seed: int, cycle: int, pool: Pool, detector: Detector, needs: frozenset[str],
                view: DetectionDataset) -> tuple[SelectionContext, float]:  # fmt: skip
        """Compute what a strategy needs (one inference pass) and wrap it in a context; returns (ctx, seconds)."""
        cfg = self.cfg
        unlabeled, labeled = pool.unlabeled, pool.labeled
        kw: dict[str, Any] = {
            "batch_size": cfg.train.eval_batch_size,
            "num_workers": cfg.train.num_workers,
            "progress": self.progress,
        }
        with timer() as t:
            preds, emb_u, emb_l = strategy_inputs(detector, view, unlabeled, labeled, needs, **kw)
        ctx = SelectionContext(
            dataset=view, pool=pool, cycle=cycle, rng=rng_for(seed, name, "select", cycle), unlabeled=unlabeled,
            labeled=labeled, predictions=preds, embeddings_unlabeled=emb_u, embeddings_labeled=emb_l,
            detector=detector, config=cfg, workdir=self.run_dir / "strategies" / name / f"seed{seed}" / f"cycle{cycle}",
            progress=self.progress, extras={"store": self.store, "seed": seed},
        )  # fmt: skip
        if "oracle" in needs:  # an explicitly named ablation: the pool's ground truth, simulation only
            ctx.extras["oracle_dataset"] = self.pool_ds
        return ctx, t["s"]

    def _select(self, strategy: Strategy, name: str, seed: int, cycle: int, pool: Pool, detector: Detector,
                budget: int, state_scope: str) -> None:  # fmt: skip
        view = pool_view(self.pool_ds, pool)
        blob = self.store.get(state_scope, "state")
        if blob is not None:
            strategy.load_state_dict(torch.load(io.BytesIO(blob), weights_only=False))
        ctx, infer_s = self.context(name, seed, cycle, pool, detector, strategy.needs, view)
        with timer() as t:
            sel = strategy.select(ctx, budget)
        picked = np.asarray(sel.indices, np.int64)
        if (
            len(picked) != budget
            or len(np.unique(picked)) != budget
            or not np.isin(picked, pool.unlabeled).all()
        ):
            raise RuntimeError(
                f"strategy {name} broke the protocol: {len(picked)} picks for a budget of {budget}"
            )
        image_ids = [self.pool_ds[int(i)].image_id for i in picked]
        state = strategy.state_dict()
        if state:
            buf = io.BytesIO()
            torch.save(state, buf)
            self.store.put(state_scope, "state", buf.getvalue())
        self.store.record_selection(
            name, seed, cycle, picked.tolist(), image_ids, np.asarray(sel.scores, float).tolist(),
            infer_s=infer_s, select_s=t["s"], info=sel.info,
        )  # fmt: skip
        log.info("[%s seed %d] cycle %d: selected %d images (infer %.1fs, select %.1fs)", name, seed, cycle + 1,
                 budget, infer_s, t["s"])  # fmt: skip
        self.write_results()

    def write_results(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.store.results():
            writer.writerow(
                {
                    k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                    for k, v in row.items()
                }
            )
        atomic_write_text(self.run_dir / "results.csv", buf.getvalue())

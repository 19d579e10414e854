"""The experiment runner: a grid of (strategy, seed) cells, each a sequence of cycles of train, evaluate,
select; resumable, and run in parallel by an executor (:mod:`.executors`).

A run directory holds ``config.yaml`` (the resolved config), ``store.sqlite`` (:class:`RunStore`),
``checkpoints/`` (atomic, per cycle), ``data/`` (generated data), ``results.csv`` (a row per strategy, seed
and cycle), ``results_per_class.csv`` and ``selections.csv``. Every step leaves the directory consistent,
so running again after a kill continues at the first unfinished step and, since every random stream is
derived from ``(seed, purpose, cycle)``, gives the same selections and metrics as an uninterrupted run.

Fairness: the initial labeled set and the detector's initial weights depend on the seed only, and cycle
``k``'s training order and augmentation on ``(seed, k)``; the cycle-0 model of a seed is trained once (in a
first phase, before the cells) and shared by every strategy that trains the same way. Strategies
therefore differ only by what they select. A run directory may grow: running it again with more seeds
or strategies (everything else equal) adds the new cells; finished cells are not recomputed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mgral.config import RunConfig, config_from_yaml_text, save_config, to_dict
from mgral.data.pool import Pool
from mgral.data.sources import load_run_data
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.loop.context import build_context
from mgral.loop.executors import Executor, InlineExecutor
from mgral.loop.lock import RunLock
from mgral.loop.store import RESULT_COLUMNS, RunStore
from mgral.metrics.evaluate import evaluate_predictions
from mgral.strategies.base import (
    Strategy,
    StrategyState,
    build_strategy,
    expand_strategy_names,
    pool_view,
    resolved_strategy_params,
)
from mgral.training.engine import Objective, fit
from mgral.training.supervised import Supervised
from mgral.utils import (
    atomic_torch_save,
    atomic_write_text,
    crash_point,
    derive_seed,
    read_text,
    resolve_device,
    rng_for,
    safe_torch_load,
    timer,
)

log = logging.getLogger(__name__)


def resolve_count(value: float, n: int, key: str) -> int:
    """A count from a config value: whole numbers as they are, fractions of ``n`` rounded."""
    count = int(value) if value >= 1 else int(round(value * n))
    if count <= 0:
        raise InputError(key, f"{value} of {n} images is no image")
    return count


#: config keys a run directory may change between invocations: its grid grows, nothing else changes
GRID_KEYS = ("strategies", "seeds")


def _diff_key(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _diff_key(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    return prefix or "(top level)"


class Cell(NamedTuple):
    """One unit of work of a run: the cycle-0 model of a seed (``strategy`` empty) or a strategy's cycles."""

    run_dir: str
    config: dict[str, Any]
    seed: int
    strategy: str
    progress: bool


def run_cell(cell: Cell) -> str:
    """Run one cell in whatever process the executor chose (the function executors map)."""
    from mgral.config import from_mapping

    cfg = from_mapping(RunConfig, cell.config, "config")
    run = ActiveLearningRun(cfg, cell.run_dir, progress=cell.progress)
    run.open()
    try:
        if cell.strategy:
            run._run_strategy(cell.strategy, cell.seed)
        else:
            run._train_cycle0(cell.seed)
    finally:
        run.close()
    return cell.strategy or f"cycle 0 of seed {cell.seed}"


class ActiveLearningRun:
    """Runs (or resumes) every (seed, strategy) cell of a config in ``run_dir``, with ``executor``
    (default: in this process, one cell after the other)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, progress: bool | None = None,
                 executor: Executor | None = None) -> None:  # fmt: skip
        # every strategy option written out (defaults included): the run keeps them across versions
        self.cfg = cfg = replace(cfg, strategy_params=resolved_strategy_params(cfg))
        self.run_dir = Path(run_dir)
        self.progress = cfg.progress if progress is None else progress
        self.strategy_names = expand_strategy_names(cfg.loop.strategies)
        self.device = resolve_device(cfg.device)
        self.executor: Executor = executor or InlineExecutor()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def stored_config(run_dir: str | Path) -> RunConfig | None:
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            return None
        return config_from_yaml_text(read_text(path), str(path))

    def _check_dir(self) -> RunConfig | None:
        """The stored config when the run directory already holds this run (read only); another run's
        config is refused. Only the grid (strategies, seeds) may differ."""
        stored = self.stored_config(self.run_dir)
        if stored is None:
            return None
        # a directory written before the options were recorded in full reads with this version's defaults
        stored = replace(stored, strategy_params=resolved_strategy_params(stored))
        a, b = to_dict(stored), to_dict(self.cfg)
        for d in (a, b):
            d.pop("progress", None)
            for k in GRID_KEYS:
                d["loop"].pop(k, None)
        # a strategy the grid adds brings its options; those of the strategies in both must agree
        common = set(a["strategy_params"]) & set(b["strategy_params"])
        for d in (a, b):
            d["strategy_params"] = {k: v for k, v in d["strategy_params"].items() if k in common}
        if a != b:
            raise InputError(
                self.run_dir / "config.yaml",
                f"this run directory holds a run with another config (first difference at '{_diff_key(a, b)}'); "
                "use another --out, or the same config (more seeds or strategies are fine) to resume; "
                "'mgral run --out DIR' alone resumes with the stored config",
            )
        return stored

    def _save_config(self, stored: RunConfig | None) -> None:
        """Write the config, or grow the stored one's grid to the union of both grids."""
        if stored is None:
            save_config(self.cfg, self.run_dir / "config.yaml")
            return
        loop = stored.loop
        grown = replace(loop, strategies=tuple(dict.fromkeys([*loop.strategies, *self.cfg.loop.strategies])),
                        seeds=tuple(dict.fromkeys([*loop.seeds, *self.cfg.loop.seeds])))  # fmt: skip
        params = {**self.cfg.strategy_params, **stored.strategy_params}
        new, raw = replace(stored, loop=grown, strategy_params=params), self.stored_config(self.run_dir)
        if raw is None or to_dict(new) != to_dict(raw):  # a grown grid, or options not yet written out
            save_config(new, self.run_dir / "config.yaml")

    def open(self) -> None:
        """Load (or generate) the data and open the run store."""
        self.pool_ds, self.test_ds = load_run_data(self.cfg.data, self.run_dir / "data")
        self.store = RunStore(self.run_dir / "store.sqlite")

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ main
    def cells(self) -> list[tuple[int, str]]:
        return [(seed, name) for seed in self.cfg.loop.seeds for name in self.strategy_names]

    def done(self, seed: int, name: str) -> bool:
        return self.store.cycle_row(name, seed, self.cfg.loop.cycles - 1) is not None

    def run(self) -> list[dict[str, Any]]:
        # nothing is written before the config, the store and the data have passed their checks: bad input
        # leaves no half-made run directory
        stored = self._check_dir()
        RunStore.check(self.run_dir / "store.sqlite")
        self.pool_ds, self.test_ds = load_run_data(self.cfg.data, self.run_dir / "data")
        self.sizes()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(self.run_dir):
            self._save_config(stored)
            self.store = RunStore(self.run_dir / "store.sqlite")
            try:
                log.info("pool: %s; test: %s", self.pool_ds, self.test_ds)
                todo = [(seed, name) for seed, name in self.cells() if not self.done(seed, name)]
                config = to_dict(self.cfg)
                cell_progress = self.progress and self.executor.workers == 1
                # phase 1: the shared cycle-0 models, once per seed (in parallel across seeds)
                seeds = sorted({seed for seed, _ in todo if not self._cycle0_ready(seed)})
                first = [Cell(str(self.run_dir), config, seed, "", cell_progress) for seed in seeds]
                for _cell, what in self.executor.map_unordered(run_cell, first):
                    log.info("done: %s", what)
                # phase 2: the cells
                cells = [Cell(str(self.run_dir), config, seed, name, cell_progress) for seed, name in todo]
                for cell, what in self.executor.map_unordered(run_cell, cells):
                    log.info("done: %s under seed %d", what, cell.seed)
                    self.write_results()
                self.write_results()
                return self.store.results()
            finally:
                self.close()

    def _cycle0_ready(self, seed: int) -> bool:
        return self._ckpt_path("", seed, 0).is_file()

    def _train_cycle0(self, seed: int) -> None:
        """The supervised cycle-0 model of ``seed``, shared by every strategy that trains supervised."""
        if not self._cycle0_ready(seed):
            self._train(None, "", seed, 0, self.initial_pool(seed))

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

    def _ckpt_path(self, name: str, seed: int, cycle: int, objective: str = "supervised") -> Path:
        """Cycle 0 is trained once per seed and training objective and shared by the strategies using it."""
        who = (
            (name if cycle else "shared")
            if objective == "supervised"
            else (name if cycle else f"shared-{objective}")
        )
        return self.run_dir / "checkpoints" / f"seed{seed}" / who / f"cycle{cycle}.pt"

    def _run_strategy(self, name: str, seed: int) -> None:
        """All cycles of one cell; each step is skipped when the store says it is done."""
        cfg = self.cfg
        _, budget = self.sizes()
        pool = self.initial_pool(seed)
        strategy = build_strategy(name, cfg.strategy_params.get(name))
        state = StrategyState(self.store, f"strategy/{name}/seed{seed}")
        for cycle in range(cfg.loop.cycles):
            if cycle > 0:
                picked = self.store.selection(name, seed, cycle - 1)
                assert picked is not None, "a cycle ran without the previous selection"
                pool.label(picked, cycle)
            last = cycle == cfg.loop.cycles - 1
            row = self.store.cycle_row(name, seed, cycle)
            if row is not None and (last or self.store.selection(name, seed, cycle) is not None):
                continue
            detector, objective, train_stats = self._train(strategy, name, seed, cycle, pool)
            if row is None:
                with timer() as t_eval:
                    idx = np.arange(len(self.test_ds))
                    preds = detector.predict(
                        self.test_ds, idx, batch_size=cfg.train.eval_batch_size, num_workers=cfg.train.num_workers,
                        progress=self.progress, desc="evaluate",
                    )  # fmt: skip
                    value, metrics = evaluate_predictions(self.test_ds, idx, preds, cfg.loop.metric)
                    crash_point("evaluate")
                self.store.record_cycle(
                    name, seed, cycle, n_labeled=len(pool.labeled), map_value=value, metrics=metrics,
                    train_s=train_stats["seconds"], infer_s=None, eval_s=t_eval["s"],
                    train_loss=train_stats.get("final_loss"),
                )  # fmt: skip
                log.info(
                    "[%s seed %d] cycle %d/%d: %d labeled, %s %.4f (train %.1fs, eval %.1fs)", name, seed, cycle + 1,
                    cfg.loop.cycles, len(pool.labeled), cfg.loop.metric, value, train_stats["seconds"], t_eval["s"],
                )  # fmt: skip
                self.write_results()
            if not last:
                self._select(strategy, name, seed, cycle, pool, detector, objective, budget, state)
                if not (self.cfg.loop.keep_checkpoints or self.cfg.loop.warm_start) and cycle > 0:
                    self._ckpt_path(name, seed, cycle, objective.name if objective else "supervised").unlink(
                        missing_ok=True
                    )

    def _train(
        self, strategy: Strategy | None, name: str, seed: int, cycle: int, pool: Pool
    ) -> tuple[Detector, Objective | None, dict[str, float]]:
        """The cycle's detector (trained, or loaded when its checkpoint exists) and the strategy's own
        objective with its trained modules (``None`` for supervised training)."""
        cfg = self.cfg
        labeled = pool.labeled
        view = pool_view(self.pool_ds, pool)
        train_seed = derive_seed(seed, "train", cycle)
        own = None
        if strategy is not None:
            own = strategy.training_objective(view, labeled, pool.unlabeled, cfg.train, seed=train_seed)
        objective: Objective = own if own is not None else Supervised(view, labeled, seed=train_seed,
                                                                      augment=cfg.train.augment)  # fmt: skip
        path = self._ckpt_path(name, seed, cycle, objective.name)
        detector = Detector(
            cfg.detector, self.pool_ds.num_classes, seed=derive_seed(seed, "init"), device=self.device
        )
        if path.is_file():
            state = safe_torch_load(path, self.device)
            detector.load_state_dict(state["detector"])
            objective.bind(detector)
            for k, mod in objective.modules().items():
                mod.load_state_dict(state["objective"][k])
            return detector, own, state["train_stats"]
        if cfg.loop.warm_start and cycle > 0:
            prev = self._ckpt_path(name, seed, cycle - 1, objective.name)
            detector.load_state_dict(safe_torch_load(prev, self.device)["detector"])
        log.info("[%s seed %d] cycle %d: training on %d labeled images", name, seed, cycle + 1, len(labeled))
        stats = fit(detector, objective, cfg.train, checkpoint=path.with_suffix(".train-state"),
                    progress=self.progress, desc="train" if own is None else f"train-{objective.name}")  # fmt: skip
        atomic_torch_save({"detector": detector.state_dict(), "train_stats": stats,
                           "objective": {k: m.state_dict() for k, m in objective.modules().items()}}, path)  # fmt: skip
        return detector, own, stats

    def _select(self, strategy: Strategy, name: str, seed: int, cycle: int, pool: Pool, detector: Detector,
                objective: Objective | None, budget: int, state: StrategyState) -> None:  # fmt: skip
        view = pool_view(self.pool_ds, pool)
        ctx, infer_s = build_context(
            strategy, name, cfg=self.cfg, detector=detector, view=view, unlabeled=pool.unlabeled, labeled=pool.labeled,
            seed=seed, cycle=cycle, state=state, progress=self.progress, objective=objective,
            workdir=self.run_dir / "strategies" / name / f"seed{seed}" / f"cycle{cycle}",
            oracle=self.pool_ds if "oracle" in strategy.needs else None,
        )  # fmt: skip
        with timer() as t:
            crash_point("select")
            sel = strategy.select(ctx, budget)
        setup_s = float(sel.info.get("setup_s", 0.0))
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
        self.store.record_selection(
            name, seed, cycle, picked.tolist(), image_ids, np.asarray(sel.scores, float).tolist(),
            infer_s=infer_s, select_s=t["s"] - setup_s, setup_s=setup_s, info=sel.info,
        )  # fmt: skip
        log.info("[%s seed %d] cycle %d: selected %d images (infer %.1fs, set-up %.1fs, select %.1fs)", name, seed,
                 cycle + 1, budget, infer_s, setup_s, t["s"] - setup_s)  # fmt: skip
        self.write_results()

    def write_results(self) -> None:
        """``results.csv`` (a row per strategy, seed and cycle), ``results_per_class.csv`` (AP of each class)
        and ``selections.csv`` (every pick with its rank and score), from one read of the store."""
        rows, per_class, selections = self.store.snapshot()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))
                    for k, v in row.items()
                }
            )
        atomic_write_text(self.run_dir / "results.csv", buf.getvalue())
        buf = io.StringIO()
        buf.write("strategy,seed,cycle,class,ap\n")
        for strategy, seed, cycle, cls, ap in per_class:
            buf.write(f"{strategy},{seed},{cycle},{json.dumps(cls)},{'' if ap is None else f'{ap:.6g}'}\n")
        atomic_write_text(self.run_dir / "results_per_class.csv", buf.getvalue())
        buf = io.StringIO()
        buf.write("strategy,seed,cycle,rank,image_index,image_id,score\n")
        for r in selections:
            buf.write(",".join(str(v) for v in r[:6]) + f",{r[6]:.6g}\n")
        atomic_write_text(self.run_dir / "selections.csv", buf.getvalue())

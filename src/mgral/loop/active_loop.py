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

from mgral.config import RunConfig, config_from_yaml_text, save_config, to_dict
from mgral.data.pool import Pool
from mgral.data.sources import load_run_data
from mgral.detectors.detector import Detector
from mgral.errors import InputError
from mgral.loop.context import build_context
from mgral.loop.store import RESULT_COLUMNS, RunStore
from mgral.metrics.evaluate import evaluate_predictions
from mgral.strategies.base import (
    Strategy,
    StrategyState,
    build_strategy,
    expand_strategy_names,
    pool_view,
    validate_strategy_params,
)
from mgral.training.engine import Objective, fit
from mgral.training.supervised import Supervised
from mgral.utils import (
    atomic_torch_save,
    atomic_write_text,
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
        validate_strategy_params(cfg)
        self.strategy_names = expand_strategy_names(cfg.loop.strategies)
        self.device = resolve_device(cfg.device)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def stored_config(run_dir: str | Path) -> RunConfig | None:
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            return None
        return config_from_yaml_text(read_text(path), str(path))

    def _check_dir(self) -> bool:
        """Whether the run directory already holds this run; another run's config is refused."""
        stored = self.stored_config(self.run_dir)
        if stored is None:
            return False
        a, b = to_dict(stored), to_dict(self.cfg)
        a.pop("progress", None), b.pop("progress", None)
        if a != b:
            raise InputError(
                self.run_dir / "config.yaml",
                f"this run directory holds a run with another config (first difference at '{_diff_key(a, b)}'); "
                "use another --out, or the same config to resume",
            )
        return True

    # ------------------------------------------------------------------ main
    def run(self) -> list[dict[str, Any]]:
        # nothing is written before the data has loaded: bad data leaves no half-made run directory
        resuming = self._check_dir()
        RunStore.check(self.run_dir / "store.sqlite")
        self.pool_ds, self.test_ds = load_run_data(self.cfg.data, self.run_dir / "data")
        log.info("pool: %s; test: %s", self.pool_ds, self.test_ds)
        if not resuming:
            save_config(self.cfg, self.run_dir / "config.yaml")
        self.store = RunStore(self.run_dir / "store.sqlite")  # checks an existing store before writing to it
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

    def _ckpt_path(self, name: str, seed: int, cycle: int, objective: str = "supervised") -> Path:
        """Cycle 0 is trained once per seed and training objective and shared by the strategies using it."""
        who = (
            (name if cycle else "shared")
            if objective == "supervised"
            else (name if cycle else f"shared-{objective}")
        )
        return self.run_dir / "checkpoints" / f"seed{seed}" / who / f"cycle{cycle}.pt"

    def _run_strategy(self, name: str, seed: int) -> None:
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
        self, strategy: Strategy, name: str, seed: int, cycle: int, pool: Pool
    ) -> tuple[Detector, Objective | None, dict[str, float]]:
        """The cycle's detector (trained, or loaded when its checkpoint exists) and the strategy's own
        objective with its trained modules (``None`` for supervised training)."""
        cfg = self.cfg
        labeled = pool.labeled
        view = pool_view(self.pool_ds, pool)
        train_seed = derive_seed(seed, "train", cycle)
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

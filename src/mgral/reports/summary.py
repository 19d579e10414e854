"""The numbers of a run: curves per strategy (mean and spread over seeds), normalised areas under them,
paired comparisons over seeds, and where the time went."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from mgral.errors import InputError
from mgral.loop.store import RunStore

TIME_PARTS = ("train_s", "infer_s", "setup_s", "select_s", "eval_s")


def load_results(run_dir: str | Path) -> list[dict[str, Any]]:
    run_dir = Path(run_dir)
    db = run_dir / "store.sqlite"
    if not db.is_file():
        raise InputError(run_dir, "not a run directory (no store.sqlite)")
    store = RunStore(db)
    try:
        return store.results()
    finally:
        store.close()


def curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy: ``n_labeled``, ``mean``, ``std``, ``seeds`` (count) per cycle."""
    by: dict[str, dict[int, dict[int, tuple[int, float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["map"] is not None:
            by[r["strategy"]][r["cycle"]][r["seed"]] = (r["n_labeled"], r["map"])
    out = {}
    for strategy, cycles in by.items():
        cs = sorted(cycles)
        n = np.array([next(iter(cycles[c].values()))[0] for c in cs])
        vals = [np.array([v[1] for v in cycles[c].values()]) for c in cs]
        out[strategy] = {
            "cycle": np.array(cs), "n_labeled": n, "mean": np.array([v.mean() for v in vals]),
            "std": np.array([v.std(ddof=0) for v in vals]), "seeds": np.array([len(v) for v in vals]),
        }  # fmt: skip
    return out


def normalized_auc(n_labeled: np.ndarray, values: np.ndarray) -> float:
    """Area under the curve (trapezoid) divided by the labeled-count range: the curve's mean height."""
    if len(n_labeled) < 2:
        return float(values[0]) if len(values) else float("nan")
    return float(np.trapezoid(values, n_labeled) / (n_labeled[-1] - n_labeled[0]))


def _complete_curves(rows: list[dict[str, Any]], strategy: str) -> dict[int, list[tuple[int, float]]]:
    """Each seed's (labeled images, mAP) points, sorted, for the seeds whose curve reached every cycle the
    strategy reached."""
    per_seed: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r["strategy"] == strategy and r["map"] is not None:
            per_seed[r["seed"]].append((r["n_labeled"], r["map"]))
    longest = max((len(v) for v in per_seed.values()), default=0)
    return {seed: sorted(pts) for seed, pts in per_seed.items() if len(pts) == longest}


def seed_auc_map(rows: list[dict[str, Any]], strategy: str) -> dict[int, float]:
    """Normalised AUC of each seed whose curve reached every cycle the strategy reached."""
    return {
        seed: normalized_auc(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
        for seed, pts in _complete_curves(rows, strategy).items()
    }


def seed_aucs(rows: list[dict[str, Any]], strategy: str) -> np.ndarray:
    return np.array(list(seed_auc_map(rows, strategy).values()))


def seed_final_map(rows: list[dict[str, Any]], strategy: str) -> dict[int, float]:
    """The mAP of each seed's last cycle, for the same seeds as :func:`seed_auc_map`."""
    return {seed: pts[-1][1] for seed, pts in _complete_curves(rows, strategy).items()}


def paired_difference(
    rows: list[dict[str, Any]], strategy: str, other: str, *, final: bool = False
) -> dict[str, Any]:
    """AUC of ``strategy`` minus that of ``other``, paired by seed: mean, Student-t 95% interval, two-sided
    p-value of the paired t-test, a percentile bootstrap 95% interval over seeds (``ci_bootstrap``: 10,000
    resamples, generator seed 0, so the same rows give the same interval; it assumes no normality, which
    matters when a few seeds carry the mean), and the per-seed differences. Seeds are paired because every
    strategy of a seed starts from the same labeled set and cycle-0 model. ``final=True`` compares the last
    cycle's mAP instead of the area under the curve."""
    per_seed = seed_final_map if final else seed_auc_map
    a, b = per_seed(rows, strategy), per_seed(rows, other)
    seeds = sorted(set(a) & set(b))
    diffs = np.array([a[s] - b[s] for s in seeds])
    out: dict[str, Any] = {
        "n": len(seeds),
        "diffs": diffs.tolist(),
        "mean": float(diffs.mean()) if len(diffs) else None,
    }
    if len(diffs) >= 2:
        sd = float(diffs.std(ddof=1))
        half = float(stats.t.ppf(0.975, len(diffs) - 1) * sd / np.sqrt(len(diffs)))
        out["ci"] = [out["mean"] - half, out["mean"] + half]
        out["p"] = (
            float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
            if sd > 0
            else (0.0 if out["mean"] else 1.0)
        )
        if sd > 0:
            boot = stats.bootstrap(
                (diffs,), np.mean, n_resamples=10_000, method="percentile",
                random_state=np.random.default_rng(0),
            ).confidence_interval  # fmt: skip
            out["ci_bootstrap"] = [float(boot.low), float(boot.high)]
        else:
            out["ci_bootstrap"] = [out["mean"], out["mean"]]
    return out


def time_breakdown(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per strategy, seconds per seed spent in training, pool inference, strategy set-up, selection and
    evaluation (summed over cycles, averaged over seeds)."""
    sums: dict[str, dict[int, dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: dict.fromkeys(TIME_PARTS, 0.0))
    )
    for r in rows:
        for k in TIME_PARTS:
            sums[r["strategy"]][r["seed"]][k] += float(r.get(k) or 0.0)
    return {
        s: {k: float(np.mean([d[k] for d in per.values()])) for k in TIME_PARTS} for s, per in sums.items()
    }


def summary(rows: list[dict[str, Any]], reference: str = "random") -> dict[str, Any]:
    """Everything the report's table shows, as plain data."""
    cs = curves(rows)
    out: dict[str, Any] = {"strategies": {}, "reference": reference if reference in cs else None}
    for s, c in sorted(cs.items()):
        aucs = seed_aucs(rows, s)
        row: dict[str, Any] = {
            "n_labeled": c["n_labeled"].tolist(), "mean": c["mean"].tolist(), "std": c["std"].tolist(),
            "seeds": c["seeds"].tolist(), "auc_mean": float(aucs.mean()) if len(aucs) else None,
            "auc_std": float(aucs.std()) if len(aucs) else None, "auc_seeds": len(aucs),
        }  # fmt: skip
        if reference in cs and s != reference:
            row["vs_reference"] = paired_difference(rows, s, reference)
        out["strategies"][s] = row
    out["time"] = time_breakdown(rows)
    return out


def markdown_table(rows: list[dict[str, Any]], metric: str = "mAP", reference: str = "random") -> str:
    s = summary(rows, reference)
    if not s["strategies"]:
        return "(no finished cycles yet)\n"
    sizes = sorted({int(n) for r in s["strategies"].values() for n in r["n_labeled"]})
    ref = s["reference"]
    head = f"| strategy | {' | '.join(str(n) for n in sizes)} | AUC |" + (
        f" AUC - {ref} (95% CI, p) |" if ref else ""
    )
    lines = [f"{metric} (mean ± std over seeds) by number of labeled images; AUC: normalised area under the curve", "",
             head, "|" + " --- |" * (len(sizes) + 2 + (1 if ref else 0))]  # fmt: skip
    for name, r in s["strategies"].items():
        cells = []
        for n in sizes:
            if n in r["n_labeled"]:
                k = r["n_labeled"].index(n)
                cells.append(
                    f"{r['mean'][k]:.4f} ± {r['std'][k]:.4f}" if r["seeds"][k] > 1 else f"{r['mean'][k]:.4f}"
                )
            else:
                cells.append("")
        auc = "" if r["auc_mean"] is None else (f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f}" if r["auc_seeds"] > 1
                                                 else f"{r['auc_mean']:.4f}")  # fmt: skip
        line = f"| {name} | {' | '.join(cells)} | {auc} |"
        if ref:
            line += f" {_paired(r.get('vs_reference'))} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _paired(d: dict[str, Any] | None) -> str:
    if d is None or d["mean"] is None:
        return ""
    if "ci" not in d:
        return f"{d['mean']:+.4f} (1 seed)"
    return f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}], p={d['p']:.2g}, {d['n']} seeds"


__all__ = ["curves", "markdown_table", "normalized_auc", "paired_difference", "seed_aucs", "seed_final_map", "summary",
           "time_breakdown"]  # fmt: skip

"""Curves of mAP against labeled images per strategy (mean and std over seeds) and their tables."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mgral.errors import InputError
from mgral.loop.store import RunStore
from mgral.utils import atomic_write_bytes, atomic_write_text


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
    """Per strategy: ``n_labeled``, ``mean``, ``std``, ``seeds`` (count) per cycle, and per-seed values."""
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


def seed_aucs(rows: list[dict[str, Any]], strategy: str) -> np.ndarray:
    """Normalised AUC of each seed's curve that reached every cycle of the strategy."""
    per_seed: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r["strategy"] == strategy and r["map"] is not None:
            per_seed[r["seed"]].append((r["n_labeled"], r["map"]))
    longest = max((len(v) for v in per_seed.values()), default=0)
    out = []
    for pts in per_seed.values():
        if len(pts) == longest:
            pts.sort()
            out.append(normalized_auc(np.array([p[0] for p in pts]), np.array([p[1] for p in pts])))
    return np.array(out)


def markdown_table(rows: list[dict[str, Any]], metric: str = "mAP") -> str:
    cs = curves(rows)
    if not cs:
        return "(no finished cycles yet)\n"
    sizes = sorted({int(n) for c in cs.values() for n in c["n_labeled"]})
    head = f"| strategy | {' | '.join(str(s) for s in sizes)} | AUC |"
    lines = [
        f"{metric} (mean ± std over seeds) by number of labeled images",
        "",
        head,
        "|" + " --- |" * (len(sizes) + 2),
    ]
    for strategy, c in sorted(cs.items()):
        cells = []
        for s in sizes:
            hit = np.nonzero(c["n_labeled"] == s)[0]
            if len(hit):
                k = hit[0]
                cells.append(
                    f"{c['mean'][k]:.4f} ± {c['std'][k]:.4f}" if c["seeds"][k] > 1 else f"{c['mean'][k]:.4f}"
                )
            else:
                cells.append("")
        aucs = seed_aucs(rows, strategy)
        auc = (
            f"{aucs.mean():.4f} ± {aucs.std():.4f}"
            if len(aucs) > 1
            else (f"{aucs[0]:.4f}" if len(aucs) else "")
        )
        lines.append(f"| {strategy} | {' | '.join(cells)} | {auc} |")
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "", metric: str = "mAP") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for strategy, c in sorted(curves(rows).items()):
        ax.plot(c["n_labeled"], c["mean"], marker="o", label=strategy)
        if (c["seeds"] > 1).any():
            ax.fill_between(c["n_labeled"], c["mean"] - c["std"], c["mean"] + c["std"], alpha=0.2)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} against labeled images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(run_dir: str | Path, metric: str = "mAP", title: str = "") -> tuple[Path, Path, str]:
    """Write ``report.png`` and ``report.md`` into ``run_dir``; return their paths and the table."""
    run_dir = Path(run_dir)
    rows = load_results(run_dir)
    if not rows:
        raise InputError(run_dir, "the run has no finished cycle yet")
    table = markdown_table(rows, metric)
    png, md = run_dir / "report.png", run_dir / "report.md"
    plot_curves(rows, png, title, metric)
    atomic_write_text(md, f"# {title or run_dir.name}\n\n![curves](report.png)\n\n{table}")
    return png, md, table

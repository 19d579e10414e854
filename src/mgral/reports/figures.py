"""The report's figures (matplotlib, written as PNG and SVG): curves, first-cycle selections, class
histograms of the selections, the time breakdown, and MGRAL's search and estimator fidelity."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mgral.data.dataset import DetectionDataset
from mgral.utils import atomic_write_bytes


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, folder: Path, name: str) -> dict[str, Any]:
    """Write ``name.png`` and ``name.svg``; returns their paths and the PNG's bytes (for embedding)."""
    plt = _plt()
    out: dict[str, Any] = {"name": name}
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110)
        atomic_write_bytes(folder / f"{name}.{fmt}", buf.getvalue())
        out[fmt] = folder / f"{name}.{fmt}"
        if fmt == "png":
            out["png_bytes"] = buf.getvalue()
    plt.close(fig)
    return out


def curves_figure(summary: dict[str, Any], metric: str, title: str) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for name, r in summary["strategies"].items():
        n, m, s = np.array(r["n_labeled"]), np.array(r["mean"]), np.array(r["std"])
        ax.plot(n, m, marker="o", label=name, lw=2.2 if name == "mgral" else 1.4)
        if max(r["seeds"]) > 1:
            ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} against labeled images (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def selections_figure(dataset: DetectionDataset, picks: dict[str, list[int]], per_strategy: int = 8) -> Any:
    """The first cycle's selected images of each strategy (first seed), ground-truth boxes drawn."""
    plt = _plt()
    names = sorted(picks)
    fig, axes = plt.subplots(
        len(names), per_strategy, figsize=(1.4 * per_strategy, 1.55 * len(names)), squeeze=False
    )
    colors = plt.get_cmap("tab10")
    for r, name in enumerate(names):
        for c in range(per_strategy):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if c >= len(picks[name]):
                ax.axis("off")
                continue
            i = picks[name][c]
            ax.imshow(np.asarray(dataset.load_image(i)))
            rec = dataset[i]
            for box, label in zip(rec.boxes, rec.labels):
                x1, y1, x2, y2 = box
                ax.add_patch(
                    plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1, color=colors(int(label) % 10))
                )
    fig.suptitle(f"first cycle's selections (ranks 1-{per_strategy}), ground truth drawn", fontsize=9)
    fig.tight_layout()
    return fig


def class_histogram_figure(counts: dict[str, np.ndarray], class_names: list[str]) -> Any:
    """Ground-truth objects of each class among each strategy's selected images, as shares."""
    plt = _plt()
    names = sorted(counts)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(class_names) * max(1, len(names)) / 3), 3.8))
    x = np.arange(len(class_names))
    for k, name in enumerate(names):
        share = counts[name] / max(1, counts[name].sum())
        ax.bar(x + k * width, share, width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share of selected objects")
    ax.set_title("classes of the selected images (all cycles and seeds)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


def time_figure(times: dict[str, dict[str, float]]) -> Any:
    plt = _plt()
    names = sorted(times)
    parts = ("train_s", "infer_s", "setup_s", "select_s", "eval_s")
    fig, ax = plt.subplots(figsize=(6.8, 0.45 * len(names) + 1.4))
    left = np.zeros(len(names))
    for part in parts:
        vals = np.array([times[n][part] for n in names])
        ax.barh(names, vals, left=left, label=part.removesuffix("_s"))
        left += vals
    ax.set_xlabel("seconds per seed (all cycles)")
    ax.set_title("where the time goes")
    ax.legend(fontsize=8, ncol=5, loc="lower right")
    fig.tight_layout()
    return fig


def search_figure(infos: list[dict[str, Any]]) -> Any:
    """MGRAL's search per cycle: the reward of each iteration (estimated or true) and the baseline."""
    plt = _plt()
    fig, axes = plt.subplots(1, max(1, len(infos)), figsize=(3.2 * max(1, len(infos)), 3.0), squeeze=False)
    for ax, (k, info) in zip(axes[0], enumerate(infos)):
        rewards = np.array(info.get("rewards", []))
        kinds = np.array(info.get("kinds", ["?"] * len(rewards)))
        it = np.arange(len(rewards))
        true = kinds == "true"
        ax.plot(it[~true], rewards[~true], ".", ms=3, label="estimated")
        ax.plot(it[true], rewards[true], "o", ms=4, label="true")
        if len(rewards) >= 10:
            ax.plot(
                it, np.convolve(rewards, np.ones(10) / 10, mode="same"), lw=1, color="k", label="mean of 10"
            )
        ax.set_title(f"cycle {k + 1}", fontsize=9)
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("reward (centred on the cycle)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("MGRAL search: reward over iterations (first seed)", fontsize=9)
    fig.tight_layout()
    return fig


def fidelity_figure(pairs: np.ndarray, rho: float | None) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    if len(pairs):
        ax.plot(pairs[:, 1], pairs[:, 0], "o", ms=4, alpha=0.7)
        lo, hi = float(pairs.min()), float(pairs.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("true reward (proxy)")
    ax.set_ylabel("estimate before it was known")
    ax.set_title(f"estimator fidelity on policy batches (Spearman {rho:.2f})" if rho is not None else
                 "estimator fidelity on policy batches", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


__all__ = ["class_histogram_figure", "curves_figure", "fidelity_figure", "save", "search_figure",
           "selections_figure", "time_figure"]  # fmt: skip

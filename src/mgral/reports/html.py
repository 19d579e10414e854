"""``mgral report RUN_DIR``: a self-contained ``report.html`` (figures embedded, also written beside it as
PNG and SVG under ``report/``), ``report.md`` and ``summary.json``.

The report reads the run store in one transaction, so it can be made while the run is still going: it then
shows the cycles finished so far.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from mgral.config import RunConfig, config_from_yaml_text
from mgral.errors import InputError
from mgral.loop.store import RunStore
from mgral.reports import figures
from mgral.reports.summary import markdown_table, summary
from mgral.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

METRIC_LABELS = {"voc07": "mAP (VOC07 11-point)", "voc": "mAP (VOC all-point)", "coco": "AP (COCO)"}

# marks on <body> how many figures the page has and how many the browser decoded (checked by the tests)
CHECK = """
(function () {
  const imgs = Array.from(document.querySelectorAll("img[data-figure]"));
  const mark = () => {
    document.body.dataset.figures = imgs.length;
    document.body.dataset.loaded = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  };
  imgs.forEach((i) => i.addEventListener("load", mark));
  window.addEventListener("load", mark);
  mark();
})();
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; } td, th { border: 1px solid #ccc; padding: 3px 7px; }
th { background: #f3f3f3; } img { max-width: 100%; } .note { color: #666; font-size: 0.85rem; }
"""


def _load(run_dir: Path) -> tuple[RunConfig | None, list[dict[str, Any]], list[tuple], dict]:
    db = run_dir / "store.sqlite"
    if not db.is_file():
        raise InputError(run_dir, "not a run directory (no store.sqlite)")
    cfg_path = run_dir / "config.yaml"
    cfg = config_from_yaml_text(cfg_path.read_text(), str(cfg_path)) if cfg_path.is_file() else None
    store = RunStore(db)
    try:
        rows, _, selections = store.snapshot()
        infos = {
            (s, seed, c): store.selection_info(s, seed, c)
            for s, seed, c in {(r[0], r[1], r[2]) for r in selections}
        }
    finally:
        store.close()
    return cfg, rows, selections, infos


def _img(fig: dict[str, Any], alt: str) -> str:
    data = base64.b64encode(fig["png_bytes"]).decode()
    rel = f"report/{fig['name']}"
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" data-figure="{fig["name"]}">'
            f'<figcaption class="note">{html.escape(alt)} — <a href="{rel}.png">PNG</a>, '
            f'<a href="{rel}.svg">SVG</a></figcaption></figure>')  # fmt: skip


def write_report(run_dir: str | Path, title: str | None = None) -> tuple[Path, str]:
    """Write the report of ``run_dir``; returns the path of ``report.html`` and the markdown table."""
    run_dir = Path(run_dir)
    cfg, rows, selections, infos = _load(run_dir)
    if not rows:
        raise InputError(run_dir, "the run has no finished cycle yet")
    metric = METRIC_LABELS.get(cfg.loop.metric, "mAP") if cfg else "mAP"
    title = title or (cfg.name if cfg else run_dir.name)
    folder = run_dir / "report"
    folder.mkdir(exist_ok=True)
    s = summary(rows)
    table = markdown_table(rows, metric)
    parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    parts.append(f'<p class="note">{len(rows)} finished cycles; {metric} on the test split.</p>')
    parts.append("<h2>Curves</h2>" + _img(figures.save(figures.curves_figure(s, metric, ""), folder, "curves"),
                                          f"{metric} against labeled images, mean ± std over seeds"))  # fmt: skip
    parts.append("<h2>Summary</h2>" + _table_html(s, metric))
    dataset = _dataset(cfg, run_dir)
    first_seed = min((r["seed"] for r in rows), default=0)
    picks: dict[str, list[int]] = {}
    per_class: dict[str, np.ndarray] = {}
    for strat, seed, cycle, _rank, index, _image_id, _score in selections:
        if seed == first_seed and cycle == 0:
            picks.setdefault(strat, []).append(int(index))
        if dataset is not None:
            per_class.setdefault(strat, np.zeros(dataset.num_classes))
            np.add.at(per_class[strat], dataset[int(index)].labels, 1)
    if dataset is not None and picks:
        try:
            fig = figures.selections_figure(dataset, picks)
            parts.append("<h2>First-cycle selections</h2>" + _img(figures.save(fig, folder, "selections"),
                                                                   "the first images each strategy picked"))  # fmt: skip
        except InputError as exc:  # images moved since the run: the rest of the report still helps
            log.warning("report: no selection grid (%s)", exc)
        parts.append("<h2>Classes of the selections</h2>" + _img(
            figures.save(figures.class_histogram_figure(per_class, dataset.class_names), folder, "classes"),
            "share of each class among the ground-truth objects of the selected images"))  # fmt: skip
    parts.append("<h2>Time</h2>" + _img(figures.save(figures.time_figure(s["time"]), folder, "time"),
                                        "seconds per seed: train, pool inference, strategy set-up, selection, "
                                        "evaluation") + _time_table(s["time"]))  # fmt: skip
    mgral = sorted((k, v) for k, v in infos.items() if k[0] == "mgral" and v)
    if mgral:
        seed0 = min(k[1] for k, _ in mgral)
        search = [v for k, v in mgral if k[1] == seed0]
        pairs = np.array([p for _, v in mgral for p in v.get("fidelity", [])], float).reshape(-1, 2)
        varied = len(pairs) > 2 and np.ptp(pairs[:, 0]) > 0 and np.ptp(pairs[:, 1]) > 0
        rho = float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic) if varied else None
        parts.append("<h2>MGRAL</h2>" + _img(figures.save(figures.search_figure(search), folder, "mgral_search"),
                                             "reward over the search's iterations, per cycle")
                     + _img(figures.save(figures.fidelity_figure(pairs, rho), folder, "mgral_fidelity"),
                            "the estimator's value of a policy batch against its true (proxy) reward"))  # fmt: skip
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}<script>{CHECK}</script></body></html>\n")  # fmt: skip
    atomic_write_text(run_dir / "report.html", page)
    atomic_write_text(run_dir / "report.md", f"# {title}\n\n![curves](report/curves.png)\n\n{table}")
    atomic_write_json(run_dir / "summary.json", s)
    return run_dir / "report.html", table


def _dataset(cfg: RunConfig | None, run_dir: Path) -> Any:
    """The run's pool (annotations and images) when it can be read; ``None`` otherwise."""
    if cfg is None:
        return None
    from mgral.data.sources import load_run_data

    try:
        return load_run_data(cfg.data, run_dir / "data")[0]
    except InputError as exc:
        log.warning("report: the pool is not readable here (%s); no image figures", exc)
        return None


def _table_html(s: dict[str, Any], metric: str) -> str:
    sizes = sorted({int(n) for r in s["strategies"].values() for n in r["n_labeled"]})
    ref = s["reference"]
    head = "".join(f"<th>{n}</th>" for n in sizes)
    out = [f"<table><tr><th>strategy</th>{head}<th>AUC</th>" + (f"<th>AUC − {ref} (95% CI), p</th>" if ref else "")
           + "</tr>"]  # fmt: skip
    for name, r in s["strategies"].items():
        cells = ""
        for n in sizes:
            if n in r["n_labeled"]:
                k = r["n_labeled"].index(n)
                cells += f"<td>{r['mean'][k]:.4f} ± {r['std'][k]:.4f}</td>"
            else:
                cells += "<td></td>"
        auc = "" if r["auc_mean"] is None else f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f}"
        d = r.get("vs_reference")
        paired = ""
        if ref:
            if d and d.get("ci"):
                paired = f"<td>{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}], p={d['p']:.2g} ({d['n']} seeds)</td>"
            else:
                paired = "<td></td>"
        out.append(f"<tr><td>{html.escape(name)}</td>{cells}<td>{auc}</td>{paired}</tr>")
    out.append("</table>")
    out.append(f'<p class="note">{metric}, mean ± std over seeds; AUC: area under the curve divided by the '
               "labeled range; paired over seeds (same initial set and cycle-0 model), Student-t interval.</p>")  # fmt: skip
    return "".join(out)


def _time_table(times: dict[str, dict[str, float]]) -> str:
    cols = ("train_s", "infer_s", "setup_s", "select_s", "eval_s")
    head = "".join(f"<th>{c.removesuffix('_s')}</th>" for c in cols)
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>"
        + "".join(f"<td>{t[c]:.1f}</td>" for c in cols)
        + f"<td>{sum(t.values()):.1f}</td></tr>"
        for n, t in sorted(times.items())
    )
    return f"<table><tr><th>strategy</th>{head}<th>total</th></tr>{rows}</table>"


__all__ = ["write_report"]

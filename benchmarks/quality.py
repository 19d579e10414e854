"""Strategies compared over seeds on the two CPU settings, with paired differences (issues: MGRAL's quality,
the baselines, the CPU benchmark).

    .venv/bin/python benchmarks/quality.py run hard --seeds 0 1 2 3 4 --strategies random entropy coreset mgral
    .venv/bin/python benchmarks/quality.py run redundant --seeds 0 1 2          # every strategy (cpu-bench)
    .venv/bin/python benchmarks/quality.py summary hard
    # cells computed in another directory (another process, or recomputed after a change to mgral):
    .venv/bin/python benchmarks/quality.py run hard --seeds 0 1 2 3 4 --strategies mgral --out DIR
    .venv/bin/python benchmarks/quality.py merge hard DIR --replace mgral

``hard`` is the ``demo`` preset (hard shapes, 100 + 3 x 100 labeled images); ``redundant`` is the
``cpu-bench`` preset (the hard shapes as short videos with a longer tail, 100 + 4 x 100);
``redundant-wide`` is the same measured on a test split of 1,500 images instead of 300. A setting's run
directory (``benchmarks/results/quality-hard``, ``benchmarks/results/cpu-bench``) grows with every
invocation (more seeds, more strategies) and resumes after an interruption; ``summary`` reads it and writes
``benchmarks/results/quality_<setting>.json``: per strategy the normalised area under the mAP curve (mean,
std, per seed), its paired difference to random and to the best of random/entropy/coreset with a Student-t
95% interval over seeds, the same paired difference on the last cycle's mAP (a secondary read), and the
whole-run time per seed against entropy's. ``resplit DIR --n 300 --json F`` evaluates every kept checkpoint of
DIR again on the first 300 test images, to read a wide run on the narrow split; ``variants A B --json F``
pairs by seed one strategy's runs in two directories (two settings of its options).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np

SETTINGS = {
    "hard": ("demo", "benchmarks/results/quality-hard"),
    "redundant": ("cpu-bench", "benchmarks/results/cpu-bench"),
    "redundant-wide": ("cpu-bench", "benchmarks/results/quality-redundant-wide"),
}
# The video-like pool's 300-image test split holds only 55 scenes, about 55 independent images: the
# `wide` setting measures the same runs (the pool and every model are unchanged) on 1,500 test images, 257
# scenes, a superset of the 300 (benchmarks/RESULTS.md, "The video-like pool on a wide test split").
OVERRIDES = {"redundant-wide": ("data.synthetic.n_test=1500",)}
BASELINES = ("random", "entropy", "coreset")


def cmd_run(args: argparse.Namespace) -> None:
    from mgral.config import load_config
    from mgral.loop.active_loop import ActiveLearningRun
    from mgral.loop.executors import make_executor

    preset, out = SETTINGS[args.setting]
    out = args.out or out
    seeds = "[" + ",".join(map(str, args.seeds)) + "]"
    strategies = "[" + ",".join(args.strategies) + "]"
    cfg = load_config(preset=preset, overrides=["device=cpu", "progress=false", f"loop.seeds={seeds}",
                                                f"loop.strategies={strategies}",
                                                *OVERRIDES.get(args.setting, ()), *args.set])  # fmt: skip
    run = ActiveLearningRun(cfg, out)
    run.executor = make_executor("local", args.workers, tasks=len(run.cells()), threads=args.threads)
    try:
        run.run()
    finally:
        run.executor.close()
    if not args.out:
        cmd_summary(args)


MERGED = {  # file -> the columns that name a row (the others are values)
    "results.csv": ("strategy", "seed", "cycle"),
    "results_per_class.csv": ("strategy", "seed", "cycle", "class"),
    "selections.csv": ("strategy", "seed", "cycle", "rank"),
}
TIMINGS = {"train_s", "infer_s", "setup_s", "select_s", "eval_s"}
OWN_CYCLE0 = {"learning_loss", "mial"}  # they train their own cycle-0 model (an objective of their own)


def cmd_merge(args: argparse.Namespace) -> None:
    """Add the cells of another run directory of the same setting (computed later, for example after the
    first directory's store was lost) to the setting's CSV files. A cell is a deterministic function of
    (config, strategy, seed, threads), so a row present in both must be equal apart from its timings, and
    every seed's cycle-0 mAP (one shared cycle-0 model per seed) must agree; otherwise nothing is written.
    ``--replace S ...`` first drops strategy S's rows, store cells and checkpoints (S was recomputed after a
    change to it). The setting's store gets the extra store's cells too, so its report shows them all."""
    import csv

    out = args.into or SETTINGS[args.setting][1]
    created = not (Path(out) / "results.csv").is_file()
    if created:  # a new setting directory starts as a copy of the first
        Path(out).mkdir(parents=True, exist_ok=True)
        for name in (*MERGED, "config.yaml"):
            shutil.copyfile(Path(args.extra) / name, Path(out) / name)
        if (Path(args.extra) / "store.sqlite").is_file():  # the report reads the store
            import sqlite3

            with (
                sqlite3.connect(Path(args.extra) / "store.sqlite") as src,
                sqlite3.connect(Path(out) / "store.sqlite") as dst,
            ):
                src.backup(dst)
    tables, checked = {}, 0
    replace = set(args.replace)
    for name, keys in MERGED.items():
        with open(Path(out) / name) as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = {tuple(r[k] for k in keys): r for r in reader if r["strategy"] not in replace}
        with open(Path(args.extra) / name) as f:
            for r in csv.DictReader(f):
                key = tuple(r[k] for k in keys)
                if key in rows:
                    a, b = ({k: v for k, v in x.items() if k not in TIMINGS} for x in (rows[key], r))
                    if a != b:
                        raise SystemExit(f"{args.extra}/{name}: row {key} differs from {out}: {a} != {b}")
                    checked += 1
                else:
                    rows[key] = r
        tables[name] = (fields, [rows[k] for k in sorted(rows)])
    cycle0: dict[str, set[str]] = {}
    for r in tables["results.csv"][1]:
        if r["cycle"] == "0" and r["strategy"] not in OWN_CYCLE0:
            cycle0.setdefault(r["seed"], set()).add(r["map"])
    if any(len(v) > 1 for v in cycle0.values()):
        raise SystemExit(f"the cycle-0 mAP of a seed differs between strategies: {cycle0}")
    for name, (fields, rows) in tables.items():
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        (Path(out) / name).write_text(buf.getvalue())
    cells = {(r["strategy"], r["seed"]) for r in tables["results.csv"][1]}
    store, extra_store = Path(out) / "store.sqlite", Path(args.extra) / "store.sqlite"
    if store.is_file():  # the store follows the CSV (the report reads the store)
        import sqlite3

        tables_where = {
            "cycles": "",
            "selections": "",
            "selection_info": "",
            "kv": " WHERE scope LIKE 'strategy/%'",
        }
        with sqlite3.connect(store) as db:
            for s in sorted(replace):
                for table in ("cycles", "selections", "selection_info"):
                    db.execute(f"DELETE FROM {table} WHERE strategy = ?", (s,))
                db.execute("DELETE FROM kv WHERE scope LIKE ?", (f"strategy/{s}/%",))
            if extra_store.is_file():
                db.execute("ATTACH DATABASE ? AS extra", (str(extra_store),))
                for table, where in tables_where.items():
                    cols = ", ".join(r[1] for r in db.execute(f"PRAGMA main.table_info({table})"))
                    db.execute(
                        f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM extra.{table}{where}"
                    )
        db.close()
    for s in replace:  # a stale checkpoint would be resumed from
        for d in (Path(out) / "checkpoints").glob(f"seed*/{s}"):
            shutil.rmtree(d)
        shutil.rmtree(Path(out) / "strategies" / s, ignore_errors=True)
    print(
        (
            f"created {out} from {args.extra}: {len(cells)} cells"
            if created
            else f"merged {args.extra} into {out}: {len(cells)} cells; {checked} rows in both, equal"
        )
        + (f"; replaced {', '.join(sorted(replace))}" if replace else "")
    )


def csv_results(out: str) -> list[dict]:
    """The rows of ``results.csv`` (what `merge` grows and git keeps), typed as the store gives them."""
    import csv

    with open(Path(out) / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seed"], r["cycle"], r["n_labeled"] = int(r["seed"]), int(r["cycle"]), int(r["n_labeled"])
        for k in ("map", *TIMINGS):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    return rows


def cmd_summary(args: argparse.Namespace) -> None:
    from mgral.reports.html import write_report
    from mgral.reports.summary import (
        load_results,
        paired_difference,
        seed_auc_map,
        seed_final_map,
        time_breakdown,
    )

    out = getattr(args, "dir", None) or SETTINGS[args.setting][1]
    rows = csv_results(out) if (Path(out) / "results.csv").is_file() else load_results(out)
    strategies = sorted({r["strategy"] for r in rows})
    aucs = {s: seed_auc_map(rows, s) for s in strategies}
    times = time_breakdown(rows)
    summary: dict = {"setting": args.setting, "run_dir": out, "strategies": {}}
    for s in strategies:
        a = aucs[s]
        summary["strategies"][s] = {"auc_mean": float(np.mean(list(a.values()))), "auc_std": float(np.std(list(a.values()))),
                                    "seeds": sorted(a), "aucs": a, "seconds_per_seed": sum(times[s].values()),
                                    "time": times[s]}  # fmt: skip
        if s != "random" and "random" in aucs:
            summary["strategies"][s]["vs_random"] = paired_difference(rows, s, "random")
    if "mgral" in aucs:
        seeds = set(aucs["mgral"])
        base = [b for b in BASELINES if b in aucs and seeds <= set(aucs[b])]
        best = max(base, key=lambda b: np.mean([aucs[b][k] for k in seeds]))
        summary["best_baseline"] = best
        summary["mgral_vs_best_baseline"] = paired_difference(rows, "mgral", best)
        # a secondary read: the last cycle's mAP (the paper's tables report per-cycle mAP), against every
        # baseline and the best of them at that cycle; the AUC above stays the target's measure
        last = {b: seed_final_map(rows, b) for b in base}
        best_last = max(base, key=lambda b: np.mean([last[b][k] for k in seeds]))
        summary["mgral_vs_baselines_last_cycle"] = {
            b: paired_difference(rows, "mgral", b, final=True) for b in base
        }
        summary["best_baseline_last_cycle"] = best_last
        if "entropy" in times:
            summary["mgral_over_entropy_time"] = sum(times["mgral"].values()) / sum(times["entropy"].values())
    Path(getattr(args, "json", None) or f"benchmarks/results/quality_{args.setting}.json").write_text(
        json.dumps(summary, indent=1) + "\n"
    )
    html, table = write_report(out)
    print(table)
    print(json.dumps({k: v for k, v in summary.items() if k != "strategies"}, indent=1))
    print(f"report: {html}")


def cmd_resplit(args: argparse.Namespace) -> None:
    """The same trained models, measured on the first N images of the run's test split: every cycle's
    checkpoint of every cell is evaluated again (the loop keeps them all by default). The test split of a
    synthetic setting is a prefix-stable generation (image i depends only on the seed and i), so a run
    with a grown test split can be read on the split of an earlier run; a cell whose AUC there equals the
    earlier run's to the last digits shows that the models, and so the selections, are the earlier ones."""
    import torch

    from mgral.config import config_from_yaml_text
    from mgral.data.sources import load_run_data
    from mgral.detectors.detector import Detector
    from mgral.metrics.evaluate import evaluate_predictions
    from mgral.reports.summary import normalized_auc
    from mgral.utils import derive_seed, safe_torch_load

    torch.set_num_threads(1)
    result: dict = {"dirs": args.dir, "n_test": args.n, "map": {}, "auc": {}}
    for d in args.dir:  # several directories: a setting's cells computed in several runs
        out = Path(d)
        cfg = config_from_yaml_text((out / "config.yaml").read_text(), str(out / "config.yaml"))
        pool, test = load_run_data(cfg.data, out / "data")
        if args.n > len(test):
            raise SystemExit(f"error: {out}: the test split has {len(test)} images, fewer than --n {args.n}")
        idx = np.arange(args.n)
        rows = csv_results(str(out))
        cells = sorted({(r["strategy"], r["seed"]) for r in rows if r["map"] is not None})
        cache: dict[Path, float] = {}
        for name, seed in cells:
            pts = sorted(
                (r["cycle"], r["n_labeled"]) for r in rows if r["strategy"] == name and r["seed"] == seed
            )
            curve = []
            for cycle, n_lab in pts:
                path = (
                    out / "checkpoints" / f"seed{seed}" / (name if cycle else "shared") / f"cycle{cycle}.pt"
                )
                if path not in cache:
                    det = Detector(
                        cfg.detector, pool.num_classes, seed=derive_seed(seed, "init"), device="cpu"
                    )
                    det.load_state_dict(safe_torch_load(path)["detector"])
                    preds = det.predict(test, idx, progress=False)
                    cache[path] = evaluate_predictions(test, idx, preds, cfg.loop.metric)[0]
                curve.append((n_lab, cache[path]))
            result["map"].setdefault(name, {})[str(seed)] = [v for _, v in curve]
            auc = normalized_auc(np.array([n for n, _ in curve]), np.array([v for _, v in curve]))
            result["auc"].setdefault(name, {})[str(seed)] = auc
            print(f"{name} seed {seed}: AUC on the first {args.n} test images {auc:.6f}", flush=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


def cmd_variants(args: argparse.Namespace) -> None:
    """Two variants of one strategy, each in its own run directory (``--set strategy_params...``), paired
    by seed: AUC and last-cycle differences. Both directories must share every seed's cycle-0 mAP (one
    machine, one cycle-0 model per seed), as ``merge`` requires."""
    from mgral.reports.summary import paired_difference, seed_auc_map

    rows = []
    for label, d in (("a", args.a), ("b", args.b)):
        rows += [{**r, "strategy": label} for r in csv_results(d) if r["strategy"] == args.strategy]
    c0 = {}
    for r in rows:
        if r["cycle"] == 0 and c0.setdefault(r["seed"], r["map"]) != r["map"]:
            raise SystemExit(f"error: seed {r['seed']}: cycle-0 mAP differs between {args.a} and {args.b}")
    out = {
        "strategy": args.strategy, "a": args.a, "b": args.b,
        "auc": {k: seed_auc_map(rows, k) for k in ("a", "b")},
        "a_minus_b": paired_difference(rows, "a", "b"),
        "a_minus_b_last_cycle": paired_difference(rows, "a", "b", final=True),
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("a_minus_b", "a_minus_b_last_cycle")}, indent=1))


def cmd_composition(args: argparse.Namespace) -> None:
    """What each strategy labeled, from the generator's truth (a benchmark's read, never a strategy's):
    per strategy and cycle, the mean over seeds of the labeled set's objects per class, its distinct scenes,
    and per class the distinct scenes holding one of its objects; and each class's AP difference to
    ``--against`` (results_per_class.csv). The pool is regenerated under ``--data`` (it is a function of
    the setting's config)."""
    import csv

    from mgral.config import load_config
    from mgral.data.pool import Pool
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import scenes, spec_for
    from mgral.utils import rng_for

    preset, run_dir = SETTINGS[args.setting]
    run_dir = args.dir or run_dir
    cfg = load_config(preset=preset, overrides=["device=cpu", "progress=false", "data.synthetic.n_test=1"])
    ds, _ = load_run_data(cfg.data, args.data or f"benchmarks/results/_data-{preset}")
    s = cfg.data.synthetic
    frames = spec_for(s.difficulty, **s.options).frames
    scene = scenes(s.seed, len(ds), frames)
    n_cls = ds.num_classes
    objects = np.stack([np.bincount(ds[i].labels, minlength=n_cls)[:n_cls] for i in range(len(ds))])
    picked: dict[tuple[str, int, int], list[int]] = {}
    with open(Path(run_dir) / "selections.csv") as f:
        for r in csv.DictReader(f):
            picked.setdefault((r["strategy"], int(r["seed"]), int(r["cycle"])), []).append(
                int(r["image_index"])
            )
    ap: dict[tuple[str, int, int], dict[str, float]] = {}
    with open(Path(run_dir) / "results_per_class.csv") as f:
        for r in csv.DictReader(f):
            ap.setdefault((r["strategy"], int(r["seed"]), int(r["cycle"])), {})[r["class"]] = float(r["ap"])
    strategies = sorted({k[0] for k in picked})
    seeds = sorted({k[1] for k in picked})
    cycles = sorted({k[2] for k in picked})
    out: dict = {"setting": args.setting, "run_dir": run_dir, "classes": list(ds.class_names),
                 "pool_objects": objects.sum(0).tolist(), "pool_scenes": int(len(np.unique(scene))),
                 "pool_scenes_per_class": [int(len(np.unique(scene[objects[:, k] > 0]))) for k in range(n_cls)],
                 "strategies": {}}  # fmt: skip
    for st in strategies:
        rows = []
        for c in cycles:
            per = []
            for seed in seeds:
                lab = Pool.random_initial(len(ds), int(cfg.loop.initial), rng_for(seed, "initial")).labeled
                idx = np.concatenate([lab, *[picked.get((st, seed, k), []) for k in range(c + 1)]]).astype(
                    int
                )
                per.append((objects[idx].sum(0), len(np.unique(scene[idx])),
                            [len(np.unique(scene[idx][objects[idx, k] > 0])) for k in range(n_cls)]))  # fmt: skip
            row = {"after_cycle": c, "objects": np.mean([p[0] for p in per], 0).round(1).tolist(),
                   "scenes": float(np.mean([p[1] for p in per])),
                   "scenes_per_class": np.mean([p[2] for p in per], 0).round(1).tolist()}  # fmt: skip
            if st != args.against and all(
                (args.against, seed, c + 1) in ap and (st, seed, c + 1) in ap for seed in seeds
            ):
                row["ap_minus_against"] = {
                    name: float(np.mean([ap[(st, seed, c + 1)][name] - ap[(args.against, seed, c + 1)][name] for seed in seeds]))
                    for name in ds.class_names
                }  # fmt: skip
            rows.append(row)
        out["strategies"][st] = rows
        for row in rows:
            print(f"{st:8s} after selection {row['after_cycle'] + 1}: {sum(row['objects']):.0f} objects, "
                  f"{row['scenes']:.1f} scenes")  # fmt: skip
        last = rows[-1]
        print(f"{st:8s} after {len(cycles)} selections: {sum(last['objects']):.0f} objects, {last['scenes']:.1f} "
              f"scenes; objects per class {last['objects']}; scenes per class {last['scenes_per_class']}")  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["all"])
    p.add_argument("--workers", default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per cell (1: the same result on every run on one machine; another CPU model "
        "can give other floats, so cells from two machines are never paired: `merge` checks cycle 0)",
    )
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", help="run directory (default: the setting's); `merge` adds it to the setting's")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("merge")
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.add_argument("extra", help="a run directory of the same setting with further cells")
    p.add_argument("--replace", nargs="+", default=[], metavar="STRATEGY",
                   help="drop these strategies' rows (and their cells in the store) first: they were "
                        "recomputed after a change to them")  # fmt: skip
    p.add_argument("--into", help="the setting directory to grow (default: the setting's); created from "
                   "EXTRA if it has no results.csv yet")  # fmt: skip
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("summary")
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.add_argument("--dir", help="the run directory to summarise (default: the setting's)")
    p.add_argument("--json", help="where the summary goes (default: benchmarks/results/quality_SETTING.json)")
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("resplit", help="every cell's checkpoints evaluated on the first N test images")
    p.add_argument("dir", nargs="+", help="run directories whose cells kept their checkpoints")
    p.add_argument("--n", type=int, required=True, help="test images to evaluate on (a prefix of the split)")
    p.add_argument("--json", required=True, help="where the per-seed mAP curves and AUCs go")
    p.set_defaults(func=cmd_resplit)
    p = sub.add_parser("variants", help="two run directories of one strategy's variants, paired by seed")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--strategy", default="mgral")
    p.add_argument("--json", required=True)
    p.set_defaults(func=cmd_variants)
    p = sub.add_parser("composition", help="what each strategy labeled: objects and scenes per class")
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.add_argument("--dir", help="the run directory (default: the setting's)")
    p.add_argument("--against", default="coreset", help="per-class AP differences to this strategy")
    p.add_argument("--data", help="where the pool is generated (default: benchmarks/results/_data-PRESET)")
    p.add_argument("--json", required=True)
    p.set_defaults(func=cmd_composition)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

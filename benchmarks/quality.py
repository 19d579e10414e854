"""Strategies compared over seeds on the two CPU settings, with paired differences (issues: MGRAL's quality,
the baselines, the CPU benchmark).

    .venv/bin/python benchmarks/quality.py run hard --seeds 0 1 2 3 4 --strategies random entropy coreset mgral
    .venv/bin/python benchmarks/quality.py run redundant --seeds 0 1 2          # every strategy (cpu-bench)
    .venv/bin/python benchmarks/quality.py summary hard

``hard`` is the ``demo`` preset (hard shapes, 100 + 3 x 100 labeled images); ``redundant`` is the
``cpu-bench`` preset (the hard shapes as short videos with a longer tail, 100 + 4 x 100). A setting's run
directory (``benchmarks/results/quality-hard``, ``benchmarks/results/cpu-bench``) grows with every
invocation (more seeds, more strategies) and resumes after an interruption; ``summary`` reads it and writes
``benchmarks/results/quality_<setting>.json``: per strategy the normalised area under the mAP curve (mean,
std, per seed), its paired difference to random and to the best of random/entropy/coreset with a Student-t
95% interval over seeds, and the whole-run time per seed against entropy's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SETTINGS = {
    "hard": ("demo", "benchmarks/results/quality-hard"),
    "redundant": ("cpu-bench", "benchmarks/results/cpu-bench"),
}
BASELINES = ("random", "entropy", "coreset")


def cmd_run(args: argparse.Namespace) -> None:
    from mgral.config import load_config
    from mgral.loop.active_loop import ActiveLearningRun
    from mgral.loop.executors import make_executor

    preset, out = SETTINGS[args.setting]
    seeds = "[" + ",".join(map(str, args.seeds)) + "]"
    strategies = "[" + ",".join(args.strategies) + "]"
    cfg = load_config(preset=preset, overrides=["device=cpu", "progress=false", f"loop.seeds={seeds}",
                                                f"loop.strategies={strategies}", *args.set])  # fmt: skip
    run = ActiveLearningRun(cfg, out)
    run.executor = make_executor("local", args.workers, tasks=len(run.cells()), threads=args.threads)
    try:
        run.run()
    finally:
        run.executor.close()
    cmd_summary(args)


def cmd_summary(args: argparse.Namespace) -> None:
    from mgral.reports.html import write_report
    from mgral.reports.summary import load_results, paired_difference, seed_auc_map, time_breakdown

    _, out = SETTINGS[args.setting]
    rows = load_results(out)
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
        if "entropy" in times:
            summary["mgral_over_entropy_time"] = sum(times["mgral"].values()) / sum(times["entropy"].values())
    Path(f"benchmarks/results/quality_{args.setting}.json").write_text(json.dumps(summary, indent=1) + "\n")
    html, table = write_report(out)
    print(table)
    print(json.dumps({k: v for k, v in summary.items() if k != "strategies"}, indent=1))
    print(f"report: {html}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["all"])
    p.add_argument("--workers", default="auto")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per cell (1: identical on any machine)"
    )
    p.add_argument("--set", action="append", default=[])
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("summary")
    p.add_argument("setting", choices=sorted(SETTINGS))
    p.set_defaults(func=cmd_summary)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

"""Area under the mAP-vs-labeled curve of mgral against random, entropy and coreset on the hard built-in
data (the demo preset), over seeds; and mgral's whole-run time against entropy's.

    .venv/bin/python benchmarks/quality.py --seeds 0 1 2 [--out benchmarks/results/quality]

The run directory is resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mgral.config import load_config
from mgral.loop.active_loop import ActiveLearningRun
from mgral.reports.summary import seed_aucs, write_report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="benchmarks/results/quality")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = "[" + ",".join(str(s) for s in args.seeds) + "]"
    cfg = load_config(
        preset="demo",
        overrides=["device=cpu", "progress=false", f"loop.seeds={seeds}",
                   "loop.strategies=[random,entropy,coreset,mgral]", *args.set],
    )  # fmt: skip
    rows = ActiveLearningRun(cfg, args.out).run()
    _, _, table = write_report(args.out, metric="mAP (VOC07)", title="hard shapes, tiny SSD")
    summary = {}
    for s in ("random", "entropy", "coreset", "mgral"):
        aucs = seed_aucs(rows, s)
        secs = [
            sum((r[k] or 0.0) for k in ("train_s", "infer_s", "select_s", "eval_s"))
            for r in rows
            if r["strategy"] == s
        ]
        summary[s] = {"auc_mean": float(aucs.mean()), "auc_std": float(aucs.std()), "aucs": aucs.tolist(),
                      "seconds_per_seed": float(np.sum(secs) / len(args.seeds))}  # fmt: skip
    summary["mgral_over_entropy_time"] = (
        summary["mgral"]["seconds_per_seed"] / summary["entropy"]["seconds_per_seed"]
    )
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

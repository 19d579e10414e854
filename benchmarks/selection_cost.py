"""What each strategy costs (issue: the baselines): one selection of 100 images from a 2,000-image pool, and,
for the strategies that change training (learning loss, MI-AOD), their training time against supervised
training of the same iterations.

    .venv/bin/python benchmarks/selection_cost.py            # writes benchmarks/results/selection_cost.json

The run is the runner's own (``mgral run`` machinery, one process, one torch thread): hard shapes at 96 px,
the demo's tiny SSD, 100 labeled images, a 2,000-image pool, one selection per strategy (cycle 0) and the
training of cycle 0 (200 iterations). Seconds come from the run's ``results.csv``: ``setup_s`` (what a
strategy computes before choosing, e.g. MGRAL's fold models), ``select_s`` (the choice), and ``infer_s``
(the pool's inference, shared in kind by every strategy).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

STRATEGIES = ["random", "entropy", "coreset", "cdal", "learning_loss", "mial", "ebal", "ppal", "mgral"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="benchmarks/results/_selection_cost")
    ap.add_argument("--out", default="benchmarks/results/selection_cost.json")
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    args = ap.parse_args()

    from mgral.config import load_config
    from mgral.loop.active_loop import ActiveLearningRun
    from mgral.loop.executors import InlineExecutor

    cfg = load_config(preset="demo", overrides=[
        "device=cpu", "progress=false", "data.synthetic.n_train=2100", "train.iterations=200", "loop.cycles=2",
        "loop.initial=100", "loop.budget=100", f"loop.strategies=[{','.join(args.strategies)}]", "loop.seeds=[0]",
    ])  # fmt: skip
    run = ActiveLearningRun(cfg, args.work)
    run.executor = InlineExecutor(threads=1)
    run.run()
    with open(Path(args.work) / "results.csv") as f:
        rows = {(r["strategy"], int(r["cycle"])): r for r in csv.DictReader(f)}
    out: dict = {"pool": 2000, "budget": 100, "train_iterations": 200, "threads": 1, "strategies": {}}
    sup_train = float(rows[("random", 0)]["train_s"])
    for s in args.strategies:
        r0 = rows[(s, 0)]
        setup, select = float(r0["setup_s"] or 0), float(r0["select_s"] or 0)
        out["strategies"][s] = {
            "infer_s": float(r0["infer_s"] or 0), "setup_s": setup, "select_s": select,
            "per_image_ms": 1000 * (setup + select) / 2000, "train_s": float(r0["train_s"]),
            "train_over_supervised": float(r0["train_s"]) / sup_train,
        }  # fmt: skip
    ent = out["strategies"].get("entropy")
    if ent:
        for row in out["strategies"].values():
            row["over_entropy"] = (row["setup_s"] + row["select_s"]) / max(
                1e-9, ent["setup_s"] + ent["select_s"]
            )
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

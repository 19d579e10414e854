"""How the policy's greedy decoding fares among the final batch's re-scored candidates (issue: MGRAL's
reward). A read of the run stores of ``benchmarks/quality.py`` runs on the video-like pool: for every mgral
selection, whether the greedy batch won the re-scoring (``final=rescore``), whether it was the lowest,
and the share of its images that are the last b unlabeled images of the pool's order (where a policy whose
pick probabilities are below 1/2 is forced to take them).

    .venv/bin/python benchmarks/greedy_decoding.py benchmarks/results/_qp-pixels benchmarks/results/_qp-default
"""

from __future__ import annotations

import argparse
import json
import sqlite3

import numpy as np

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.utils import rng_for


def read(run_dir: str) -> dict[str, float]:
    cfg = load_config(file=f"{run_dir}/config.yaml")
    n, initial = int(cfg.data.synthetic.n_train), int(cfg.loop.initial)
    con = sqlite3.connect(f"{run_dir}/store.sqlite")
    won = lowest = 0
    shares = []
    rows = con.execute(
        "select seed, cycle, info from selection_info where strategy='mgral' order by seed, cycle"
    )
    for seed, cycle, text in rows.fetchall():
        info = json.loads(text)
        labeled = set(Pool.random_initial(n, initial, rng_for(seed, "initial")).labeled.tolist())
        labeled |= {i for (i,) in con.execute(
            "select image_index from selections where strategy='mgral' and seed=? and cycle<?", (seed, cycle))}  # fmt: skip
        unlabeled = np.array(sorted(set(range(n)) - labeled))
        greedy = info["greedy_batch"]
        shares.append(len(set(unlabeled[-len(greedy) :].tolist()) & set(greedy)) / len(greedy))
        trues = [r["true"] for r in info["rescored"]]  # the greedy batch is the last candidate
        won += int(np.argmax(trues) == len(trues) - 1)
        lowest += int(np.argmin(trues) == len(trues) - 1)
    return {"selections": len(shares), "greedy_won": won, "greedy_lowest": lowest,
            "mean_share_of_the_last_b": float(np.mean(shares))}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    for run_dir in p.parse_args().run_dirs:
        print(run_dir, read(run_dir))


if __name__ == "__main__":
    main()

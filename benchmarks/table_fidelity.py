"""Look-up table against true rewards on the hard built-in data (issue: MGRAL agent, benchmarks).

Trains the cycle-0 detector (200 labeled images of a 1,000-image hard `shapes` pool), builds the proxy
reward, fills a table with K random batches of b images, then scores H held-out random batches with
the true reward (pseudo-labels), the oracle reward (true labels) and both estimators. Prints JSON and
writes benchmarks/results/table_fidelity.json.

    .venv/bin/python benchmarks/table_fidelity.py [--k 30] [--heldout 20] [--budget 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.data.sources import load_run_data
from mgral.detectors.detector import Detector
from mgral.strategies.base import pool_view
from mgral.strategies.rl.agent import BatchFeaturizer
from mgral.strategies.rl.lookup import KernelEstimator, LookupTable, fidelity
from mgral.strategies.rl.reward import ProxyReward, RewardConfig
from mgral.utils import derive_seed, rng_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--heldout", type=int, default=20)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--labeled", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/table_fidelity.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(preset="demo", overrides=["device=cpu"])
    pool_ds, _ = load_run_data(cfg.data, Path("benchmarks/results/_data"))
    pool = Pool.random_initial(len(pool_ds), args.labeled, rng_for(args.seed, "initial"))
    view = pool_view(pool_ds, pool)
    det = Detector(cfg.detector, pool_ds.num_classes, seed=derive_seed(args.seed, "init"))
    det.fit(view, pool.labeled, cfg.train, seed=derive_seed(args.seed, "train", 0), progress=False)
    unl = pool.unlabeled
    inf = det.infer(view, unl, predictions=True, embeddings=True, progress=False)
    raw = inf.embeddings.astype(np.float64)
    emb = ((raw - raw.mean(0)) / (raw.std(0) + 1e-6)).astype(np.float32)
    feat = BatchFeaturizer(emb, "histogram", 16, args.seed)
    common = dict(dataset=view, labeled=pool.labeled, unlabeled=unl, detector=det, train_cfg=cfg.train,
                  seed=args.seed, cycle=0, workdir=None, pseudo_predictions=inf.predictions)  # fmt: skip
    t = time.perf_counter()
    pseudo = ProxyReward(RewardConfig(kind="pseudo"), **common)
    setup_s = time.perf_counter() - t
    oracle = ProxyReward(RewardConfig(kind="oracle"), oracle_dataset=pool_ds, **common)
    table = LookupTable(k=5)
    true_times = []
    for j in range(args.k):
        pos = np.sort(rng_for(args.seed, "table", 0, j).choice(len(unl), args.budget, replace=False))
        t = time.perf_counter()
        r = pseudo(unl[pos])
        true_times.append(time.perf_counter() - t)
        table.add(feat(pos), r)
    held = [
        np.sort(rng_for(args.seed, "heldout", j).choice(len(unl), args.budget, replace=False))
        for j in range(args.heldout)
    ]
    truth = np.array([pseudo(unl[p]) for p in held])
    oracle_truth = np.array([oracle(unl[p]) for p in held])
    est_table, declined = [], 0
    est_times = []
    for p in held:
        f = feat(p)
        t = time.perf_counter()
        e = table.estimate(f)
        est_times.append(time.perf_counter() - t)
        if e.value is None:
            declined += 1
            x = np.stack(table.features)
            d = np.linalg.norm(x - f[None], axis=1)
            near = np.argsort(d)[:5]
            w = 1 / (d[near] + 1e-8)
            est_table.append(float(np.dot(w, np.asarray(table.rewards)[near]) / w.sum()))
        else:
            est_table.append(e.value)
    kern = KernelEstimator()
    est_kernel = np.array([kern.estimate(table, feat(p)) for p in held])
    res = {
        "setup": {"pool": len(pool_ds), "labeled": args.labeled, "budget": args.budget, "table_records": args.k,
                  "heldout_batches": args.heldout, "proxy_steps": RewardConfig().steps},
        "seconds": {"reward_setup": setup_s, "true_reward_mean": float(np.mean(true_times)),
                    "table_estimate_mean": float(np.mean(est_times)),
                    "speedup": float(np.mean(true_times) / np.mean(est_times))},
        "table_fidelity": fidelity(np.array(est_table), truth) | {"declined": declined},
        "kernel_fidelity": fidelity(est_kernel, truth),
        "pseudo_vs_oracle": fidelity(truth, oracle_truth),
        "reward_spread": {"std_true": float(truth.std()), "range_true": float(truth.max() - truth.min()),
                          "base_map": pseudo.base_map},
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

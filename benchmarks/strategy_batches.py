"""How MGRAL's curve reward scores the batches the strategies actually picked, on the redundant setting
(issue: MGRAL's reward). Coreset beats mgral there; this asks whether the reward even prefers Core-set's
batch, or whether the search fails to find what the reward would like.

    .venv/bin/python benchmarks/strategy_batches.py DIR [DIR ...] [--seeds 0 1 2 3 4]

Each DIR is a `quality.py run redundant` directory holding cycle 0 of coreset and mgral for some seeds (a
seed is read from the first DIR that has its cycle-0 model). For each seed it loads the shared cycle-0 model, predicts and embeds the pool as the loop does, and scores under
the curve reward (both near-duplicate rules, ``pairs`` and ``scenes``): each strategy's first batch, 20
random batches, and mgral's batch after 3,000 swaps of hill climbing on the reward (``search.polish``).
With each batch it counts the distinct scenes of the generator (read only to describe the batches, never
by the reward). Writes ``benchmarks/results/strategy_batches.json``. No test image is used.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np


def cycle0(run_dir: Path, seed: int) -> dict:
    """Seed ``seed``'s shared cycle-0 model of a ``quality.py run redundant`` directory, and what the loop
    sees with it: the pool's predictions and embeddings, the curve counts, and the first batch each of
    coreset, entropy and mgral picked there (empty when the directory has no such cell)."""
    import torch

    from mgral.config import load_config
    from mgral.data.pool import Pool
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import scene_of, spec_for
    from mgral.detectors.detector import Detector
    from mgral.strategies.base import pool_view
    from mgral.strategies.rl.agent import MgralOptions, class_totals
    from mgral.strategies.rl.curve import class_counts
    from mgral.utils import derive_seed, rng_for

    ckpt = run_dir / f"checkpoints/seed{seed}/shared/cycle0.pt"
    if not ckpt.is_file():
        sys.exit(
            f"{ckpt}: missing; run `benchmarks/quality.py run redundant --seeds {seed} --out {run_dir}` first"
        )
    torch.set_num_threads(1)
    cfg = load_config(preset="cpu-bench", overrides=["device=cpu", "progress=false"])
    ds, _ = load_run_data(cfg.data, run_dir / "data")
    pool = Pool.random_initial(len(ds), int(cfg.loop.initial), rng_for(seed, "initial"))
    det = Detector(cfg.detector, ds.num_classes, seed=derive_seed(seed, "init"))
    det.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["detector"])
    view, unl, lab = pool_view(ds, pool), pool.unlabeled, pool.labeled
    inf = det.infer(view, unl, predictions=True, embeddings=True, progress=False)
    c = ds.num_classes
    s = cfg.data.synthetic
    frames = spec_for(s.difficulty, **s.options).frames
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        picked = {
            st: np.array(
                [
                    i
                    for (i,) in db.execute(
                        "SELECT image_index FROM selections WHERE strategy=? AND seed=? AND cycle=0 ORDER BY rank",
                        (st, seed),
                    )
                ],
                np.int64,
            )  # fmt: skip
            for st in ("coreset", "entropy", "mgral")
        }
    return {
        "dataset": ds, "unlabeled": unl, "labeled": lab, "embeddings": inf.embeddings,
        "predictions": inf.predictions, "emb_labeled": det.embed(view, lab, progress=False),
        "counts": np.stack([class_counts(p, c, MgralOptions().curve_threshold) for p in inf.predictions]),
        "labeled_counts": class_totals(ds, lab), "picked": picked,
        "scene_of": lambda i: scene_of(s.seed, i, frames)[0],
    }  # fmt: skip


def measure(run_dir: Path, seed: int) -> dict:
    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import CurveReward
    from mgral.strategies.rl.search import polish
    from mgral.utils import derive_seed

    c = cycle0(run_dir, seed)
    unl, counts, labeled_counts = c["unlabeled"], c["counts"], c["labeled_counts"]
    inf_emb, emb_labeled = c["embeddings"], c["emb_labeled"]
    picked = {st: b for st, b in c["picked"].items() if st != "entropy"}

    def scenes(batch: np.ndarray) -> int:
        return len({c["scene_of"](int(i)) for i in batch})

    rng = np.random.default_rng(derive_seed(seed, "strategy-batches"))
    randoms = [np.sort(rng.choice(unl, 100, replace=False)) for _ in range(20)]
    out: dict = {}
    for rule in ("pairs", "scenes"):
        reward = CurveReward(MgralOptions(curve_duplicates=rule).curve_config(), unlabeled=unl, counts=counts,
                             labeled_counts=labeled_counts, emb_unlabeled=inf_emb,
                             emb_labeled=emb_labeled)  # fmt: skip
        row = {st: {"reward": reward(b), "scenes": scenes(b)} for st, b in picked.items() if len(b)}
        row["random"] = {"reward": float(np.mean([reward(b) for b in randoms])),
                         "scenes": float(np.mean([scenes(b) for b in randoms]))}  # fmt: skip
        if len(picked["mgral"]):
            pos, rec = polish(lambda p, reward=reward: reward(unl[p]), np.searchsorted(unl, picked["mgral"]), len(unl), 3000,
                              np.random.default_rng(derive_seed(seed, "strategy-batches-polish")))  # fmt: skip
            row["mgral_polished"] = {
                "reward": rec["end"],
                "scenes": scenes(unl[pos]),
                "accepted": rec["accepted"],
            }
        out[rule] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    result: dict = {"dirs": [str(d) for d in args.dirs], "seeds": {}}
    for seed in args.seeds:
        found = [d for d in args.dirs if (d / f"checkpoints/seed{seed}/shared/cycle0.pt").is_file()]
        result["seeds"][str(seed)] = r = measure(found[0] if found else args.dirs[0], seed)
        for rule, row in r.items():
            cells = "  ".join(f"{k} {v['reward']:.4f} ({v['scenes']:.0f} scenes)" for k, v in row.items())
            print(f"seed {seed} {rule:6s} {cells}", flush=True)
    path = Path("benchmarks/results/strategy_batches.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

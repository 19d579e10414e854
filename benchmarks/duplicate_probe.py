"""Does the curve reward's duplicate probe decide right on data it was not set on? (issue: MGRAL's reward)

The probe (``curve_probe`` 0.25, ``curve_probe_share`` 0.01) was set on two pools: the hard shapes (i.i.d.,
share at most 0.004 over 12 cycle-0 detectors) and the video-like ``cpu-bench`` pool (0.015 to 0.163 over
10). This script measures it on other kinds of data: other generators, difficulties and scene lengths,
each given as ``NAME:KEY=VALUE,...`` overrides of the ``demo`` preset's synthetic data. For every kind and
seed it trains the cycle-0 detector on the initial labeled set as the loop does (from scratch, the preset's
training), embeds the pool as the loop does, builds the agent's default curve reward and records the
probe's share and decision, next to the generator's truth: the share of the pool's images that have
another frame of their scene in the pool (never read by the reward). Rows are appended to
``benchmarks/results/duplicate_probe.jsonl`` (resumable); the summary goes to
``benchmarks/results/duplicate_probe.json``.

    .venv/bin/python benchmarks/duplicate_probe.py --seeds 0 1      # the default kinds below
    .venv/bin/python benchmarks/duplicate_probe.py --kind "digits-video:generator=digits,frames=6"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("benchmarks/results/duplicate_probe.jsonl")
KINDS = (
    "digits:generator=digits,difficulty=easy",
    "shapes-easy:difficulty=easy",
    "digits-video:generator=digits,difficulty=easy,frames=6",
    "hard-video-2:difficulty=hard,frames=2",
    "hard-video-3:difficulty=hard,frames=3",
)
KEYS = {"generator", "difficulty"}


def parse_kind(text: str) -> tuple[str, list[str]]:
    """``NAME:KEY=VALUE,...`` -> (name, config overrides of ``data.synthetic``)."""
    name, _, rest = text.partition(":")
    if not name or not rest:
        raise SystemExit(f"--kind {text!r}: expected NAME:KEY=VALUE,...")
    out = []
    for item in rest.split(","):
        key, _, value = item.partition("=")
        if not key or not value:
            raise SystemExit(f"--kind {text!r}: {item!r} is not KEY=VALUE")
        out.append(
            f"data.synthetic.{key}={value}" if key in KEYS else f"data.synthetic.options.{key}={value}"
        )
    return name, out


def measure(name: str, overrides: list[str], seed: int, root: Path) -> dict[str, Any]:
    import torch

    from mgral.config import load_config
    from mgral.data.pool import Pool
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import scene_of, spec_for
    from mgral.detectors.detector import Detector
    from mgral.strategies.base import pool_view
    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import CurveReward
    from mgral.training.supervised import train_supervised
    from mgral.utils import derive_seed, rng_for

    torch.set_num_threads(1)
    cfg = load_config(preset="demo", overrides=["device=cpu", "progress=false", *overrides])
    ds, _ = load_run_data(cfg.data, root / name / "data")
    pool = Pool.random_initial(len(ds), int(cfg.loop.initial), rng_for(seed, "initial"))
    det = Detector(cfg.detector, ds.num_classes, seed=derive_seed(seed, "init"))
    t0 = time.perf_counter()
    train_supervised(det, ds, pool.labeled, cfg.train, seed=derive_seed(seed, "train", 0), progress=False)
    view = pool_view(ds, pool)
    emb_u = det.infer(view, pool.unlabeled, embeddings=True, progress=False).embeddings
    emb_l = det.infer(view, pool.labeled, embeddings=True, progress=False).embeddings
    n_cls = ds.num_classes
    reward = CurveReward(MgralOptions().curve_config(), unlabeled=pool.unlabeled,
                         counts=np.zeros((len(pool.unlabeled), n_cls)), labeled_counts=np.zeros(n_cls),
                         emb_unlabeled=emb_u, emb_labeled=emb_l)  # fmt: skip
    s = cfg.data.synthetic
    frames = spec_for(s.difficulty, **s.options).frames
    # the embeddings, for other statistics of the same detectors without training them again
    np.savez_compressed(root / name / f"embeddings-seed{seed}.npz", unlabeled=emb_u, labeled=emb_l,
                        unlabeled_index=pool.unlabeled, labeled_index=pool.labeled)  # fmt: skip
    scene = (
        np.array([scene_of(s.seed, i, frames)[0] for i in range(len(ds))])
        if frames > 1
        else np.arange(len(ds))
    )
    sizes = np.bincount(scene)
    return {"kind": name, "seed": seed, "overrides": overrides, "frames": frames, "pool": len(ds),
            "probe_share": reward.probe_share, "discounted": bool(reward.has_duplicates),
            "true_share": float((sizes[scene] > 1).mean()), "seconds": time.perf_counter() - t0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--kind", action="append", default=[], help="NAME:KEY=VALUE,... (default: the built-in kinds)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--root", type=Path, default=Path("benchmarks/results/_probe"), help="generated data")
    args = ap.parse_args()
    kinds = [parse_kind(k) for k in (args.kind or KINDS)]
    done = (
        {(r["kind"], r["seed"]) for r in map(json.loads, OUT.read_text().splitlines())}
        if OUT.is_file()
        else set()
    )
    for name, overrides in kinds:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            row = measure(name, overrides, seed, args.root)
            with OUT.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: probe share {row['probe_share']:.4f} -> "
                  f"{'discount' if row['discounted'] else 'no discount'}; images with another frame of their "
                  f"scene {row['true_share']:.2f} ({row['seconds']:.0f}s)", flush=True)  # fmt: skip
    rows = [json.loads(x) for x in OUT.read_text().splitlines() if x.strip()]
    summary: dict[str, Any] = {}
    for r in rows:
        k = summary.setdefault(r["kind"], {"frames": r["frames"], "true_share": r["true_share"], "shares": [],
                                           "discounted": []})  # fmt: skip
        k["shares"].append(r["probe_share"])
        k["discounted"].append(r["discounted"])
    Path("benchmarks/results/duplicate_probe.json").write_text(json.dumps(summary, indent=1) + "\n")
    for name, k in summary.items():
        print(f"{name:14s} frames {k['frames']}: shares {min(k['shares']):.4f}..{max(k['shares']):.4f}, "
              f"discounted {sum(k['discounted'])}/{len(k['discounted'])}, true {k['true_share']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

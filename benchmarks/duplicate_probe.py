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

``--pixels`` measures the agent's default probe instead (``curve_probe_on=pixels``): the share of the
images with a near-duplicate among the 8 x 8 grey thumbnails of a fixed 1,000 of the data's images (no
detector: it is a property of the data, the same for every loop seed), for the kinds it was set on
(``PIXEL_SET_ON``) and for kinds held out from that choice (``PIXEL_HELD_OUT``: other generation seeds,
scene lengths, jitters and difficulties), to ``benchmarks/results/duplicate_probe_pixels.json``:

    .venv/bin/python benchmarks/duplicate_probe.py --pixels
    .venv/bin/python benchmarks/duplicate_probe.py --pixels --n-train 4000 --only digits ...  # larger pools

The probe reads a fixed subset of 1,000 images of a larger pool, so that its share on independent images
does not grow with the pool, and compares each with its two neighbours in the pool's order, where the
frames of a video usually are; ``--n-train`` checks both, and records what the subset alone reads (a
shuffled pool). Its JSON goes to ``duplicate_probe_pixels_n{N}.json``.
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
KEYS = {"generator", "difficulty", "seed"}
# the pixel probe's radius (0.1) and share (0.05) were chosen on these seven kinds (the two benchmark pools,
# whose data is the demo and cpu-bench presets', and the five kinds above) ...
PIXEL_SET_ON = (
    "hard (demo):difficulty=hard",
    "video-like (cpu-bench):difficulty=redundant",
    *KINDS,
)
# ... and then measured, unchanged, on these ten
PIXEL_HELD_OUT = (
    "hard, generation seed 1:difficulty=hard,seed=1",
    "video-like, generation seed 1:difficulty=redundant,seed=1",
    "digits, generation seed 1:generator=digits,difficulty=easy,seed=1",
    "shapes-easy, generation seed 1:difficulty=easy,seed=1",
    "digits-hard:generator=digits,difficulty=hard",
    "hard-video-4, generation seed 1:difficulty=hard,frames=4,seed=1",
    "digits-video-2:generator=digits,difficulty=easy,frames=2",
    "easy-video-2:difficulty=easy,frames=2",
    "hard-video-3, jitter 6:difficulty=hard,frames=3,jitter=6",
    "video-like, jitter 6:difficulty=redundant,jitter=6",
)


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
    from mgral.data.synthetic import scenes, spec_for
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
    scene = scenes(s.seed, len(ds), frames)
    sizes = np.bincount(scene)
    return {"kind": name, "seed": seed, "overrides": overrides, "frames": frames, "pool": len(ds),
            "probe_share": reward.probe_share, "discounted": bool(reward.has_duplicates),
            "true_share": float((sizes[scene] > 1).mean()), "seconds": time.perf_counter() - t0}  # fmt: skip


def folder_name(name: str) -> str:
    """A kind's name as a folder name."""
    return "".join(c if c.isalnum() else "-" for c in name)


def load_kind(
    name: str, overrides: list[str], root: Path, n_train: int | None = None
) -> tuple[Any, int, np.ndarray]:
    """One kind of synthetic data (generated under ``root`` once, then read): the dataset, its frames per
    scene and every image's scene id (the generator's truth, read by benchmarks only). ``n_train``: a pool
    of that many images instead of the preset's 1,000."""
    from mgral.config import load_config
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import scenes, spec_for

    size = [f"data.synthetic.n_train={n_train}"] if n_train else []
    cfg = load_config(preset="demo", overrides=["device=cpu", "progress=false", *overrides, *size])
    ds, _ = load_run_data(cfg.data, root / (folder_name(name) + (f"-n{n_train}" if n_train else "")) / "data")
    s = cfg.data.synthetic
    frames = spec_for(s.difficulty, **s.options).frames
    return ds, frames, scenes(s.seed, len(ds), frames)


def measure_pixels(name: str, overrides: list[str], root: Path, n_train: int | None = None) -> dict[str, Any]:
    """The agent's default probe on one kind of data: the share of its training images (what a run's
    labeled and unlabeled images are) with a near-duplicate thumbnail, and the decision. ``n_train``: a
    pool of that many images instead of the preset's 1,000."""
    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import data_duplicate_share

    ds, frames, scene = load_kind(name, overrides, root, n_train)
    opts = MgralOptions()
    t0 = time.perf_counter()
    share = data_duplicate_share(
        ds, np.arange(len(ds)), opts.curve_pixel_probe, order_probe=opts.curve_pixel_order_probe
    )
    seconds = time.perf_counter() - t0
    row = {"kind": name, "overrides": overrides, "frames": frames, "pool": len(ds), "pixel_share": share,
           "discounted": bool(share >= opts.curve_pixel_probe_share), "duplicates": frames > 1,
           "true_share": float((np.bincount(scene)[scene] > 1).mean()), "seconds": seconds}  # fmt: skip
    if n_train:  # the subset alone, without the neighbours in the pool's order: what a shuffled pool reads
        row["pixel_share_subset_only"] = data_duplicate_share(
            ds, np.arange(len(ds)), opts.curve_pixel_probe, order=False
        )
        row["pixel_share_all_images"] = share_among_all(ds, opts.curve_pixel_probe)
    return row


def share_among_all(ds: Any, probe: float) -> float:
    """The rule of the first session of 2026-12-07, for comparison: the same 1,000 sampled images, each
    with its nearest neighbour searched among all the pool's images (the radius from the same sample)."""
    from mgral.data.dataset import thumbnails
    from mgral.strategies.rl.curve import _median_distance, _sqdist, probe_rows

    every = thumbnails(ds, np.arange(len(ds)))
    rows = probe_rows(len(every))
    sample = every[rows]
    r2 = (probe * _median_distance(sample)) ** 2
    d2 = _sqdist(sample, every)
    d2[np.arange(len(rows)), rows] = np.inf  # not itself
    return float((d2.min(1) <= r2).mean())


def main_pixels(root: Path, n_train: int | None = None, only: list[str] | None = None) -> None:
    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import PROBE_IMAGES

    o = MgralOptions()
    summary: dict[str, Any] = {
        "probe": {
            "radius": o.curve_pixel_probe,
            "share": o.curve_pixel_probe_share,
            "thumbnail": "8 x 8 grey",
            "order": o.curve_pixel_order_probe,
            "subset": PROBE_IMAGES,  # compared with each other; with their neighbours in order, up to 3x read
        },
        "n_train": n_train,
        "only": only,
    }
    for part, kinds in (("set_on", PIXEL_SET_ON), ("held_out", PIXEL_HELD_OUT)):
        chosen = [parse_kind(k) for k in kinds if not only or parse_kind(k)[0] in only]
        rows = [measure_pixels(name, overrides, root, n_train) for name, overrides in chosen]
        for row in rows:
            right = row["discounted"] == row["duplicates"]
            alone = (
                f" (subset alone {row['pixel_share_subset_only']:.3f}, among all {row['pixel_share_all_images']:.3f})"
                if n_train
                else ""
            )
            print(f"{part:8s} {row['kind']:32s} frames {row['frames']}: pixel share {row['pixel_share']:.3f}{alone} -> "
                  f"{'discount' if row['discounted'] else 'no discount'} ({'right' if right else 'WRONG'})")  # fmt: skip
        summary[part] = rows
        summary[f"{part}_right"] = f"{sum(r['discounted'] == r['duplicates'] for r in rows)}/{len(rows)}"
    out = f"benchmarks/results/duplicate_probe_pixels{f'_n{n_train}' if n_train else ''}.json"
    Path(out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"right: {summary['set_on_right']} set on, {summary['held_out_right']} held out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--kind", action="append", default=[], help="NAME:KEY=VALUE,... (default: the built-in kinds)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--root", type=Path, default=Path("benchmarks/results/_probe"), help="generated data")
    ap.add_argument(
        "--pixels", action="store_true", help="the pixel probe (no detector) on set-on and held-out kinds"
    )
    ap.add_argument(
        "--n-train", type=int, help="with --pixels: pools of this many images (default: the presets' 1,000)"
    )
    ap.add_argument("--only", nargs="+", help="with --pixels: only the kinds of these names")
    args = ap.parse_args()
    if args.pixels:
        main_pixels(args.root, args.n_train, args.only)
        return
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

"""Would the curve reward find the video-like pool's scenes better on the pixels, and would it say a batch's
worth better then? (issue: MGRAL's reward)

The curve reward's scene rule (``curve_duplicates=scenes``) groups the pool into the connected components
of the graph joining two images within ``curve_radius`` (0.4) x the median distance of two images in the
cycle's detector's embedding. On the video-like pool mgral ties Core-set in AUC, and labels frames of fewer
scenes than Core-set. One candidate cause: components that merge distinct scenes (a chain of
near neighbours), so that a frame of a new scene is discounted as if its scene were labeled. This script
measures two things, both benchmark reads (the generator's scene ids are never read by a strategy):

1. **How well each grouping finds the scenes**: the adjusted Rand index (scikit-learn) between the
   generator's scenes and the components of the images' 8 x 8 grey thumbnails (the pixel probe's,
   ``mgral.data.dataset.thumbnails``) at radii 0.1 to 0.3 x their median distance, on the 17 kinds of
   ``duplicate_probe.py --pixels``; and of the embedding (the reward's own grouping) on the two cycle-0
   models the batch-worth reference was built for (``batch_worth.py``, seeds 0 and 1).
2. **What the better grouping does to the reward's agreement with the dev worth**: the curve reward with
   its scenes taken from the thumbnails instead, for the scene rule and the equicorrelated rule
   (``curve_scene_correlation``), mean-within-seed Spearman against the wide *dev* reference of the
   first-batch worth (the choice) and the test reference (reported only), as ``batch_worth.py grid`` does.

Needs the cycle-0 models of seeds 0 and 1 in the directory the batches were built from (re-created by
``quality.py run redundant --seeds 0 1 --strategies random --out benchmarks/results/_qs-a``; the cycle-0
model is written first, the run may be stopped then) and the reference rows of
``batch_worth.py reference --wide 1500``. Writes ``benchmarks/results/scene_grouping.json``:

    .venv/bin/python benchmarks/scene_grouping.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_worth import _mean_spearman, load_batches, worth  # noqa: E402
from duplicate_probe import PIXEL_HELD_OUT, PIXEL_SET_ON, load_kind, parse_kind  # noqa: E402
from strategy_batches import cycle0  # noqa: E402

PIXEL_RADII = (0.1, 0.15, 0.2, 0.25, 0.3)
CORRELATIONS = (None, 0.5, 0.75, 1.0)  # None: the scene rule (an image's share of its scene)


def kinds(root: Path) -> list[dict[str, Any]]:
    from sklearn.metrics import adjusted_rand_score

    from mgral.data.dataset import thumbnails
    from mgral.strategies.rl.curve import pixel_scenes

    rows = []
    for part, texts in (("set_on", PIXEL_SET_ON), ("held_out", PIXEL_HELD_OUT)):
        for name, overrides in map(parse_kind, texts):
            ds, frames, truth = load_kind(name, overrides, root)
            th = thumbnails(ds, np.arange(len(ds)))
            row: dict[str, Any] = {
                "kind": name,
                "part": part,
                "frames": frames,
                "scenes": int(len(np.unique(truth))),
            }
            for r in PIXEL_RADII:
                comp, _ = pixel_scenes(th, np.zeros((0, th.shape[1])), r)
                row[f"pixels_{r}"] = {"ari": float(adjusted_rand_score(truth, comp)),
                                      "components": int(len(np.unique(comp))),
                                      "largest": int(np.bincount(comp).max())}  # fmt: skip
            rows.append(row)
            print(f"{part:8s} {name:34s} frames {frames} scenes {row['scenes']:4d} | " + " | ".join(
                f"{r}: ARI {row[f'pixels_{r}']['ari']:.2f} ({row[f'pixels_{r}']['components']}, largest "
                f"{row[f'pixels_{r}']['largest']})" for r in PIXEL_RADII), flush=True)  # fmt: skip
    return rows


def dev_reference() -> dict[str, Any]:
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score

    from mgral.data.dataset import thumbnails
    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import CurveReward, pixel_scenes

    dev, test = worth("dev", 1500), worth("test", 1500)
    per: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    grouping: dict[str, dict[str, Any]] = {}
    for seed, b in load_batches().items():
        c = cycle0(Path(b["dir"]), seed)
        names = [x["name"] for x in b["batches"] if (seed, x["name"]) in dev]
        idx = {x["name"]: np.asarray(x["indices"]) for x in b["batches"]}
        unl = c["unlabeled"]
        truth = np.array([c["scene_of"](int(i)) for i in unl])
        th_u, th_l = thumbnails(c["dataset"], unl), thumbnails(c["dataset"], c["labeled"])
        spaces: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"embeddings 0.4": None}
        for r in (0.2, 0.25):
            spaces[f"pixels {r}"] = pixel_scenes(th_u, th_l, r)
        for rho in CORRELATIONS:
            for space, comp in spaces.items():
                opts = MgralOptions(curve_duplicates="scenes", curve_scene_correlation=rho)
                rew = CurveReward(opts.curve_config(), unlabeled=unl, counts=c["counts"],
                                  labeled_counts=c["labeled_counts"], emb_unlabeled=c["embeddings"],
                                  emb_labeled=c["emb_labeled"], has_duplicates=True)  # fmt: skip
                assert rew.scene is not None
                if comp is not None:  # the same reward, its scenes taken from the thumbnails
                    rew.scene, rew.scene_labeled = comp
                if rho is None:
                    grouping.setdefault(space, {})[str(seed)] = {
                        "ari": float(adjusted_rand_score(truth, rew.scene)),
                        "components": int(len(np.unique(rew.scene))), "true_scenes": int(len(np.unique(truth))),
                        "largest": int(np.bincount(rew.scene).max()),
                    }  # fmt: skip
                v = np.array([rew(idx[n]) for n in names])
                per.setdefault(f"{space}, rho {rho}", []).append(
                    (v, np.array([dev[(seed, n)] for n in names]), np.array([test[(seed, n)] for n in names]))
                )
    table = {}
    for key, rows in per.items():
        d, t = _mean_spearman([(v, x) for v, x, _ in rows]), _mean_spearman([(v, y) for v, _, y in rows])
        table[key] = {"dev": d[0], "dev_ci": d[1], "test": t[0], "test_ci": t[1],
                      "dev_per_seed": [float(spearmanr(v, x).statistic) for v, x, _ in rows]}  # fmt: skip
        print(f"{key:30s} dev {d[0]:+.3f} [{d[1][0]:+.2f}, {d[1][1]:+.2f}]  test {t[0]:+.3f} (reported only)")
    for space, g in grouping.items():
        print(f"grouping {space:16s} " + "  ".join(
            f"seed {s}: ARI {v['ari']:.2f}, {v['components']} components of {v['true_scenes']} scenes, largest "
            f"{v['largest']}" for s, v in g.items()))  # fmt: skip
    return {"grouping": grouping, "spearman": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("benchmarks/results/_probe"), help="generated data")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scene_grouping.json"))
    args = ap.parse_args()
    result = {"pixel_radii": list(PIXEL_RADII), "kinds": kinds(args.root), "video_like_dev": dev_reference()}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Which images the curve reward's near-duplicate discount treats as duplicates, against the truth of the
generator (images that are frames of one scene), on the two CPU settings (issue: MGRAL's reward).

    .venv/bin/python benchmarks/duplicate_radius.py      # after quality.py run (it reads their cycle-0 models)
    .venv/bin/python benchmarks/duplicate_radius.py --dir hard=DIR --dir redundant=DIR   # other run directories

For seed 0's cycle-0 model of each setting, it embeds the unlabeled pool as the loop does, standardises
the embeddings as the reward does, and for a radius given as a fraction of two scales (the median
nearest-neighbour distance, the old rule; the median distance of two images, the current one) counts the
pairs within the radius and the fraction of them that are frames of one scene (precision) and of the
same-scene pairs they catch (recall). The ``scenes x F`` rules (``curve_duplicates=scenes``) count the pairs
of images in one connected component of the graph of pairs within F x the median distance of two images,
with the number of components and the largest. The scene of an image is read from the generator, never by the
reward. Writes ``benchmarks/results/duplicate_radius.json``. The pool is the training pool of seed 0
(no test image is used).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SETTINGS = {"hard": ("demo", "benchmarks/results/quality-hard"),
            "redundant": ("cpu-bench", "benchmarks/results/cpu-bench")}  # fmt: skip
FRACTIONS = {"nearest": (0.25, 0.5, 1.0, 1.25, 1.5), "pair": (0.3, 0.35, 0.4, 0.45, 0.5),
             "scenes": (0.3, 0.35, 0.4, 0.45)}  # fmt: skip


def measure(setting: str, run_dir: str) -> dict:
    import torch
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    from mgral.config import load_config
    from mgral.data.pool import Pool
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import scene_of, spec_for
    from mgral.detectors.detector import Detector
    from mgral.strategies.base import pool_view
    from mgral.utils import derive_seed, rng_for

    preset = SETTINGS[setting][0]
    ckpt = Path(run_dir) / "checkpoints/seed0/shared/cycle0.pt"
    if not ckpt.is_file():
        sys.exit(f"{ckpt}: missing; run `benchmarks/quality.py run {setting} --seeds 0` first")
    torch.set_num_threads(1)
    cfg = load_config(preset=preset, overrides=["device=cpu", "progress=false"])
    pool_ds, _ = load_run_data(cfg.data, Path(run_dir) / "data")
    pool = Pool.random_initial(len(pool_ds), int(cfg.loop.initial), rng_for(0, "initial"))
    det = Detector(cfg.detector, pool_ds.num_classes, seed=derive_seed(0, "init"))
    det.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["detector"])
    unl = pool.unlabeled
    emb = det.infer(pool_view(pool_ds, pool), unl, embeddings=True, progress=False).embeddings
    z = (emb - emb.mean(0)) / (emb.std(0) + 1e-6)
    sq = (z * z).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * z @ z.T, 0.0))
    np.fill_diagonal(d, np.inf)
    s = cfg.data.synthetic
    spec = spec_for(s.difficulty, **s.options)
    scene = np.array([scene_of(s.seed, int(i), spec.frames)[0] for i in unl]) if spec.frames > 1 else unl
    same = scene[:, None] == scene[None]
    np.fill_diagonal(same, False)
    upper = np.triu(np.ones_like(same), 1)
    scales = {"nearest": float(np.median(d.min(1))), "pair": float(np.median(d[upper]))}
    out: dict = {"pool": len(unl), "same_scene_pairs": int(same[upper].sum()), "scales": scales, "rules": {}}
    for rule, fracs in FRACTIONS.items():
        for f in fracs:
            within = (d < f * scales["pair" if rule == "scenes" else rule]) & upper
            extra = {}
            if rule == "scenes":
                k, label = connected_components(csr_matrix(within), directed=False)
                within = (label[:, None] == label[None]) & upper
                extra = {"components": int(k), "largest": int(np.bincount(label).max())}
            tp = int((within & same).sum())
            out["rules"][f"{rule} x {f}"] = {
                "pairs": int(within.sum()), "per_image": 2 * int(within.sum()) / len(unl),
                "precision": tp / max(int(within.sum()), 1), "recall": tp / max(out["same_scene_pairs"], 1),
                **extra}  # fmt: skip
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="SETTING=DIR",
        help="read SETTING's cycle-0 model from DIR (default: the setting's quality directory)",
    )
    args = ap.parse_args()
    dirs = {name: run_dir for name, (_, run_dir) in SETTINGS.items()}
    for item in args.dir:
        name, _, run_dir = item.partition("=")
        if name not in SETTINGS or not run_dir:
            sys.exit(f"--dir {item}: expected SETTING=DIR with SETTING one of {', '.join(SETTINGS)}")
        dirs[name] = run_dir
    result = {name: measure(name, run_dir) for name, run_dir in dirs.items()}
    path = Path("benchmarks/results/duplicate_radius.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result.items():
        print(f"{name}: {r['pool']} images, {r['same_scene_pairs']} same-scene pairs")
        for rule, v in r["rules"].items():
            comps = f"  components {v['components']} (largest {v['largest']})" if "components" in v else ""
            print(
                f"  {rule:15s} pairs {v['pairs']:6d} ({v['per_image']:.2f}/image)  precision {v['precision']:.3f}"
                f"  recall {v['recall']:.3f}{comps}"
            )


if __name__ == "__main__":
    main()

"""What a first batch is worth on the redundant setting, and which reward says it (issue: MGRAL's reward).

``reward_fidelity.py`` measures batch worth on the hard shapes only. On the video-like ``cpu-bench`` pool
Core-set beats mgral although the curve reward scores mgral's batch higher (``strategy_batches.py``), and no
measured reference said which of the two is right, or what a better reward should weigh. This script
builds that reference on a *dev* split of its own (new scenes of the same generator), so that a choice of
reward never looks at the test split. Subcommands, each resumable (rows are appended line by line under
``benchmarks/results/batch_worth/``):

``build DIR --seed S``
    Loads seed S's shared cycle-0 model from a ``quality.py run redundant`` directory DIR and writes about
    30 batches of 100 unlabeled images whose worth really differs: 10 random; the first batches that
    coreset, entropy and mgral picked (from DIR's store, when there); mgral's after 3,000 swaps of hill
    climbing on the reward; one frame of each of 100 scenes; whole scenes; scenes the labeled set already
    holds against new scenes; most objects; rare classes; embedding clusters; near-duplicates. Ground truth
    and the generator's scene ids *build* some of them: they are inputs of the benchmark, never read by a
    strategy.
``reference --workers 2``
    For each batch and the training seeds common to every batch (``--train-seeds``, default 0 1; the
    figures of RESULTS.md use 0 1 2 3), retrains the detector from scratch on
    labeled + batch with true labels, as the loop's next cycle would; worth = mAP (VOC07) on the dev split
    (what choices look at) and on the test split (reported) minus the same training without the batch.
``score``
    Every reward variant's Spearman against the dev (and test) worth with a bootstrap 95% interval; writes
    ``benchmarks/results/batch_worth.json``.

    .venv/bin/python benchmarks/batch_worth.py build benchmarks/results/_qs-a --seed 0
    .venv/bin/python benchmarks/batch_worth.py reference --workers 2
    .venv/bin/python benchmarks/batch_worth.py score
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import curve_grid  # noqa: E402
from strategy_batches import cycle0  # noqa: E402

RESULTS = Path("benchmarks/results/batch_worth")
BUDGET, REF_SEEDS = 100, (0, 1)


def _cfg() -> Any:
    from mgral.config import load_config

    return load_config(preset="cpu-bench", overrides=["device=cpu", "progress=false"])


def _dev_dataset(cfg: Any) -> Any:
    from mgral.data.synthetic import make_dataset, spec_for
    from mgral.utils import derive_seed

    s = cfg.data.synthetic
    return make_dataset(s.generator, 300, derive_seed(s.seed, "dev"), RESULTS / "data/dev",
                        spec_for(s.difficulty, **s.options))  # fmt: skip


# ------------------------------------------------------------------------------------------ batches
def cmd_build(args: argparse.Namespace) -> None:
    from sklearn.cluster import KMeans

    from mgral.strategies.entropy import box_entropy
    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import CurveReward
    from mgral.strategies.rl.search import polish
    from mgral.utils import derive_seed

    c = cycle0(args.dir, args.seed)
    ds, unl, lab, emb = c["dataset"], c["unlabeled"], c["labeled"], c["embeddings"]
    scene = np.array([c["scene_of"](int(i)) for i in unl])
    lab_scenes = {c["scene_of"](int(i)) for i in lab}
    n_obj = np.array([len(ds[int(i)].labels) for i in unl])
    rng = np.random.default_rng(derive_seed(args.seed, "batch-worth"))
    out: list[dict[str, Any]] = []

    def add(name: str, family: str, positions: np.ndarray) -> None:
        pos = np.unique(np.asarray(positions, np.int64))
        assert len(pos) == BUDGET, (name, len(pos))
        out.append({"name": name, "family": family, "indices": sorted(unl[pos].tolist())})

    def fill(part: np.ndarray) -> np.ndarray:
        part = np.unique(part)[:BUDGET]
        rest = np.setdiff1d(np.arange(len(unl)), part)
        return np.concatenate([part, rng.choice(rest, BUDGET - len(part), replace=False)])

    def top(score: np.ndarray, k: int = BUDGET) -> np.ndarray:
        return np.lexsort((rng.random(len(score)), -score))[:k]

    for k in range(10):
        add(f"random-{k}", "random", rng.choice(len(unl), BUDGET, replace=False))
    for st, b in c["picked"].items():
        if len(b):
            add(st, "strategy", np.searchsorted(unl, b))
    reward = CurveReward(MgralOptions(curve_duplicates="scenes").curve_config(), unlabeled=unl,
                         counts=c["counts"], labeled_counts=c["labeled_counts"], emb_unlabeled=emb,
                         emb_labeled=c["emb_labeled"])  # fmt: skip
    for st in ("mgral", "coreset"):
        if len(c["picked"][st]):
            pos, _ = polish(lambda p: reward(unl[p]), np.searchsorted(unl, c["picked"][st]), len(unl), 3000,
                            np.random.default_rng(derive_seed(args.seed, "batch-worth-polish", st)))  # fmt: skip
            add(f"{st}-polished", "polished", pos)
    if not len(c["picked"]["entropy"]):
        ent = np.array([box_entropy(p.probs, True).sum() if len(p.probs) else 0.0 for p in c["predictions"]])
        add("entropy-sum-top", "entropy", top(ent))
    scenes = np.unique(scene)
    for k in range(2):  # one frame of each of 100 scenes
        chosen = rng.choice(scenes, BUDGET, replace=False)
        add(f"one-per-scene-{k}", "scenes", [rng.choice(np.nonzero(scene == s)[0]) for s in chosen])
    for k in range(2):  # whole scenes, as many as fit
        part: list[int] = []
        for s in rng.permutation(scenes):
            part.extend(np.nonzero(scene == s)[0].tolist())
            if len(part) >= BUDGET:
                break
        add(f"whole-scenes-{k}", "scenes", np.array(part[:BUDGET]))
    seen = np.array([s in lab_scenes for s in scene])
    add("seen-scenes", "scenes", rng.choice(np.nonzero(seen)[0], BUDGET, replace=False))
    add("new-scenes", "scenes", rng.choice(np.nonzero(~seen)[0], BUDGET, replace=False))
    add("objects-most", "objects", top(n_obj))
    best = {}  # the image with most objects of each scene
    for p in np.lexsort((rng.random(len(unl)), -n_obj)):
        best.setdefault(scene[p], p)
    per_scene = np.array(list(best.values()))
    add(
        "objects-most-one-per-scene",
        "objects",
        per_scene[np.argsort(-n_obj[per_scene], kind="stable")][:BUDGET],
    )
    rare = np.argsort(c["labeled_counts"], kind="stable")[:2]
    n_rare = np.array([np.isin(ds[int(i)].labels, rare).sum() for i in unl])
    add("rare-100", "rare", fill(top(n_rare)))
    add("rare-50", "rare", fill(top(n_rare, BUDGET // 2)))
    assign = KMeans(8, n_init=4, random_state=0).fit_predict(emb)
    for cl in np.argsort(-np.bincount(assign, minlength=8))[:3]:
        members = np.nonzero(assign == cl)[0]
        add(
            f"cluster-{int(cl)}",
            "cluster",
            fill(rng.choice(members, min(BUDGET, len(members)), replace=False)),
        )
    anchor = int(rng.integers(len(unl)))
    add("near-duplicates-half", "near-duplicates",
        fill(np.argsort(np.linalg.norm(emb - emb[anchor], axis=1), kind="stable")[: BUDGET // 2]))  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"batches-seed{args.seed}.json"
    path.write_text(json.dumps({"dir": str(args.dir), "seed": args.seed, "labeled": lab.tolist(),
                                "batches": out}) + "\n")  # fmt: skip
    print(f"wrote {path}: {len(out)} batches")


def load_batches() -> dict[int, dict[str, Any]]:
    files = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("batches-seed*.json"))]
    return {int(b["seed"]): b for b in files}


def _done(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    return {
        (r["seed"], r["name"], r["train_seed"]) for r in map(json.loads, path.read_text().splitlines()) if r
    }


# ------------------------------------------------------------------------------------------ reference
def reference_file(n_eval: int) -> Path:
    """The reference's rows: ``reference.jsonl`` for the 300-image splits, ``reference-wide{N}.jsonl`` for
    splits of N images (``--wide N``), whose first 300 images are the narrow splits."""
    return RESULTS / ("reference.jsonl" if n_eval == 300 else f"reference-wide{n_eval}.jsonl")


def _eval_splits(cfg: Any, run_dir: Path, n_eval: int) -> tuple[Any, Any]:
    """The dev and test splits of ``n_eval`` images (300: the narrow ones, the run directory's own test)."""
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import make_dataset, spec_for
    from mgral.utils import derive_seed

    if n_eval == 300:
        return _dev_dataset(cfg), load_run_data(cfg.data, run_dir / "data")[1]
    s = cfg.data.synthetic
    spec = spec_for(s.difficulty, **s.options)
    dev = make_dataset(s.generator, n_eval, derive_seed(s.seed, "dev"), RESULTS / f"data/dev{n_eval}", spec)
    test = make_dataset(
        s.generator, n_eval, derive_seed(s.seed, "test"), run_dir / f"data/test{n_eval}", spec
    )
    return dev, test


def _reference_job(job: tuple[int, str, list[int], int, str, int]) -> dict[str, Any]:
    import torch

    from mgral.data.sources import load_run_data
    from mgral.detectors.detector import Detector
    from mgral.metrics.voc import evaluate_voc_dataset
    from mgral.training.supervised import train_supervised
    from mgral.utils import derive_seed

    seed, name, indices, s, run_dir, n_eval = job
    torch.set_num_threads(1)
    cfg = _cfg()
    ds, _ = load_run_data(cfg.data, Path(run_dir) / "data")
    dev, test = _eval_splits(cfg, Path(run_dir), n_eval)
    det = Detector(cfg.detector, ds.num_classes, seed=derive_seed(seed, s, "worth-init"))
    t0 = time.perf_counter()
    train_supervised(det, ds, np.sort(np.asarray(indices, np.int64)), cfg.train,
                     seed=derive_seed(seed, s, "worth-train"), progress=False)  # fmt: skip
    row: dict[str, Any] = {"seed": seed, "name": name, "train_seed": s, "train_s": time.perf_counter() - t0}
    for split, d in (("dev", dev), ("test", test)):
        idx = np.arange(len(d))
        preds = det.predict(d, idx, progress=False)
        row[split] = evaluate_voc_dataset(d, idx, preds, use_07=True)["mAP"]
        if n_eval != 300:  # the narrow split, the same images: the rows of reference.jsonl again
            row[f"{split}300"] = evaluate_voc_dataset(d, idx[:300], preds[:300], use_07=True)["mAP"]
    return row


def cmd_reference(args: argparse.Namespace) -> None:
    out = reference_file(args.wide)
    done = _done(out)
    jobs = []
    for seed, b in load_batches().items():
        if args.seeds and seed not in args.seeds:
            continue
        lab = b["labeled"]
        for batch in [{"name": "control", "indices": []}, *b["batches"]]:
            jobs += [(seed, batch["name"], lab + batch["indices"], s, b["dir"], args.wide) for s in args.train_seeds
                     if (seed, batch["name"], s) not in done]  # fmt: skip
    print(f"{len(jobs)} trainings to run", flush=True)
    for b in load_batches().values():  # generated once, before the workers read them
        _eval_splits(_cfg(), Path(b["dir"]), args.wide)
    with ProcessPoolExecutor(args.workers) as ex:
        for k, row in enumerate(ex.map(_reference_job, jobs), 1):
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            print(f"[{k}/{len(jobs)}] seed {row['seed']} {row['name']} train seed {row['train_seed']}: dev "
                  f"{row['dev']:.4f} test {row['test']:.4f} ({row['train_s']:.0f}s)", flush=True)  # fmt: skip


def worth(split: str, n_eval: int = 300) -> dict[tuple[int, str], float]:
    """(seed, batch) -> mean over training seeds of mAP(labeled + batch) - mAP(labeled), on ``split``. A
    seed's batches all use the training seeds its control has (at least 2); a batch missing one is left
    out until its rows are there."""
    by = _by_training_seed(split, n_eval)
    out = {}
    for (seed, name), v in by.items():
        ctrl = by.get((seed, "control"), {})
        if name != "control" and len(ctrl) >= len(REF_SEEDS) and set(ctrl) <= set(v):
            out[(seed, name)] = float(np.mean([v[s] - ctrl[s] for s in sorted(ctrl)]))
    return out


def _by_training_seed(split: str, n_eval: int = 300) -> dict[tuple[int, str], dict[int, float]]:
    rows = [json.loads(x) for x in reference_file(n_eval).read_text().splitlines() if x.strip()]
    by: dict[tuple[int, str], dict[int, float]] = {}
    for r in rows:
        by.setdefault((r["seed"], r["name"]), {})[r["train_seed"]] = r[split]
    return by


def repeatability(split: str, n_eval: int = 300) -> dict[str, Any]:
    """How far the reference agrees with itself: per seed, the mean over pairs of training seeds of
    Spearman between the worths one training seed gives; the Spearman-Brown reliability of the mean of k
    training seeds, r_k = k r / (1 + (k - 1) r); and sqrt(r_k), about the highest Spearman any reward can
    reach against this reference (a reward that knew the true worth exactly)."""
    import itertools

    from scipy.stats import spearmanr

    by, out = _by_training_seed(split, n_eval), {}
    for seed in sorted({s for s, _ in by}):
        ctrl = by[(seed, "control")]
        names = [n for (s, n) in by if s == seed and n != "control" and set(ctrl) <= set(by[(s, n)])]
        rho = [
            spearmanr([by[(seed, n)][a] - ctrl[a] for n in names], [by[(seed, n)][b] - ctrl[b] for n in names]).statistic
            for a, b in itertools.combinations(sorted(ctrl), 2)
        ]  # fmt: skip
        r, k = float(np.mean(rho)), len(ctrl)
        rk = k * r / (1 + (k - 1) * r)
        out[str(seed)] = {
            "training_seeds": k,
            "pairwise": r,
            "reliability": rk,
            "ceiling": float(np.sqrt(max(rk, 0))),
        }
    return out


# ------------------------------------------------------------------------------------------ scores
def variants(c: dict[str, Any], batches: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Every reward variant and plain statistic of every batch: variant -> batch name -> value."""
    from scipy.spatial.distance import cdist

    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import CurveReward

    unl, counts = c["unlabeled"], c["counts"]
    true = np.stack([np.bincount(c["dataset"][int(i)].labels, minlength=counts.shape[1])[: counts.shape[1]]
                     for i in unl]).astype(float)  # fmt: skip
    rewards = {
        f"curve-{rule}{'-oracle' if k is true else ''}": CurveReward(
            MgralOptions(curve_duplicates=rule).curve_config(), unlabeled=unl, counts=k,
            labeled_counts=c["labeled_counts"], emb_unlabeled=c["embeddings"], emb_labeled=c["emb_labeled"])
        for rule in ("pairs", "scenes") for k in (counts, true)
    }  # fmt: skip
    ref = rewards["curve-scenes"]
    assert ref.emb is not None and ref.scene is not None
    emb = np.asarray(c["embeddings"], np.float64)
    mu, sd = emb.mean(0), emb.std(0) + 1e-6
    z, zl = ref.emb, (np.asarray(c["emb_labeled"], np.float64) - mu) / sd
    d_lab = np.min(cdist(z, zl), axis=1)  # every pool image's distance to the labeled set
    out: dict[str, dict[str, float]] = {}
    for b in batches:
        pos = np.searchsorted(unl, b["indices"])
        row = {k: r(np.asarray(b["indices"])) for k, r in rewards.items()}
        d_new = np.minimum(d_lab, np.min(cdist(z, z[pos]), axis=1))
        row["facility-gain"] = float(d_lab.mean() - d_new.mean())  # Core-set's objective, averaged
        row["kcenter-radius"] = -float(d_new.max())
        row["predicted-objects"] = float(counts[pos].sum())
        row["components"] = float(len(np.unique(ref.scene[pos])))
        row["new-components"] = float(len(np.unique(ref.scene[pos][ref.scene_labeled[ref.scene[pos]] == 0])))
        row["scenes"] = float(len({c["scene_of"](int(i)) for i in b["indices"]}))
        for name, v in row.items():
            out.setdefault(name, {})[b["name"]] = v
    return out


def _mean_spearman(
    pairs: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 2000
) -> tuple[float, list[float]]:
    """Mean over seeds of Spearman's rho within a seed, and a bootstrap 95% interval (batches resampled
    within each seed)."""
    from scipy.stats import spearmanr

    rho = float(np.mean([spearmanr(x, y).statistic for x, y in pairs]))
    rng, boots = np.random.default_rng(0), []
    for _ in range(n_boot):
        vals = []
        for x, y in pairs:
            k = rng.integers(0, len(x), len(x))
            if len(np.unique(x[k])) > 2 and len(np.unique(y[k])) > 2:
                vals.append(spearmanr(x[k], y[k]).statistic)
        if len(vals) == len(pairs):
            boots.append(np.mean(vals))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return rho, [float(lo), float(hi)]


def cmd_score(args: argparse.Namespace) -> None:
    from scipy.stats import spearmanr

    dev, test = worth("dev", args.wide), worth("test", args.wide)
    result: dict[str, Any] = {"seeds": {}, "spearman": {}}
    table: dict[int, dict[str, dict[str, float]]] = {}
    for seed, b in load_batches().items():
        names = [x["name"] for x in b["batches"] if (seed, x["name"]) in dev]
        if len(names) < 5:
            continue
        c = cycle0(Path(b["dir"]), seed)
        table[seed] = variants(c, [x for x in b["batches"] if x["name"] in names])
        result["seeds"][str(seed)] = {n: {"dev": dev[(seed, n)], "test": test[(seed, n)],
                                          **{k: v[n] for k, v in table[seed].items()}} for n in names}  # fmt: skip
    for k in next(iter(table.values())):
        result["spearman"][k] = {}
        for split, ref in (("dev", dev), ("test", test)):
            pairs = [(np.array([v[k][n] for n in v[k]]), np.array([ref[(s, n)] for n in v[k]]))
                     for s, v in table.items()]  # fmt: skip
            rho, ci = _mean_spearman(pairs)
            result["spearman"][k][split] = {"rho": rho, "ci": ci}
        d, t = result["spearman"][k]["dev"], result["spearman"][k]["test"]
        print(f"{k:22s} dev {d['rho']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]  "
              f"test {t['rho']:+.2f} [{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]")  # fmt: skip
    for seed, rows in result["seeds"].items():
        print(f"seed {seed}: batches by dev worth")
        for n, r in sorted(rows.items(), key=lambda kv: -kv[1]["dev"]):
            print(
                f"  {n:28s} dev {r['dev']:+.4f} test {r['test']:+.4f} curve-scenes {r['curve-scenes']:.4f} "
                f"facility {r['facility-gain']:.3f} scenes {r['scenes']:.0f} objects {r['predicted-objects']:.0f}"
            )
    result["repeatability"] = {split: repeatability(split, args.wide) for split in ("dev", "test")}
    for split, per in result["repeatability"].items():
        for seed, r in per.items():
            print(
                f"reference {split} seed {seed}: {r['training_seeds']} training seeds, pairwise Spearman "
                f"{r['pairwise']:+.2f}, reliability of their mean {r['reliability']:.2f}, ceiling {r['ceiling']:.2f}"
            )
    result["dev_vs_test"] = float(np.mean([spearmanr([v["dev"] for v in rows.values()],
                                                     [v["test"] for v in rows.values()]).statistic
                                           for rows in result["seeds"].values()]))  # fmt: skip
    print(f"dev worth against test worth (mean over seeds): {result['dev_vs_test']:+.2f}")
    path = Path(
        "benchmarks/results/"
        + ("batch_worth.json" if args.wide == 300 else f"batch_worth_wide{args.wide}.json")
    )
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def cmd_grid(args: argparse.Namespace) -> None:
    """The curve reward's knobs (threshold, exponent, radius, duplicate rule) on a grid, each setting's
    mean-within-seed Spearman against the *dev* worth (the choice) and the test worth (reported only);
    writes ``benchmarks/results/batch_worth_grid.json`` (or ``--out``)."""
    from scipy.stats import spearmanr

    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import CurveReward, class_counts

    dev, test = worth("dev", args.wide), worth("test", args.wide)
    # the scene rule once more for every --scene-correlations rho (None: an image's share of its scene)
    grid = [(*x, None) for x in curve_grid.settings(tuple(args.radii))]
    grid += [
        (t, a, r, rule, rho)
        for t, a, r, rule, _ in grid
        if rule == "scenes"
        for rho in args.scene_correlations
    ]
    per_seed: dict[int, list[tuple[float, float]]] = {}
    for seed, b in load_batches().items():
        names = [x["name"] for x in b["batches"] if (seed, x["name"]) in dev]
        if len(names) < 5:  # its rows are still being written
            continue
        c = cycle0(Path(b["dir"]), seed)
        idx = {x["name"]: np.asarray(x["indices"]) for x in b["batches"] if x["name"] in names}
        n_cls = c["counts"].shape[1]
        counts = {
            t: np.stack([class_counts(p, n_cls, t) for p in c["predictions"]]) for t in (0.1, 0.2, 0.3, 0.5)
        }
        rows = []
        for t, a, r, rule, rho in grid:
            opts = MgralOptions(curve_threshold=t, curve_exponent=a, curve_radius=r, curve_duplicates=rule,
                                curve_probe=args.probe, curve_probe_share=args.probe_share,
                                curve_scene_correlation=rho)  # fmt: skip
            rew = CurveReward(opts.curve_config(), unlabeled=c["unlabeled"], counts=counts[t],
                              labeled_counts=c["labeled_counts"], emb_unlabeled=c["embeddings"],
                              emb_labeled=c["emb_labeled"])  # fmt: skip
            v = [rew(idx[n]) for n in names]
            rows.append((float(spearmanr(v, [dev[(seed, n)] for n in names]).statistic),
                         float(spearmanr(v, [test[(seed, n)] for n in names]).statistic)))  # fmt: skip
        per_seed[seed] = rows
    table = [
        {"threshold": t, "exponent": a, "radius": r, "duplicates": rule,
         **({} if rho is None else {"scene_correlation": rho}),
         "dev": float(np.mean([per_seed[s][k][0] for s in per_seed])),
         "test": float(np.mean([per_seed[s][k][1] for s in per_seed]))}
        for k, (t, a, r, rule, rho) in enumerate(grid)
    ]  # fmt: skip
    curve_grid.report(table, Path(args.out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dir", type=Path)
    b.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("reference")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--train-seeds", type=int, nargs="+", default=list(REF_SEEDS))
    r.add_argument("--seeds", type=int, nargs="+", help="only these seeds' batches (default: all)")
    sc = sub.add_parser("score")
    g = sub.add_parser("grid")
    g.add_argument("--radii", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    g.add_argument("--out", default="benchmarks/results/batch_worth_grid.json")
    g.add_argument("--scene-correlations", type=float, nargs="*", default=[],
                   help="the scene rule again with curve_scene_correlation = each of these")  # fmt: skip
    curve_grid.add_probe_arguments(g)
    for p in (r, sc, g):
        p.add_argument(
            "--wide",
            type=int,
            default=300,
            metavar="N",
            help="dev and test splits of N images (300: the narrow ones; their first 300 images)",
        )
    a = ap.parse_args()
    {"build": cmd_build, "reference": cmd_reference, "score": cmd_score, "grid": cmd_grid}[a.cmd](a)

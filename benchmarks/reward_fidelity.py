"""How well MGRAL's reward says what a batch is worth (issue: reward fidelity).

The setting is one selection cycle of the ``demo`` protocol (hard built-in shapes: a 1,000-image pool,
100 random labeled images of seed 0, batches of 100 from the other 900). Subcommands, each resumable
(results are appended line by line to ``benchmarks/results/reward_fidelity/*.jsonl``; a rerun skips what
is done):

``reference``
    The value of each of about 40 *structured* batches (random, top/bottom entropy, coreset, concentrated
    in one embedding cluster, rich in rare classes, heavy in near-duplicates, rich or poor in objects,
    single-class, and mixtures): the mAP gain of retraining the detector from scratch on labeled + batch
    with the batch's true labels, over the same training on the labeled images alone, averaged over the
    training seeds common to every batch (``--train-seeds``, default 0 1; ``reward_fidelity.json`` uses
    0 1 2 3, ``reward_fidelity_2seeds.json`` 0 1). mAP is measured on the test split (what the figures report) and
    on a separate *dev* split generated for this benchmark (what any tuning looks at, so that nothing is
    tuned on the test split). Simulation only: no strategy ever reads it.
``proxy --name NAME [--set strategy_params.mgral.KEY=VALUE ...]``
    The leak-free proxy reward of every structured batch with MGRAL's options (and the oracle ablation
    with ``--set strategy_params.mgral.reward=oracle``), plus its repeatability (two seeds x two hold-out
    splits) and its cost per reward.
``estimators --name NAME``
    Table records (random batches and batches the policy proposes during a search) with their proxy
    rewards; every estimator is fitted on part of them and scored on held-out *policy* batches; the cost
    of one estimate against one proxy reward.
``grid [--train-seeds S ...]``
    The curve reward's threshold, exponent, radius and duplicate rule on a grid, each setting's Spearman
    against the dev reference (and the test reference, reported only).
``summary --proxy NAME [--oracle NAME] [--estimators NAME ...] [--train-seeds S ...]``
    Spearman correlations with bootstrap 95% intervals, the reference's own reliability and the ceiling it
    puts on any reward; writes ``benchmarks/results/reward_fidelity.json`` (or ``--out``).

    .venv/bin/python benchmarks/reward_fidelity.py reference --workers 2 --train-seeds 0 1 2 3
    .venv/bin/python benchmarks/reward_fidelity.py proxy --name default
    .venv/bin/python benchmarks/reward_fidelity.py summary --proxy default --train-seeds 0 1 2 3
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

RESULTS = Path("benchmarks/results/reward_fidelity")
LABELED, BUDGET, SEED, REF_SEEDS = 100, 100, 0, (0, 1)


# ------------------------------------------------------------------------------------------ the setting
def setting(threads: int = 2, detector_seed: int = 0) -> dict[str, Any]:
    """The pool, test and dev splits, the labeled set, and the cycle's detector (the loop's, or with
    ``detector_seed`` another training seed of it: how much a reward depends on the detector's training)."""
    import torch

    from mgral.config import load_config
    from mgral.data.pool import Pool
    from mgral.data.sources import load_run_data
    from mgral.data.synthetic import make_dataset, spec_for
    from mgral.detectors.detector import Detector
    from mgral.strategies.base import pool_view
    from mgral.training.supervised import train_supervised
    from mgral.utils import derive_seed, rng_for

    torch.set_num_threads(threads)
    cfg = load_config(preset="demo", overrides=["device=cpu", "progress=false"])
    data_dir = RESULTS / "data"
    pool_ds, test_ds = load_run_data(cfg.data, data_dir)
    s = cfg.data.synthetic
    dev_ds = make_dataset(
        s.generator, 300, derive_seed(s.seed, "dev"), data_dir / "dev", spec_for(s.difficulty, **s.options)
    )
    pool = Pool.random_initial(
        len(pool_ds), LABELED, rng_for(SEED, "initial")
    )  # the loop's seed-0 initial set
    view = pool_view(pool_ds, pool)
    other = [detector_seed] if detector_seed else []
    det = Detector(cfg.detector, pool_ds.num_classes, seed=derive_seed(SEED, "init", *other))
    ckpt = RESULTS / ("cycle0.pt" if detector_seed == 0 else f"cycle0-seed{detector_seed}.pt")
    if ckpt.is_file():
        det.load(ckpt)
    else:
        train_supervised(
            det,
            view,
            pool.labeled,
            cfg.train,
            seed=derive_seed(SEED, "train", 0, *other),
            progress=False,
        )
        det.save(ckpt)
    return {"cfg": cfg, "pool_ds": pool_ds, "test_ds": test_ds, "dev_ds": dev_ds, "pool": pool, "view": view,
            "detector": det}  # fmt: skip


# ------------------------------------------------------------------------------------------ structured batches
def structured_batches(st: dict[str, Any]) -> list[dict[str, Any]]:
    """About 40 batches of ``BUDGET`` unlabeled images whose values really differ. Ground truth is used to
    *build* some of them (rare classes, object counts): they are inputs of the benchmark, not strategies."""
    from sklearn.cluster import KMeans

    from mgral.strategies.coreset import k_center_greedy
    from mgral.strategies.entropy import box_entropy
    from mgral.utils import rng_for

    pool_ds, pool, det = st["pool_ds"], st["pool"], st["detector"]
    unl, lab = pool.unlabeled, pool.labeled
    inf = det.infer(st["view"], unl, predictions=True, embeddings=True, progress=False)
    emb_l = det.embed(st["view"], lab, progress=False)
    emb = inf.embeddings
    ent = [box_entropy(p.probs, True) if len(p.probs) else np.zeros(1) for p in inf.predictions]
    mean_ent = np.array([e.mean() for e in ent])
    sum_ent = np.array([e.sum() for e in ent])
    max_ent = np.array([e.max() for e in ent])
    n_obj = np.array([len(pool_ds[int(i)].labels) for i in unl])
    lab_counts = np.bincount(
        np.concatenate([pool_ds[int(i)].labels for i in lab]), minlength=pool_ds.num_classes
    )
    rare = np.argsort(lab_counts, kind="stable")[:2]
    common = np.argsort(-lab_counts, kind="stable")[:4]
    n_rare = np.array([np.isin(pool_ds[int(i)].labels, rare).sum() for i in unl])
    out: list[dict[str, Any]] = []

    def add(name: str, family: str, positions: np.ndarray) -> None:
        pos = np.unique(np.asarray(positions, np.int64))
        assert len(pos) == BUDGET, (name, len(pos))
        out.append({"name": name, "family": family, "indices": sorted(unl[pos].tolist())})

    def top(score: np.ndarray, k: int = BUDGET, exclude: np.ndarray | None = None) -> np.ndarray:
        order = np.lexsort((rng_for(SEED, "tie").random(len(score)), -score))
        if exclude is not None:
            order = order[~np.isin(order, exclude)]
        return order[:k]

    def fill(part: np.ndarray, tag: str) -> np.ndarray:
        rest = np.setdiff1d(np.arange(len(unl)), part)
        extra = rng_for(SEED, "fill", tag).choice(rest, BUDGET - len(part), replace=False)
        return np.concatenate([part, extra])

    for k in range(10):
        add(f"random-{k}", "random", rng_for(SEED, "ref-random", k).choice(len(unl), BUDGET, replace=False))
    add("entropy-mean-top", "entropy", top(mean_ent))
    add("entropy-sum-top", "entropy", top(sum_ent))
    add("entropy-max-top", "entropy", top(max_ent))
    add("entropy-mean-bottom", "entropy", top(-mean_ent))
    picks, _ = k_center_greedy(emb, emb_l, BUDGET, rng_for(SEED, "kc"))
    add("coreset", "coreset", picks)
    picks, _ = k_center_greedy(emb, np.zeros((0, emb.shape[1]), np.float32), BUDGET, rng_for(SEED, "kc0"))
    add("coreset-unseeded", "coreset", picks)
    assign = KMeans(8, n_init=4, random_state=0).fit_predict(emb)
    sizes = np.bincount(assign, minlength=8)
    for c in np.argsort(-sizes)[:6]:
        members = np.nonzero(assign == c)[0]
        if len(members) >= BUDGET:
            part = rng_for(SEED, "cluster", int(c)).choice(members, BUDGET, replace=False)
        else:  # a small cluster: all of it, then its nearest other images
            centre = emb[members].mean(0)
            others = np.argsort(np.linalg.norm(emb - centre, axis=1))
            part = np.concatenate([members, others[~np.isin(others, members)][: BUDGET - len(members)]])
        add(f"cluster-{int(c)}", "cluster", part)
    per = BUDGET // 8
    strat = np.concatenate([rng_for(SEED, "strat", c).choice(np.nonzero(assign == c)[0], min(per, sizes[c]), replace=False)
                            for c in range(8)])  # fmt: skip
    add("clusters-stratified", "cluster", fill(strat, "strat"))
    for frac in (1.0, 0.75, 0.5, 0.25):
        add(f"rare-{int(frac * 100)}", "rare", fill(top(n_rare, int(frac * BUDGET)), f"rare{frac}"))
    anchors = rng_for(SEED, "anchors").choice(len(unl), 6, replace=False)
    for j, a in enumerate(anchors):
        near = np.argsort(np.linalg.norm(emb - emb[a], axis=1), kind="stable")
        if j < 4:
            add(f"near-duplicates-{j}", "near-duplicates", near[:BUDGET])
        else:
            add(f"near-duplicates-half-{j}", "near-duplicates", fill(near[: BUDGET // 2], f"near{j}"))
    add("objects-most", "objects", top(n_obj))
    add("objects-most-half", "objects", fill(top(n_obj, BUDGET // 2), "most-half"))
    add("objects-fewest", "objects", top(-n_obj))
    add("objects-fewest-half", "objects", fill(top(-n_obj, BUDGET // 2), "fewest-half"))
    for c in common:
        has = np.array([c in pool_ds[int(i)].labels for i in unl], float)
        add(f"class-{int(c)}", "single-class", top(has + 1e-3 * n_obj))
    half_rare = top(n_rare, BUDGET // 2)
    add(
        "rare-and-objects", "mixture", np.concatenate([half_rare, top(n_obj, BUDGET // 2, exclude=half_rare)])
    )
    return out


def load_batches() -> list[dict[str, Any]]:
    path = RESULTS / "batches.json"
    if not path.is_file():
        st = setting()
        batches = structured_batches(st)
        from mgral.utils import atomic_write_json

        atomic_write_json(path, {"labeled": st["pool"].labeled.tolist(), "batches": batches})
    return json.loads(path.read_text())["batches"]


def done_keys(path: Path, *fields: str) -> set[tuple]:
    if not path.is_file():
        return set()
    return {
        tuple(json.loads(line)[f] for f in fields) for line in path.read_text().splitlines() if line.strip()
    }


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ------------------------------------------------------------------------------------------ reference
def _reference_job(job: tuple[str, list[int], int]) -> dict[str, Any]:
    """Train from scratch on labeled + batch (true labels) with training seed ``s``; mAP on test and dev."""
    name, batch, s = job
    from mgral.detectors.detector import Detector
    from mgral.metrics.voc import evaluate_voc_dataset
    from mgral.training.supervised import train_supervised
    from mgral.utils import derive_seed

    st = setting(threads=1)
    cfg, pool_ds = st["cfg"], st["pool_ds"]
    indices = np.sort(np.concatenate([st["pool"].labeled, np.asarray(batch, np.int64)]))
    det = Detector(cfg.detector, pool_ds.num_classes, seed=derive_seed(s, "ref-init"))
    t0 = time.perf_counter()
    train_supervised(det, pool_ds, indices, cfg.train, seed=derive_seed(s, "ref-train"), progress=False)
    row: dict[str, Any] = {"name": name, "seed": s, "train_s": time.perf_counter() - t0}
    for split in ("test", "dev"):
        ds = st[f"{split}_ds"]
        idx = np.arange(len(ds))
        preds = det.predict(ds, idx, progress=False)
        for metric, use_07 in (("voc07", True), ("voc", False)):
            row[f"{split}_{metric}"] = evaluate_voc_dataset(ds, idx, preds, use_07=use_07)["mAP"]
    return row


def cmd_reference(args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    batches = load_batches()
    out = RESULTS / "reference.jsonl"
    done = done_keys(out, "name", "seed")
    seeds = tuple(args.train_seeds)
    jobs = [("control", [], s) for s in seeds] + [
        (b["name"], b["indices"], s) for b in batches for s in seeds
    ]
    jobs = [j for j in jobs if (j[0], j[2]) not in done]
    print(f"{len(batches)} batches; {len(jobs)} trainings to run", flush=True)
    with ProcessPoolExecutor(args.workers) as ex:
        for k, row in enumerate(ex.map(_reference_job, jobs), 1):
            append(out, row)
            print(f"[{k}/{len(jobs)}] {row['name']} seed {row['seed']}: test {row['test_voc07']:.4f} dev "
                  f"{row['dev_voc07']:.4f} ({row['train_s']:.0f}s)", flush=True)  # fmt: skip


def reference_values(
    split: str = "test", metric: str = "voc07", seeds: tuple[int, ...] = REF_SEEDS
) -> dict[str, float]:
    """Batch name -> mean over training ``seeds`` of mAP(labeled + batch) - mAP(labeled)."""
    rows = [
        json.loads(line) for line in (RESULTS / "reference.jsonl").read_text().splitlines() if line.strip()
    ]
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        by.setdefault(r["name"], {})[r["seed"]] = r[f"{split}_{metric}"]
    control = by.pop("control")
    return {
        n: float(np.mean([v[s] - control[s] for s in seeds])) for n, v in by.items() if set(seeds) <= set(v)
    }


# ------------------------------------------------------------------------------------------ proxy
def mgral_options(sets: list[str]) -> Any:
    from mgral.config import load_config
    from mgral.strategies.base import strategy_options

    cfg = load_config(preset="demo", overrides=sets)
    return strategy_options("mgral", cfg.strategy_params.get("mgral"))


def make_reward(st: dict[str, Any], options: Any, seed: int, split: int) -> Any:
    """MGRAL's reward of this setting, built as the strategy builds it (``agent.make_reward``)."""
    import torch

    from mgral.strategies.base import TrainingSpec
    from mgral.strategies.rl.agent import make_reward as build

    spec = TrainingSpec.from_config(st["cfg"], st["pool_ds"].num_classes, torch.device("cpu"))
    pool = st["pool"]
    if "inference" not in st:  # the cycle's detector on the pool, once
        st["inference"] = st["detector"].infer(st["view"], pool.unlabeled, predictions=True, embeddings=True,
                                               progress=False)  # fmt: skip
        st["emb_labeled"] = st["detector"].embed(st["view"], pool.labeled, progress=False)
    inf = st["inference"]
    oracle = st["pool_ds"] if options.reward == "oracle" else None
    return build(options, spec, dataset=st["view"], labeled=pool.labeled, unlabeled=pool.unlabeled, seed=seed,
                 cycle=0, predictions=inf.predictions, emb_unlabeled=inf.embeddings, emb_labeled=st["emb_labeled"],
                 workdir=RESULTS / "work", oracle=oracle, split_seed=split)  # fmt: skip


def cmd_proxy(args: argparse.Namespace) -> None:
    """Proxy rewards of every structured batch under (seed, split) = (0, 0) and, for repeatability,
    (1, 1) (another training seed and another split of the labeled set into folds)."""
    batches = load_batches()
    options = mgral_options(args.set)
    st = setting(threads=args.threads, detector_seed=args.detector_seed)
    out = RESULTS / f"proxy_{args.name}.jsonl"
    done = done_keys(out, "name", "seed", "split")
    meta = RESULTS / f"proxy_{args.name}.options.json"
    meta.write_text(json.dumps({"set": args.set, "options": repr(options)}) + "\n")
    for seed, split in [(0, 0), (1, 1)] + ([(0, 1), (1, 0)] if args.full_repeat else []):
        todo = [b for b in batches if (b["name"], seed, split) not in done]
        if args.only:
            todo = [b for b in todo if b["family"] in args.only]
        if not todo:
            continue
        reward = make_reward(st, options, seed, split)
        t0 = time.perf_counter()
        reward.prepare()
        prep = time.perf_counter() - t0
        for b in todo:
            t = time.perf_counter()
            value = reward(np.asarray(b["indices"]))
            row = {"name": b["name"], "family": b["family"], "seed": seed, "split": split, "reward": value,
                   "seconds": time.perf_counter() - t, "prepare_s": prep}  # fmt: skip
            append(out, row)
            print(
                f"{args.name} seed {seed} split {split} {b['name']}: {value:+.4f} ({row['seconds']:.2f}s)",
                flush=True,
            )


def proxy_values(name: str, seed: int = 0, split: int = 0) -> dict[str, float]:
    rows = [
        json.loads(line)
        for line in (RESULTS / f"proxy_{name}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return {r["name"]: r["reward"] for r in rows if r["seed"] == seed and r["split"] == split}


def cmd_compare(args: argparse.Namespace) -> None:
    """Quick look (dev split unless --test): Spearman of proxies against the reference on common batches."""
    ref = reference_values("test" if args.test else "dev", args.metric, tuple(args.train_seeds))
    for name in args.names:
        for seed, split in ((0, 0), (1, 1)):
            px = proxy_values(name, seed, split)
            common = sorted(set(ref) & set(px))
            if len(common) < 5:
                continue
            rho, ci = spearman_ci(
                np.array([px[n] for n in common]), np.array([ref[n] for n in common]), n_boot=500
            )
            print(
                f"{name:28s} seed {seed} split {split}: n={len(common):2d} rho={rho:+.3f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
            )
        a, b = proxy_values(name, 0, 0), proxy_values(name, 1, 1)
        common = sorted(set(a) & set(b))
        if len(common) >= 5:
            rho, ci = spearman_ci(
                np.array([a[n] for n in common]), np.array([b[n] for n in common]), n_boot=500
            )
            print(f"{name:28s} repeatability: n={len(common):2d} rho={rho:+.3f} [{ci[0]:+.2f}, {ci[1]:+.2f}]")


def cmd_grid(args: argparse.Namespace) -> None:
    """The curve reward's knobs (threshold, exponent, radius, duplicate rule) on a grid, on this setting's
    42 structured batches: each setting's Spearman against the *dev* reference (what a choice would look
    at) and the test reference (reported only), both over ``--train-seeds``; writes
    ``benchmarks/results/reward_fidelity_grid.json``. With ``--oracle``, the oracle ablation's knobs (true
    counts: the threshold plays no part) to ``reward_fidelity_grid_oracle.json``. Nothing here changes a
    default."""
    from scipy.stats import spearmanr

    batches = load_batches()
    seeds = tuple(args.train_seeds)
    dev, test = reference_values("dev", "voc07", seeds), reference_values("test", "voc07", seeds)
    names = [b["name"] for b in batches if b["name"] in dev]
    idx = {b["name"]: np.asarray(b["indices"]) for b in batches}
    st = setting(threads=args.threads)
    grid = curve_grid.settings((0.3, 0.5), thresholds=(0.3,) if args.oracle else (0.2, 0.3, 0.4, 0.5))
    table = []
    # --probe and --probe-share are the embedding probe's (the grid's results were measured with it)
    probe = ["strategy_params.mgral.curve_probe_on=embeddings", f"strategy_params.mgral.curve_probe={args.probe}",
             f"strategy_params.mgral.curve_probe_share={args.probe_share}"]  # fmt: skip
    for t, a, r, rule in grid:
        options = mgral_options([*(["strategy_params.mgral.reward=oracle"] if args.oracle else []), *probe,
                                 f"strategy_params.mgral.curve_threshold={t}",
                                 f"strategy_params.mgral.curve_exponent={a}",
                                 f"strategy_params.mgral.curve_radius={r}",
                                 f"strategy_params.mgral.curve_duplicates={rule}"])  # fmt: skip
        reward = make_reward(st, options, 0, 0)
        v = [reward(idx[n]) for n in names]
        table.append({"threshold": t, "exponent": a, "radius": r, "duplicates": rule,
                      "dev": float(spearmanr(v, [dev[n] for n in names]).statistic),
                      "test": float(spearmanr(v, [test[n] for n in names]).statistic)})  # fmt: skip
    name = "reward_fidelity_grid_oracle.json" if args.oracle else "reward_fidelity_grid.json"
    curve_grid.report(table, Path(args.out) if args.out else Path("benchmarks/results") / name,
                      {"train_seeds": list(seeds), "n_batches": len(names)})  # fmt: skip


# ------------------------------------------------------------------------------------------ estimators
def cmd_estimators(args: argparse.Namespace) -> None:
    """Run MGRAL's own search on the setting (true rewards every ``true_every`` iterations), then score
    every estimator on the *policy* batches it proposed: fitted on the random records and the first half of
    the policy batches, evaluated on the second half (later in the search, where the policy has moved).

    The records' batches are kept (``records_NAME.pt``), so that every batch feature (``feature_variants``) is
    scored on the same batches and rewards; ``--search-seed`` runs the search with another seed (its policy,
    rollouts and random records), which is where a feature is chosen before the seed-0 search reports it."""
    import torch

    from mgral.loop.context import build_context
    from mgral.strategies.base import MemoryStore, StrategyState
    from mgral.strategies.rl.agent import MgralStrategy
    from mgral.strategies.rl.estimators import Records, make_estimator

    st = setting(threads=args.threads)
    sets = [*args.set, f"strategy_params.mgral.iterations={args.iterations}",
            f"strategy_params.mgral.true_every={args.true_every}", "strategy_params.mgral.final=best",
            "strategy_params.mgral.polish_swaps=0"]  # fmt: skip
    options = mgral_options(sets)
    strategy = MgralStrategy(options)
    seen: list[tuple[np.ndarray, np.ndarray]] = []  # every batch the search featurizes, and its feature
    featurizer = strategy.featurizer

    def keeping(*a: Any, **k: Any) -> Any:
        inner = featurizer(*a, **k)

        def feature(positions: np.ndarray) -> np.ndarray:
            value = inner(positions)
            seen.append((np.asarray(positions, np.int64).copy(), value))
            return value

        return feature

    strategy.featurizer = keeping  # type: ignore[method-assign]
    store = MemoryStore()
    pool = st["pool"]
    ctx, _ = build_context(
        strategy, "mgral", cfg=st["cfg"], detector=st["detector"], view=st["view"], unlabeled=pool.unlabeled,
        labeled=pool.labeled, seed=args.search_seed, cycle=0, state=StrategyState(store, "s"),
        workdir=RESULTS / "work", progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    sel = strategy.select(ctx, BUDGET)
    search_s = time.perf_counter() - t0
    records = Records.from_state(StrategyState(store, "s").get("records"))
    # the records' batches: records are added in the order of their features (an iteration whose reward
    # was estimated featurizes a batch without recording it)
    positions: list[np.ndarray] = []
    k = 0
    for feature in records.features:
        while not np.array_equal(seen[k][1], feature):
            k += 1
        positions.append(seen[k][0])
        k += 1
    torch.save({"records": records.state_dict(), "positions": [p.tolist() for p in positions]},
               RESULTS / f"records_{args.name}.pt")  # before scoring: kept if it fails  # fmt: skip
    kinds = np.array(records.kinds)
    policy = np.nonzero(kinds == "policy")[0]
    train_policy, test_policy = policy[: len(policy) // 2], policy[len(policy) // 2 :]
    fit_idx = np.concatenate([np.nonzero(kinds != "policy")[0], train_policy])
    rewards = np.asarray(records.rewards, float)
    out: dict[str, Any] = {"iterations": args.iterations, "true_every": args.true_every, "records": len(records),
                           "policy_records": len(policy), "held_out": len(test_policy), "search_s": search_s,
                           "search_seed": args.search_seed, "set": args.set, "estimators": {},
                           "features": {}}  # fmt: skip
    rng = np.random.default_rng(0)
    timing = [np.sort(rng.choice(len(pool.unlabeled), BUDGET, replace=False)) for _ in range(200)]
    default = "default"
    variants = {
        default: featurizer(ctx, np.asarray(ctx.embeddings_unlabeled), strategy.reward(ctx)),
        **feature_variants(strategy, ctx),
    }
    for fname, feat in variants.items():
        x = np.stack([feat(p) for p in positions])
        if fname == default:  # the strategy's own feature: the records hold it
            assert np.allclose(x, np.stack(records.features)), "the records' batches are out of order"
        fit = Records()
        for i in fit_idx:
            fit.add(x[i], rewards[i], records.groups[i], records.kinds[i])
        y_test = rewards[test_policy] - fit.offset(0)
        out["features"][fname] = {}
        for name in ("table", "ridge", "gp", "kernel"):
            est = make_estimator(name)
            est.fit(fit)
            pred = np.array([est.estimate(x[i]) for i in test_policy], dtype=float)
            answered = ~np.isnan(pred)
            row: dict[str, Any] = {"answered": float(answered.mean())}
            if answered.sum() > 3:
                rho, ci = spearman_ci(pred[answered], y_test[answered])
                row.update({"spearman": rho, "spearman_ci": ci,
                            "mae": float(np.abs(pred[answered] - y_test[answered]).mean())})  # fmt: skip
            t = time.perf_counter()
            for bt in timing:  # one estimate: the batch's feature, then the estimator
                est.estimate(feat(bt))
            row["estimate_s"] = (time.perf_counter() - t) / len(timing)
            out["features"][fname][name] = row
            print(fname, name, json.dumps(row), flush=True)
        if fname == default:
            out["estimators"] = out["features"][fname]
    out["reward_s"] = reward_seconds(strategy, ctx, timing)
    out["rescored"] = sel.info.get("rescored")
    (RESULTS / f"estimators_{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")


def feature_variants(strategy: Any, ctx: Any) -> dict[str, Any]:
    """The batch features compared (besides the strategy's own, ``default``): the composition with
    pseudo-objects counted at the pseudo-label threshold (the default before the session of 2026-12-03,
    fourth); counted at the curve reward's threshold (the default with the curve reward since); and that
    with the curve reward's near-duplicate groups (distinct scenes per image, share of the batch in scenes
    new to the labeled set); and that with the class composition discounted by the groups, as the reward
    counts objects (``discount``). These count pseudo-objects per image (``per_image``); the ``totals``
    variants count them in the batch, as the default since the session of 2026-12-03, fifth."""
    from mgral.strategies.rl.agent import labeled_class_counts
    from mgral.strategies.rl.features import CompositionFeaturizer

    opts = strategy.options
    reward = strategy.reward(ctx)
    scene = getattr(reward, "scene", None)
    common = {"softmax": ctx.softmax, "clusters": opts.clusters, "seed": ctx.seed}
    args = (ctx.embeddings_unlabeled, ctx.embeddings_labeled, ctx.predictions, labeled_class_counts(ctx))
    out = {
        "composition": CompositionFeaturizer(
            *args, threshold=opts.pseudo_threshold, per_image=True, **common
        ),
        "composition-curve": CompositionFeaturizer(
            *args, threshold=opts.curve_threshold, per_image=True, **common
        ),
    }
    if scene is not None:
        groups = {"groups": scene, "groups_labeled": reward.scene_labeled}
        out["composition-curve-scenes"] = CompositionFeaturizer(
            *args, threshold=opts.curve_threshold, per_image=True, **groups, **common
        )
        out["composition-curve-discounted"] = CompositionFeaturizer(
            *args, threshold=opts.curve_threshold, per_image=True, discount=True, **groups, **common
        )
    out["composition-totals"] = CompositionFeaturizer(*args, threshold=opts.curve_threshold, **common)
    if scene is not None:
        out["composition-totals-discounted"] = CompositionFeaturizer(
            *args, threshold=opts.curve_threshold, discount=True, **groups, **common
        )
    return out


def reward_seconds(strategy: Any, ctx: Any, batches: list[np.ndarray]) -> float:
    """Seconds of one true reward of the strategy's default (built once, as the search builds it)."""
    reward = strategy.reward(ctx)
    reward.prepare()
    t = time.perf_counter()
    for b in batches:
        reward(ctx.unlabeled[b])
    return (time.perf_counter() - t) / len(batches)


# ------------------------------------------------------------------------------------------ signals
def cmd_signals(args: argparse.Namespace) -> None:
    """Which leak-free statistics of a batch carry its worth at all: Spearman of each against the reference
    (dev split, what choices look at; test split reported). The statistics read only what a strategy sees
    (the cycle's detector on the pool, the labeled images' classes); two *oracle* rows (true objects and
    true rare-class objects) show what the ground truth would add. Writes ``signals.json``."""
    from mgral.strategies.entropy import box_entropy
    from mgral.strategies.rl.features import CompositionFeaturizer

    st = setting(threads=args.threads)
    pool_ds, pool, det = st["pool_ds"], st["pool"], st["detector"]
    unl, lab = pool.unlabeled, pool.labeled
    inf = det.infer(st["view"], unl, predictions=True, embeddings=True, progress=False)
    emb_l = det.embed(st["view"], lab, progress=False)
    preds = inf.predictions
    lab_counts = np.bincount(
        np.concatenate([st["view"][int(i)].labels for i in lab]), minlength=pool_ds.num_classes
    )
    feat = CompositionFeaturizer(inf.embeddings, emb_l, preds, lab_counts, softmax=True, per_image=True)
    idf = feat.idf
    rare = np.argsort(lab_counts, kind="stable")[:2]
    pos_of = {int(i): k for k, i in enumerate(unl)}
    per_image: dict[str, np.ndarray] = {}
    for thr in (0.3, 0.5):
        per_image[f"objects@{thr}"] = np.array([(p.scores >= thr).sum() for p in preds], float)
        per_image[f"idf-objects@{thr}"] = np.array([idf[p.labels[p.scores >= thr]].sum() for p in preds])
    # soft class mass: each detection's class distribution weighted by its score (no threshold)
    mass = np.array([(p.scores[:, None] * p.probs[:, 1:]).sum(0) if len(p.scores) else np.zeros(len(idf))
                     for p in preds])  # fmt: skip
    per_image["soft-objects"] = mass.sum(1)
    per_image["soft-idf-objects"] = mass @ idf
    per_image["soft-rare-mass"] = mass[:, rare].sum(1)
    ent = [box_entropy(p.probs, True) if len(p.probs) else np.zeros(1) for p in preds]
    per_image["entropy-sum"] = np.array([e.sum() for e in ent])
    per_image["entropy-mean"] = np.array([e.mean() for e in ent])
    per_image["oracle:objects"] = np.array([len(pool_ds[int(i)].labels) for i in unl], float)
    per_image["oracle:rare-objects"] = np.array(
        [np.isin(pool_ds[int(i)].labels, rare).sum() for i in unl], float
    )
    batches = load_batches()
    stats: dict[str, dict[str, float]] = {k: {} for k in per_image}
    names_f = [
        "coverage-entropy",
        "clusters-touched",
        "distance-to-labeled",
        "nn-distance",
        "near-duplicate-share",
    ]
    for k in names_f:
        stats[k] = {}
    for b in batches:
        pos = np.array([pos_of[i] for i in b["indices"]])
        for k, v in per_image.items():
            stats[k][b["name"]] = float(v[pos].mean())
        f = feat(pos)[-8:]
        for k, v in zip(names_f, f[2:7]):
            stats[k][b["name"]] = float(v)
    out: dict[str, Any] = {}
    for split in ("dev", "test"):
        ref = reference_values(split)
        for k, v in stats.items():
            common = sorted(set(ref) & set(v))
            rho, ci = spearman_ci(np.array([v[n] for n in common]), np.array([ref[n] for n in common]))
            out.setdefault(k, {})[split] = {"spearman": rho, "ci": ci, "n": len(common)}
    for k, v in out.items():
        print(f"{k:24s} dev {v['dev']['spearman']:+.2f} [{v['dev']['ci'][0]:+.2f}, {v['dev']['ci'][1]:+.2f}]"
              f"  test {v['test']['spearman']:+.2f} [{v['test']['ci'][0]:+.2f}, {v['test']['ci'][1]:+.2f}]")  # fmt: skip
    (RESULTS / "signals.json").write_text(json.dumps(out, indent=1) + "\n")


# ------------------------------------------------------------------------------------------ statistics
def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, list[float]]:
    """Spearman's rho and a percentile bootstrap 95% interval (pairs resampled)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 2 or len(np.unique(y)) < 2:  # a constant estimate ranks nothing
        return float("nan"), [float("nan"), float("nan")]
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        k = rng.integers(0, len(x), len(x))
        if len(np.unique(x[k])) > 2 and len(np.unique(y[k])) > 2:
            boots.append(spearmanr(x[k], y[k]).statistic)
    if not boots:
        return rho, [float("nan"), float("nan")]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return rho, [float(lo), float(hi)]


def cmd_summary(args: argparse.Namespace) -> None:
    """``benchmarks/results/reward_fidelity.json``: every Spearman with a bootstrap 95% interval."""
    seeds = tuple(args.train_seeds)
    ref = reference_values("test", "voc07", seeds)
    names = sorted(ref)
    out: dict[str, Any] = {
        "n_batches": len(names),
        "reference": f"test-split VOC07 mAP gain, mean of {len(seeds)} training seeds",
        "reference_training_seeds": list(seeds),
    }

    def corr(a: dict[str, float], b: dict[str, float], key: str) -> None:
        common = sorted(set(a) & set(b))
        rho, ci = spearman_ci(np.array([a[n] for n in common]), np.array([b[n] for n in common]))
        out[key], out[f"{key}_ci"], out[f"{key}_n"] = rho, ci, len(common)

    corr(proxy_values(args.proxy), ref, "spearman_proxy_vs_reference")
    corr(proxy_values(args.proxy), reference_values("dev", "voc07", seeds), "spearman_proxy_vs_reference_dev")
    if args.oracle:
        corr(proxy_values(args.oracle), ref, "spearman_oracle_vs_reference")
    corr(proxy_values(args.proxy, 0, 0), proxy_values(args.proxy, 1, 1), "proxy_repeatability")
    if args.repeat:  # the same reward over a cycle detector trained with another seed
        corr(proxy_values(args.proxy), proxy_values(args.repeat), "proxy_repeatability_detector")
    # the reference's own repeatability: training seed 0 against seed 1
    rows = [
        json.loads(line) for line in (RESULTS / "reference.jsonl").read_text().splitlines() if line.strip()
    ]
    by = {(r["name"], r["seed"]): r["test_voc07"] for r in rows}
    per_seed = [{n: by[(n, s)] - by[("control", s)] for n in names} for s in seeds]
    corr(per_seed[0], per_seed[1], "reference_seed_agreement")
    # every pair of training seeds, and what that says of their mean: its reliability (Spearman-Brown) and
    # the highest correlation any reward can have with it (the square root of the reliability)
    from itertools import combinations

    from scipy.stats import spearmanr

    pairwise = [
        float(spearmanr([a[n] for n in names], [b[n] for n in names]).statistic)
        for a, b in combinations(per_seed, 2)
    ]
    r = float(np.mean(pairwise))
    out["reference_seed_agreement_pairwise"] = pairwise
    out["reference_reliability"] = len(seeds) * r / (1 + (len(seeds) - 1) * r)
    out["reference_ceiling"] = float(np.sqrt(max(out["reference_reliability"], 0.0)))
    values = np.array([ref[n] for n in names])
    out["reference_spread"] = {
        "min": float(values.min()),
        "max": float(values.max()),
        "std": float(values.std()),
    }
    prox = [
        json.loads(line)
        for line in (RESULTS / f"proxy_{args.proxy}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    out["proxy_s"] = float(np.mean([r["seconds"] for r in prox]))
    out["proxy_prepare_s"] = float(np.mean([r["prepare_s"] for r in prox]))
    if args.estimators:
        est = json.loads((RESULTS / f"estimators_{args.estimators[0]}.json").read_text())
        best = max(
            (k for k, v in est["estimators"].items() if not np.isnan(v.get("spearman", float("nan")))),
            key=lambda k: est["estimators"][k]["spearman"],
        )
        chosen = args.estimator or best
        row = est["estimators"][chosen]
        out["estimator"] = chosen
        out["spearman_estimator_vs_proxy"], out["spearman_estimator_vs_proxy_ci"] = (
            row["spearman"],
            row["spearman_ci"],
        )
        out["estimator_held_out_policy_batches"] = est["held_out"]
        out["estimate_s"] = row["estimate_s"]
        out["proxy_over_estimate"] = out["proxy_s"] / row["estimate_s"]
        out["estimators"] = est["estimators"]
        if "reward_s" in est:  # the true reward timed by the estimators run itself, next to the estimates
            out["reward_over_estimate"] = est["reward_s"] / row["estimate_s"]
        semi = RESULTS / "proxy_semi.jsonl"
        if semi.is_file():  # the paper's semi-supervised proxy, which the table was made to replace
            secs = [json.loads(line)["seconds"] for line in semi.read_text().splitlines() if line.strip()]
            out["semi_proxy_s"] = float(np.mean(secs))
            out["semi_proxy_over_estimate"] = out["semi_proxy_s"] / row["estimate_s"]
        # every search (one per --estimators name): each feature's and estimator's Spearman on its own
        # held-out policy batches, so that one search's luck is not the figure
        runs = [json.loads((RESULTS / f"estimators_{n}.json").read_text()) for n in args.estimators]
        searches: dict[str, Any] = {}
        for feature in runs[0].get("features", {"default": runs[0]["estimators"]}):
            for name in runs[0]["estimators"]:
                rho = [r.get("features", {}).get(feature, {}).get(name, {}).get("spearman", float("nan"))
                       for r in runs]  # fmt: skip
                searches.setdefault(feature, {})[name] = {"spearman": rho, "mean": float(np.mean(rho))}
        out["estimator_searches"] = {
            "seeds": [r.get("search_seed", SEED) for r in runs],
            "features": searches,
        }
    out["families"] = {}
    batches = {b["name"]: b["family"] for b in load_batches()}
    px = proxy_values(args.proxy)
    for fam in sorted(set(batches.values())):
        members = [n for n in names if batches[n] == fam]
        out["families"][fam] = {"reference": float(np.mean([ref[n] for n in members])),
                                "proxy": float(np.mean([px[n] for n in members if n in px]))}  # fmt: skip
    out["proxy_name"], out["oracle_name"], out["estimators_name"] = args.proxy, args.oracle, args.estimators
    path = Path(args.out)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("estimators", "families", "estimator_searches")},
                     indent=1))  # fmt: skip


def cmd_polished(args: argparse.Namespace) -> None:
    """What the final batch's polish is worth in reality: from the structured batch the curve reward ranks
    first, ``--swaps`` swaps of hill climbing with the reward (``search.polish``, as the strategy does);
    then the polished batch's reference (true-label retraining, both training seeds) next to the
    structured batches' (``reference_polished.jsonl``; decide on the dev split)."""
    from mgral.strategies.rl.search import polish
    from mgral.utils import rng_for

    batches = load_batches()
    st = setting(threads=args.threads)
    reward = make_reward(st, mgral_options(args.set), 0, 0)
    reward.prepare()
    unl = np.asarray(st["pool"].unlabeled)
    where = {int(i): k for k, i in enumerate(unl)}
    scored = sorted(batches, key=lambda b: -reward(np.asarray(b["indices"])))
    start = np.array([where[int(i)] for i in scored[0]["indices"]])
    t0 = time.perf_counter()
    pos, rec = polish(lambda p: reward(unl[p]), start, len(unl), args.swaps, rng_for(0, "polish", 0))
    rec.update(start_batch=scored[0]["name"], seconds=time.perf_counter() - t0)
    print(json.dumps(rec), flush=True)
    out = RESULTS / "reference_polished.jsonl"
    name = f"polished-{args.swaps}"
    done = done_keys(out, "name", "seed")
    jobs = [(name, unl[pos].tolist(), s) for s in REF_SEEDS if (name, s) not in done]
    with ProcessPoolExecutor(args.workers) as ex:
        for row in ex.map(_reference_job, jobs):
            append(out, {**row, "polish": rec})
    rows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    ctrl = [json.loads(x) for x in (RESULTS / "reference.jsonl").read_text().splitlines() if x.strip()]
    control = {r["seed"]: r for r in ctrl if r["name"] == "control"}
    for split in ("dev", "test"):
        ref = reference_values(split, "voc07")
        gain = np.mean(
            [r[f"{split}_voc07"] - control[r["seed"]][f"{split}_voc07"] for r in rows if r["name"] == name]
        )
        rank = sum(v > gain for v in ref.values())
        print(
            f"{split}: polished {gain:+.4f}; structured batches {min(ref.values()):+.4f} .. "
            f"{max(ref.values()):+.4f} (mean {np.mean(list(ref.values())):+.4f}); {rank} of {len(ref)} above it; "
            f"start batch {scored[0]['name']} {ref[scored[0]['name']]:+.4f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("reference")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(REF_SEEDS),
                   help="training seeds common to every batch (the reference averages them)")  # fmt: skip
    p.set_defaults(func=cmd_reference)
    p = sub.add_parser("proxy")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--set", action="append", default=[], help="an mgral option: strategy_params.mgral.KEY=VALUE"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-repeat", action="store_true", help="also (seed, split) = (0, 1) and (1, 0)")
    p.add_argument("--only", nargs="*", help="only these batch families")
    p.add_argument(
        "--detector-seed", type=int, default=0, help="the cycle's detector trained with another seed"
    )
    p.set_defaults(func=cmd_proxy)
    p = sub.add_parser("estimators")
    p.add_argument("--name", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--true-every", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--search-seed", type=int, default=SEED, help="seed of the search (choices look at seed 1)"
    )
    p.set_defaults(func=cmd_estimators)
    p = sub.add_parser("summary")
    p.add_argument("--proxy", required=True)
    p.add_argument("--oracle")
    p.add_argument("--estimators", nargs="+", help="estimators runs; the first is the one reported")
    p.add_argument("--repeat", help="the same proxy measured with --detector-seed 1 (repeatability)")
    p.add_argument("--estimator", help="report this estimator (default: the best on held-out policy batches)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(REF_SEEDS),
                   help="the reference's training seeds (each must have every batch's row)")  # fmt: skip
    p.add_argument("--out", default="benchmarks/results/reward_fidelity.json")
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("signals")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_signals)
    p = sub.add_parser("polished")
    p.add_argument("--swaps", type=int, default=3000)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_polished)
    p = sub.add_parser("grid")
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(REF_SEEDS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--oracle", action="store_true", help="the oracle ablation's knobs")
    curve_grid.add_probe_arguments(p)
    p.add_argument(
        "--out", help="where the grid goes (default: benchmarks/results/reward_fidelity_grid*.json)"
    )
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("compare")
    p.add_argument("names", nargs="+")
    p.add_argument("--test", action="store_true")
    p.add_argument("--metric", default="voc07")
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(REF_SEEDS))
    p.set_defaults(func=cmd_compare)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

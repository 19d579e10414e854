"""Semi-supervised against supervised detectors on the hard built-in data (issue: ISD/SED as the mAP proxy).

For each model (tiny SSD with ISD, tiny RetinaNet with SED), labeled-set size and seed: train the
supervised model and the semi-supervised one (the rest of the 1,000-image pool unlabeled) with the same
budget of steps, evaluate VOC07 mAP on the 300-image test split; measure pseudo-label precision and
recall (score >= 0.5, IoU >= 0.5, same class) against the hidden ground truth of the unlabeled images.

    .venv/bin/python benchmarks/semi_supervised.py --sizes 200 600 --seeds 0 1 2 [--iterations 500]

Writes benchmarks/results/semi_supervised.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from mgral.config import load_config
from mgral.data.pool import Pool
from mgral.data.sources import load_run_data
from mgral.detectors.detector import Detector
from mgral.metrics.voc import evaluate_voc_dataset
from mgral.strategies.base import pool_view
from mgral.training.semi_supervised import train_semi_supervised
from mgral.training.supervised import train_supervised
from mgral.utils import derive_seed, rng_for


def pseudo_label_quality(preds, dataset, indices, thresh: float = 0.5) -> dict[str, float]:
    tp = n_pred = n_gt = 0
    for p, i in zip(preds, indices):
        rec = dataset[int(i)]
        keep = p.scores >= thresh
        boxes, labels = torch.as_tensor(p.boxes[keep]), p.labels[keep]
        n_pred += len(labels)
        n_gt += len(rec.labels)
        if len(labels) == 0 or len(rec.labels) == 0:
            continue
        iou = box_iou(boxes, torch.as_tensor(rec.boxes)).numpy()
        iou[labels[:, None] != rec.labels[None, :]] = 0
        taken: set[int] = set()
        for k in np.argsort(-p.scores[keep]):
            j = int(np.argmax(iou[k]))
            if iou[k, j] >= 0.5 and j not in taken:
                taken.add(j)
                tp += 1
    return {"precision": tp / max(1, n_pred), "recall": tp / max(1, n_gt), "boxes": n_pred}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 600])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["tiny_ssd", "tiny_retinanet"])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/semi_supervised.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(preset="demo", overrides=["device=cpu", f"train.iterations={args.iterations}"])
    pool_ds, test = load_run_data(cfg.data, Path("benchmarks/results/_data"))
    test_idx = np.arange(len(test))
    rows = []
    for model in args.models:
        det_cfg = replace(cfg.detector, name=model)
        # the tiny RetinaNet trains with SGD (AdamW at the SSD's settings converges far slower from scratch)
        train_cfg = (
            cfg.train
            if model != "tiny_retinanet"
            else replace(cfg.train, optimizer="sgd", lr=0.01, grad_clip=10.0)
        )
        for n in args.sizes:
            for seed in args.seeds:
                pool = Pool.random_initial(len(pool_ds), n, rng_for(seed, "initial"))
                view = pool_view(pool_ds, pool)  # the unlabeled images' annotations are hidden
                row = {"model": model, "labeled": n, "seed": seed}
                for kind in ("supervised", "semi"):
                    det = Detector(det_cfg, pool_ds.num_classes, seed=derive_seed(seed, "init"))
                    t = time.perf_counter()
                    if kind == "supervised":
                        train_supervised(
                            det,
                            view,
                            pool.labeled,
                            train_cfg,
                            seed=derive_seed(seed, "train", 0),
                            progress=False,
                        )
                    else:
                        train_semi_supervised(det, view, pool.labeled, pool.unlabeled, train_cfg, cfg.semi,
                                              seed=derive_seed(seed, "train", 0), progress=False)  # fmt: skip
                    row[f"{kind}_s"] = time.perf_counter() - t
                    preds = det.predict(test, test_idx, progress=False)
                    row[f"{kind}_map"] = evaluate_voc_dataset(test, test_idx, preds)["mAP"]
                    upreds = det.predict(view, pool.unlabeled, progress=False)
                    q = pseudo_label_quality(upreds, pool_ds, pool.unlabeled)  # hidden truth: simulation only
                    row[f"{kind}_pseudo_precision"], row[f"{kind}_pseudo_recall"] = (
                        q["precision"],
                        q["recall"],
                    )
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary = {}
    for model in args.models:
        for n in args.sizes:
            sel = [r for r in rows if r["model"] == model and r["labeled"] == n]
            summary[f"{model}@{n}"] = {
                k: [float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel]))]
                for k in ("supervised_map", "semi_map", "supervised_pseudo_precision", "semi_pseudo_precision",
                          "supervised_pseudo_recall", "semi_pseudo_recall", "supervised_s", "semi_s")
            }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"iterations": args.iterations, "rows": rows, "summary": summary}, indent=1) + "\n"
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

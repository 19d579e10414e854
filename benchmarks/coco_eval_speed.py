"""`mgral evaluate --metric coco` (faster-coco-eval) against pycocotools on 5,000 images.

Builds a COCO ground truth of N images (random boxes, 80 categories, annotations only) and a results file
with D detections per image (jittered ground truth plus noise), then times the CLI with each backend
(whole command, JSON parsing included) and checks the twelve numbers agree.

    .venv/bin/python benchmarks/coco_eval_speed.py [--images 5000] [--dets 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build(out: Path, n_images: int, dets_per_image: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
        k = int(rng.integers(1, 15))
        xy = rng.uniform(0, 400, (k, 2))
        wh = rng.uniform(8, 200, (k, 2))
        cats = rng.integers(1, 81, k)
        for b, c in zip(np.concatenate([xy, wh], 1), cats):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": b.round(2).tolist(),
                         "area": float(b[2] * b[3]), "iscrowd": 0})  # fmt: skip
        for j in range(dets_per_image):
            if j < k:
                b = np.concatenate([xy[j] + rng.normal(0, 4, 2), wh[j] * rng.uniform(0.8, 1.2, 2)])
                c = int(cats[j]) if rng.random() < 0.8 else int(rng.integers(1, 81))
            else:
                b = np.concatenate([rng.uniform(0, 400, 2), rng.uniform(8, 200, 2)])
                c = int(rng.integers(1, 81))
            results.append(
                {"image_id": i, "category_id": c, "bbox": b.round(2).tolist(), "score": float(rng.random())}
            )
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, 81)]
    out.mkdir(parents=True, exist_ok=True)
    gt, dt = out / "gt.json", out / "dets.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt.write_text(json.dumps(results))
    return gt, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--work", default="benchmarks/results/_coco_eval")
    args = ap.parse_args()
    gt, dt = build(Path(args.work), args.images, args.dets)
    mgral = str(Path(sys.executable).parent / "mgral")
    out = {}
    for backend in ("faster", "pycocotools"):
        t = time.perf_counter()
        res = subprocess.run([mgral, "evaluate", "--gt", str(gt), "--pred", str(dt), "--metric", "coco",
                              "--backend", backend], capture_output=True, text=True, check=True)  # fmt: skip
        out[backend] = {"seconds": time.perf_counter() - t, "stats": json.loads(res.stdout)}
    diff = max(
        abs(out["faster"]["stats"][k] - out["pycocotools"]["stats"][k]) for k in out["faster"]["stats"]
    )
    summary = {
        "images": args.images, "detections": args.images * args.dets,
        "faster_s": round(out["faster"]["seconds"], 2), "pycocotools_s": round(out["pycocotools"]["seconds"], 2),
        "speedup": round(out["pycocotools"]["seconds"] / out["faster"]["seconds"], 2), "max_abs_diff": diff,
        "AP": out["faster"]["stats"]["AP"],
    }  # fmt: skip
    Path("benchmarks/results/coco_eval_speed.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""``mgral query`` on a large pool of small built-in images: memory, progress and time against pool size
(issue: reliability, scale).

Generates 64-px built-in shapes once (the largest size; smaller pools are prefixes, which the generator
guarantees), writes one partly labeled COCO file per pool size (the first 1,000 images labeled), then runs
``mgral query --strategy entropy`` and ``--strategy coreset`` with budget 1,000 in a fresh process for each
size, reading the process's peak resident memory and the seconds the query reports (training, the pool's
inference, the selection itself).

    .venv/bin/python -m benchmarks.scale --sizes 10000 30000 100000 --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LABELED, BUDGET = 1000, 1000
QUERY = ["--preset", "smoke", "--set", "detector.image_size=64", "--set", "train.iterations=100", "--set",
         "train.eval_batch_size=128", "--set", "progress=true"]  # fmt: skip


def dataset(root: Path, n_max: int) -> Path:
    """64-px hard shapes, ``n_max`` images, generated once under ``root``."""
    from mgral.data.synthetic import make_dataset, spec_for

    make_dataset("shapes", n_max, 0, root / "all", spec_for("hard", image_size=64))
    return root / "all"


def partial(root: Path, data: Path, n: int) -> Path:
    """A COCO file over the first ``n`` images, the first ``LABELED`` of them labeled."""
    doc = json.loads((data / "annotations.json").read_text())
    ids = {im["id"] for im in doc["images"][:n]}
    labeled = {im["id"] for im in doc["images"][:LABELED]}
    images = [
        dict(im, file_name=str((data / "images" / im["file_name"]).resolve())) for im in doc["images"][:n]
    ]
    for im in images:
        if im["id"] in labeled:
            im["labeled"] = True
    out = {"images": images, "categories": doc["categories"],
           "annotations": [a for a in doc["annotations"] if a["image_id"] in labeled and a["image_id"] in ids]}  # fmt: skip
    path = root / f"pool-{n}.json"
    path.write_text(json.dumps(out))
    return path


def query(path: Path, strategy: str, out: Path) -> dict:
    """One ``mgral query`` in a child process; its reported seconds and peak resident memory (MB)."""
    cmd = [sys.executable, "-c", "import sys, resource; from mgral.cli import main; rc = main(sys.argv[1:]); "
           "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
           "query", "--data", str(path), "--budget", str(BUDGET), "--strategy", strategy, "--out", str(out),
           "--allow-outside-paths", *QUERY]  # fmt: skip
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    peak_kb = int(next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("PEAK_KB")))
    doc = json.loads(out.read_text())
    progress_lines = sum("infer pool" in line for line in res.stderr.splitlines())
    return {"strategy": strategy, "pool": doc["n_unlabeled"], "train_s": doc["seconds"]["train"],
            "infer_s": doc["seconds"]["infer"], "select_s": doc["seconds"]["select"], "wall_s": wall,
            "peak_mb": peak_kb / 1024, "progress_lines": progress_lines}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    ap.add_argument("--strategies", nargs="+", default=["entropy", "coreset"])
    ap.add_argument("--work", default="benchmarks/results/_scale")
    ap.add_argument("--out", default="benchmarks/results/scale.json")
    args = ap.parse_args()
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = dataset(root, max(args.sizes))
    rows = [{"generate_s": time.perf_counter() - t, "images": max(args.sizes)}]
    for n in args.sizes:
        path = partial(root, data, n)
        for strategy in args.strategies:
            row = query(path, strategy, root / f"picks-{strategy}-{n}.json")
            row["images"] = n
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

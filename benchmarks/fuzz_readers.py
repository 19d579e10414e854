"""The fuzzed-reader properties of ``tests/test_fuzz_readers.py`` with many more (random) examples.

``make test`` runs each property with a few hundred derandomized examples; this runs the same properties
with ``--scale`` times as many, from a fresh random seed each time, and prints (and records in
``benchmarks/results/fuzz_readers.json``) how many examples each ran, how many loaded and how many were
refused with ``InputError``. A failing property prints hypothesis's minimal failing example and the
script exits 1.

    .venv/bin/python benchmarks/fuzz_readers.py [--scale 20] [--only coco voc ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=20.0, help="multiplier of each property's examples")
    parser.add_argument("--only", nargs="*", default=[], help="substrings of the property names to run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz_readers.json"))
    args = parser.parse_args()

    os.environ["MGRAL_FUZZ_SCALE"] = str(args.scale)  # read when the test module is imported
    sys.path.insert(0, str(ROOT))
    logging.disable(logging.WARNING)  # the readers' "clipped N boxes" warnings, thousands of them
    warnings.simplefilter("error")  # as in the test module: a Python warning on stderr fails a property
    import torch

    torch.set_num_threads(2)
    from tests import test_fuzz_readers as fuzz

    properties = [(n, f) for n, f in vars(fuzz).items() if n.startswith("test_") and callable(f)]
    properties = [(n, f) for n, f in properties if not args.only or any(s in n for s in args.only)]
    rows, failed = [], []
    for name, prop in properties:
        before = dict(fuzz.COUNTS)
        calls = [0]
        inner = prop.hypothesis.inner_test  # hypothesis's documented hook around each example

        def counted(*a, _inner=inner, _calls=calls, **kw):
            _calls[0] += 1
            return _inner(*a, **kw)

        prop.hypothesis.inner_test = counted
        start = time.perf_counter()
        try:
            prop()
            status = "passed"
        except Exception:  # a falsified property: hypothesis's report, then go on with the others
            traceback.print_exc()
            status = "FAILED"
            failed.append(name)
        seconds = time.perf_counter() - start
        counts = {k: v - before.get(k, 0) for k, v in fuzz.COUNTS.items() if v != before.get(k, 0)}
        rows.append({"property": name, "status": status, "examples": calls[0], "seconds": round(seconds, 1),
                     "outcomes": counts})  # fmt: skip
        print(f"{name}: {status}, {calls[0]:,} examples in {seconds:.1f}s", flush=True)
        for k, v in sorted(counts.items()):
            print(f"    {k}: {v:,}", flush=True)

    total = sum(r["examples"] for r in rows)
    print(
        f"\n{len(rows) - len(failed)}/{len(rows)} properties held over {total:,} examples (scale {args.scale:g})"
    )
    doc = {"scale": args.scale, "examples": total, "properties": rows, "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

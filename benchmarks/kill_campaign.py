"""Kill campaign: a run killed with SIGKILL at seeded moments, resumed each time, must end exactly as an
uninterrupted run of the same config (issue: reliability).

The moments are fault-injection points (``MGRAL_CRASH_AT=point:n``, :func:`mgral.utils.crash_point`): the
process kills itself with SIGKILL the ``n``-th time it reaches ``point``, which lands kills reliably inside
training steps, evaluation, selection, MGRAL's table and search, a file being written (complete, not yet
renamed into place) and a store transaction (written, not committed) — moments a timer would rarely hit.
Kill ``k`` is at the first or second time (seeded) the resumed process reaches point ``k mod 7``: every
attempt gets there, moves the run forward, and dies there. After the kills the run finishes, and its ``results.csv`` (timings aside), ``selections.csv``
and store (cycles, selections, selection info without timings, strategy state) are compared with the
reference's. Also SIGTERM and SIGINT (Ctrl-C) in the middle of a run: exit codes 143 and 130 with a
message saying how to resume, and the resumed run equals the reference.

    .venv/bin/python -m benchmarks.kill_campaign --kills 10 --out benchmarks/results/kill_campaign.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

POINTS = ("train-step", "store-write", "evaluate", "file-write", "select", "mgral-table", "mgral-search")

CONFIG = [
    "loop.strategies=[random,entropy,mgral]", "loop.cycles=3", "train.iterations=8", "train.checkpoint_every=3",
    "device=cpu", "strategy_params.mgral.iterations=6", "strategy_params.mgral.table_size=3",
    "strategy_params.mgral.passes=0.5", "strategy_params.mgral.base_iterations=4", "strategy_params.mgral.true_every=3",
    "strategy_params.mgral.presize=1", "strategy_params.mgral.rescore_top=2",
]  # fmt: skip


def mgral_run(
    out: Path, cfg: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mgral.cli", "-q", "run", "--config", str(cfg), "--out", str(out), "--workers", "1",
           "--threads", "1"]  # fmt: skip
    return subprocess.run(
        cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def count_points(out: Path, cfg: Path) -> dict[str, int]:
    """How many times an uninterrupted run reaches each point (the run is the reference as well)."""
    env = {"MGRAL_COUNT_POINTS": str(out / "points.jsonl")}
    res = mgral_run(out, cfg, env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    counts: dict[str, int] = {}
    for line in (out / "points.jsonl").read_text().splitlines():
        name = json.loads(line)
        counts[name] = counts.get(name, 0) + 1
    return counts


def snapshot(run_dir: Path) -> dict[str, Any]:
    """What must be identical between runs: results without timings, selections, the store's content."""
    from mgral.utils import safe_torch_load

    def csv_rows(name: str, drop: tuple[str, ...] = ()) -> list[list[str]]:
        lines = (run_dir / name).read_text().splitlines()
        head = lines[0].split(",")
        keep = [k for k, h in enumerate(head) if h not in drop]
        return [[row.split(",")[k] for k in keep] for row in lines]

    db = sqlite3.connect(run_dir / "store.sqlite")
    try:
        cycles = db.execute("SELECT strategy, seed, cycle, n_labeled, map, metrics, train_loss FROM cycles "
                            "ORDER BY strategy, seed, cycle").fetchall()  # fmt: skip
        selections = db.execute("SELECT * FROM selections ORDER BY strategy, seed, cycle, rank").fetchall()
        infos = []
        for s, seed, c, info in db.execute("SELECT * FROM selection_info ORDER BY strategy, seed, cycle"):
            d = json.loads(info)
            infos.append((s, seed, c, {k: v for k, v in d.items() if k not in ("seconds", "setup_s")}))
        kv = {
            (scope, key): _plain(safe_torch_load(bytes(v)))
            for scope, key, v in db.execute("SELECT * FROM kv")
        }
    finally:
        db.close()
    timings = ("train_s", "infer_s", "setup_s", "select_s", "eval_s")
    return {"results": csv_rows("results.csv", timings), "selections": csv_rows("selections.csv"), "cycles": cycles,
            "store_selections": selections, "infos": infos, "kv": kv}  # fmt: skip


def _plain(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, int]:
    """Per part, the number of rows (or keys) that differ, plus rows missing or duplicated."""
    out = {}
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            out[key] = sum(x.get(k) != y.get(k) for k in set(x) | set(y))
        else:
            out[key] = sum(p != q for p, q in zip(x, y)) + abs(len(x) - len(y))
    return out


def campaign(work: Path, kills: int, seed: int = 0) -> dict[str, Any]:
    """Reference run, then a run killed ``kills`` times at seeded points and resumed; their differences."""
    from mgral.config import load_config, save_config

    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "config.yaml"
    save_config(load_config(preset="smoke", overrides=CONFIG), cfg_path)
    t0 = time.perf_counter()
    counts = count_points(work / "reference", cfg_path)
    reference_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    points = [p for p in POINTS if counts.get(p)]
    # kill k hits point k mod 7 at its first or second occurrence *in that attempt* (drawn): every attempt
    # gets there, moves the run forward, and dies there
    plan = [(points[k % len(points)], int(rng.integers(1, 3))) for k in range(kills)]
    run_dir = work / "killed"
    log = []
    for point, n in plan:
        res = mgral_run(run_dir, cfg_path, {"MGRAL_CRASH_AT": f"{point}:{n}"})
        log.append(
            {
                "point": point,
                "at": n,
                "returncode": res.returncode,
                "killed": res.returncode == -signal.SIGKILL,
            }
        )
    final = mgral_run(run_dir, cfg_path)
    if final.returncode != 0:
        raise RuntimeError(final.stderr)
    diff = differences(snapshot(work / "reference"), snapshot(run_dir))
    ref = snapshot(work / "reference")
    return {"kills": sum(e["killed"] for e in log), "attempts": log, "points_reached": counts,
            "rows_compared": {k: len(v) for k, v in ref.items()}, "differences": diff,
            "reference_s": reference_s}  # fmt: skip


def interrupt(work: Path, sig: int, after: str = "select") -> dict[str, Any]:
    """Send ``sig`` to a run when it first reaches ``after`` (polling its log), then resume it."""
    from mgral.config import load_config, save_config

    cfg_path = work / "config.yaml"
    if not cfg_path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        save_config(load_config(preset="smoke", overrides=CONFIG), cfg_path)
    out = work / f"signal-{sig}"
    cmd = [sys.executable, "-m", "mgral.cli", "run", "--config", str(cfg_path), "--out", str(out), "--workers", "1",
           "--threads", "1"]  # fmt: skip
    # a job started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python keeps it ignored:
    # restore the default so that the child handles Ctrl-C as it would in a terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "results.csv").is_file():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return {"returncode": proc.returncode, "message": err.strip().splitlines()[-1] if err.strip() else "",
            "resumed": resumed.returncode, "out": str(out)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="benchmarks/results/_kill_campaign")
    ap.add_argument("--out", default="benchmarks/results/kill_campaign.json")
    args = ap.parse_args()
    work = Path(args.work)
    result = campaign(work, args.kills, args.seed)
    ref = snapshot(work / "reference")
    for sig in (signal.SIGTERM, signal.SIGINT):
        r = interrupt(work, sig)
        r["equals_reference"] = differences(ref, snapshot(Path(r["out"])))
        result[signal.Signals(sig).name] = r
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "attempts"}, indent=1))


if __name__ == "__main__":
    main()

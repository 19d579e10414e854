"""The ``mgral`` command line. Only this module prints and picks exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, nothing half-written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mgral.errors import InputError
from mgral.integrations.cli import add_commands

log = logging.getLogger("mgral")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError("", f"{self.prog}: {message}")


def _load_cfg(args: argparse.Namespace, default_preset: str | None = None) -> Any:
    from mgral.config import load_config

    preset = args.preset or (None if args.config else default_preset)
    return load_config(preset=preset, file=args.config, overrides=args.set)


def cmd_run(args: argparse.Namespace) -> int:
    from mgral.loop.active_loop import ActiveLearningRun
    from mgral.loop.executors import make_executor
    from mgral.reports.html import write_report

    if not args.preset and not args.config:
        stored = ActiveLearningRun.stored_config(args.out)
        if stored is None:
            raise InputError(
                "mgral run", "give --preset or --config (or --out of an existing run to resume it)"
            )
        cfg = stored
        if args.set:
            raise InputError("--set", "overrides need --preset or --config")
    else:
        cfg = _load_cfg(args)
    from dataclasses import replace

    if args.allow_outside_paths:  # recorded in the run's config.yaml, so a resume keeps it
        cfg = replace(cfg, data=replace(cfg.data, allow_outside_paths=True))
    if args.no_progress or args.quiet:
        cfg = replace(cfg, progress=False)
    if args.dry_run:
        from mgral.loop.dry_run import dry_run, format_plan

        workers = 1 if args.workers == "auto" else int(args.workers)
        print(format_plan(dry_run(cfg, workers=workers)))
        return 0
    t0 = time.perf_counter()
    run = ActiveLearningRun(cfg, args.out)
    cells = len(run.cells())
    executor = make_executor(args.executor, args.workers, address=args.address, device=cfg.device, tasks=cells,
                             threads=args.threads)  # fmt: skip
    run.executor = executor
    try:
        run.run()
    finally:
        executor.close()
    html, table = write_report(args.out)
    print(table)
    print(
        f"results: {Path(args.out) / 'results.csv'}\nreport: {html}\nwall time: {time.perf_counter() - t0:.1f}s"
    )
    return 0


def _metric_label(metric: str) -> str:
    return {"voc07": "mAP (VOC07 11-point)", "voc": "mAP (VOC all-point)", "coco": "AP (COCO)"}[metric]


def cmd_report(args: argparse.Namespace) -> int:
    from mgral.reports.html import write_report

    html, table = write_report(args.run_dir)
    print(table)
    print(f"report: {html}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from mgral.loop.query import query

    cfg = _load_cfg(args, default_preset="demo")
    if args.no_progress:
        from dataclasses import replace

        cfg = replace(cfg, progress=False)
    doc = query(
        args.data,
        args.budget,
        args.strategy,
        args.out,
        cfg,
        fmt=args.format,
        split=args.split,
        seed=args.seed,
        box_threshold=args.box_threshold,
        allow_outside=args.allow_outside_paths,
    )
    print(f"selected {doc['budget']} of {doc['n_unlabeled']} unlabeled images with {doc['strategy']}: "
          f"{args.out} and {Path(args.out).with_suffix('.txt')}")  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mgral.metrics.cli_eval import evaluate_files

    result = evaluate_files(
        args.gt, args.pred, args.metric, fmt=args.format, split=args.split, backend=args.backend,
        allow_outside=args.allow_outside_paths,
    )  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    from mgral.data.synthetic import make_dataset, spec_for

    knobs = {
        "image_size": args.image_size, "num_classes": args.num_classes, "min_objects": args.min_objects,
        "max_objects": args.max_objects, "min_size": args.min_size, "max_size": args.max_size, "noise": args.noise,
        "longtail": args.longtail, "clutter": args.clutter, "frames": args.frames, "jitter": args.jitter,
    }  # fmt: skip
    spec = spec_for(args.difficulty, **knobs)
    ds = make_dataset(args.kind, args.n, args.seed, args.out, spec)
    print(f"wrote {len(ds)} images, {ds.num_boxes} boxes, {ds.num_classes} classes to {args.out} "
          f"(annotations: {Path(args.out) / 'annotations.json'})")  # fmt: skip
    return 0


def cmd_bench_agent(args: argparse.Namespace) -> int:
    from mgral.bench import bench_agent

    if args.budget <= 0 or args.budget > args.pool:
        raise InputError("--budget", f"need 0 < budget <= pool, got {args.budget} for a pool of {args.pool}")
    print(json.dumps(bench_agent(args.pool, args.budget, repeats=args.repeats, device=args.device)))
    return 0


def _add_cfg_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a built-in config: smoke, demo, cpu-bench, voc-ssd300, coco-retinanet")
    p.add_argument("--config", help="a YAML config file")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_outside_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let annotation files name images outside their dataset folder (../x.png, absolute paths)",
    )


def build_parser() -> argparse.ArgumentParser:
    from mgral import __version__

    parser = _Parser(prog="mgral", description="Active learning for object detection (MGRAL and baselines).")
    parser.add_argument("--version", action="version", version=f"mgral {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run (or resume) an experiment: strategies x seeds, in parallel")
    _add_cfg_args(p)
    p.add_argument("--out", required=True, help="run directory (created, or resumed if it holds a run)")
    p.add_argument(
        "--workers", default="auto", help="parallel cells (auto: one per core on a CPU, one on a GPU)"
    )
    p.add_argument(
        "--executor", default="local", choices=["local", "ray"], help="local processes or Ray tasks"
    )
    p.add_argument("--address", help="a Ray cluster's address (with --executor ray; default: a local Ray)")
    p.add_argument("--threads", type=int, help="torch threads per cell (default: cores / workers); CPU results "
                   "are bit-identical for the same threads per cell")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the plan and a time estimate, run one short "
                   "cycle of every strategy on a sample; write nothing")  # fmt: skip
    _add_outside_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("query", help="pick the images to label next in a partly annotated dataset")
    _add_cfg_args(p)
    p.add_argument(
        "--data", required=True, help="COCO json, VOC folder or YOLO folder; unannotated images form the pool"
    )
    p.add_argument("--format", default="auto", choices=["auto", "coco", "voc", "yolo"])
    p.add_argument("--split", help="VOC split file name (ImageSets/Main/<split>.txt)")
    p.add_argument("--budget", required=True, help="number of images to select")
    p.add_argument("--strategy", default="entropy", help="a registered strategy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON output; a .txt list of file names is written beside it")
    p.add_argument("--box-threshold", type=float, default=0.3,
                   help="model boxes scoring at least this are written with each pick (default 0.3)")  # fmt: skip
    _add_outside_arg(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("evaluate", help="evaluate COCO-format detections against a dataset")
    p.add_argument("--gt", required=True, help="ground truth: COCO json, VOC folder or YOLO folder")
    p.add_argument("--pred", required=True, help="COCO results JSON: [{image_id, category_id, bbox, score}]")
    p.add_argument("--metric", default="coco", choices=["voc07", "voc", "coco"])
    p.add_argument("--format", default="auto", choices=["auto", "coco", "voc", "yolo"])
    p.add_argument("--split", help="VOC split")
    p.add_argument("--backend", default="faster", choices=["faster", "pycocotools"], help="COCO evaluator")
    _add_outside_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="curves and table of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="built-in datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    m = dsub.add_parser("make", help="generate a built-in dataset as COCO")
    m.add_argument("kind", choices=["shapes", "digits"])
    m.add_argument("--n", type=int, required=True, help="number of images")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    m.add_argument("--difficulty", default="easy", choices=["easy", "hard", "redundant"])
    for name, tp in (("image-size", int), ("num-classes", int), ("min-objects", int), ("max-objects", int),
                     ("min-size", int), ("max-size", int), ("noise", float), ("longtail", float), ("clutter", int), ("frames", int), ("jitter", int)):  # fmt: skip
        m.add_argument(f"--{name}", type=tp, default=None)
    m.set_defaults(func=cmd_data_make)

    p = sub.add_parser("bench", help="micro-benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    b = bsub.add_parser("agent", help="time one MGRAL agent iteration against a bare fused LSTM")
    b.add_argument("--pool", type=int, required=True)
    b.add_argument("--budget", type=int, required=True)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=cmd_bench_agent)
    add_commands(sub)  # labelstudio, serve
    return parser


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that the run stops at the next safe point."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        if args.quiet:
            logging.getLogger().setLevel(logging.WARNING)
        elif args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return int(args.func(args))
    except InputError as exc:
        print(f"mgral: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mgral: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("mgral: terminated; run the same command again to resume", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

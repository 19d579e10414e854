"""Command-line subcommands of the integrations: ``mgral labelstudio ...`` and ``mgral serve``.

``mgral.cli.build_parser`` calls :func:`add_commands`. Like ``mgral.cli``, this module prints the
results (JSON on stdout); bad input raises :class:`~mgral.errors.InputError`, which ``mgral.cli.main``
turns into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def _token(args: argparse.Namespace) -> str:
    from mgral.errors import InputError

    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise InputError("--token", f"give the Label Studio API token (--token or the {TOKEN_ENV} variable)")
    return token


def cmd_push(args: argparse.Namespace) -> int:
    from mgral.integrations.labelstudio import push

    out = push(
        args.url, _token(args), args.data, args.picks, project=args.project, images=args.images,
        document_root=args.document_root, fmt=args.format, split=args.split,
    )  # fmt: skip
    print(json.dumps(out))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from mgral.integrations.labelstudio import pull

    print(
        json.dumps(pull(args.url, _token(args), args.project, args.data, fmt=args.format, split=args.split))
    )
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from mgral.integrations.labelstudio import write_tasks

    out = write_tasks(
        args.data, args.picks, args.out, document_root=args.document_root, fmt=args.format, split=args.split
    )
    print(json.dumps(out))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from mgral.integrations.labelstudio import merge_file

    print(json.dumps(merge_file(args.export, args.data, fmt=args.format, split=args.split)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mgral.config import load_config
    from mgral.errors import InputError

    try:
        from mgral.integrations.serve import ModelService, serve
    except ImportError as exc:  # fastapi / uvicorn: the optional extra
        raise InputError(
            "mgral serve", f"needs the optional extra: pip install 'mgral[labelstudio]' ({exc})"
        ) from None

    preset = args.preset or (None if args.config else "demo")
    cfg = load_config(preset=preset, file=args.config, overrides=args.set)
    if args.no_progress:
        cfg = replace(cfg, progress=False)
    service = ModelService(
        args.data, cfg, fmt=args.format, split=args.split, workdir=args.workdir,
        box_threshold=args.box_threshold, seed=args.seed,
    )  # fmt: skip
    serve(service, args.host, args.port)
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="the dataset: COCO json, VOC folder or YOLO folder")
    p.add_argument("--format", default="auto", choices=["auto", "coco", "voc", "yolo"])
    p.add_argument("--split", help="VOC split file name (ImageSets/Main/<split>.txt)")


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="Label Studio's address, e.g. http://localhost:8080")
    p.add_argument("--token", help=f"API token (default: the {TOKEN_ENV} environment variable)")


def add_commands(subparsers: Any) -> None:
    """Add ``labelstudio`` (push, pull, tasks, merge) and ``serve`` to the ``mgral`` subcommands."""
    p = subparsers.add_parser("labelstudio", help="send picks to Label Studio and bring the labels back")
    lsub = p.add_subparsers(dest="labelstudio_command", required=True, parser_class=type(p))

    c = lsub.add_parser("push", help="import the picks of `mgral query` as tasks with the model's boxes")
    _server_args(c)
    _data_args(c)
    c.add_argument("--picks", required=True, help="picks.json written by `mgral query`")
    c.add_argument("--project", help="project title or id (created when no project has that title)")
    c.add_argument("--images", default="local-files", choices=["local-files", "upload"],
                   help="how Label Studio gets the images: read from disk (default) or uploaded")  # fmt: skip
    c.add_argument("--document-root", help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                   "(default: the parent of the dataset's image folder)")  # fmt: skip
    c.set_defaults(func=cmd_push)

    c = lsub.add_parser("pull", help="merge the project's finished annotations into the dataset")
    _server_args(c)
    _data_args(c)
    c.add_argument("--project", required=True, help="project id (or title)")
    c.set_defaults(func=cmd_pull)

    c = lsub.add_parser("tasks", help="write the picks as a Label Studio import file (no server needed)")
    _data_args(c)
    c.add_argument("--picks", required=True, help="picks.json written by `mgral query`")
    c.add_argument("--out", required=True, help="tasks JSON; the labeling config is written beside it")
    c.add_argument("--document-root", help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
                   "(default: the parent of the dataset's image folder)")  # fmt: skip
    c.set_defaults(func=cmd_tasks)

    c = lsub.add_parser("merge", help="merge a Label Studio JSON export into the dataset (no server needed)")
    _data_args(c)
    c.add_argument("--export", required=True, help="a JSON export of the project")
    c.set_defaults(func=cmd_merge)

    p = subparsers.add_parser("serve", help="a Label Studio ML backend showing the current model's boxes")
    _data_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument(
        "--workdir", help="event log and model cache (default: .mgral-serve/ in the dataset's folder)"
    )
    p.add_argument("--box-threshold", type=float, default=0.3, help="boxes scoring at least this are shown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", help="a built-in config: smoke, demo, voc-ssd300, coco-retinanet")
    p.add_argument("--config", help="a YAML config file")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_serve)

"""Time of `mgral labelstudio push` and `pull` of 200 images against a real Label Studio, and of
installing and starting Label Studio the way the integration tests do.

    .venv/bin/python -m benchmarks.labelstudio_speed [--n 200] [--fresh-install]

``--fresh-install`` times the installation into a new temporary virtual environment (the tests reuse
``.venv-labelstudio`` when present). Writes ``benchmarks/results/labelstudio_speed.json``.
The picks are synthetic (three model boxes per image), so no model is trained here: the figures are the
cost of the integration itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
from tests.integrations import lsserver

from mgral.data.coco import read_coco
from mgral.data.synthetic import make_dataset, spec_for
from mgral.integrations.labelstudio import pull, push
from mgral.utils import atomic_write_json

OUT = Path(__file__).parent / "results" / "labelstudio_speed.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--fresh-install", action="store_true")
    args = ap.parse_args()
    row: dict[str, float | int | str] = {"n_images": args.n, "label_studio": lsserver.VERSION}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        venv = lsserver.VENV
        if args.fresh_install:
            venv = tmp / "venv"
            row["install_s"] = round(lsserver.ensure_venv(venv), 1)
        else:
            lsserver.ensure_venv(venv)
        with lsserver.running(tmp / "ls", venv=venv) as server:
            row["start_s"] = round(server.start_seconds, 1)
            root = server.document_root / "bench"
            make_dataset("shapes", args.n + 20, 0, root, spec_for("easy", image_size=128))
            doc = json.loads((root / "annotations.json").read_text())
            keep = {im["id"] for im in doc["images"][:20]}
            doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
            (root / "annotations.json").write_text(json.dumps(doc))
            ds = read_coco(root / "annotations.json", partial=True)
            picks = {"strategy": "entropy", "detector": "bench", "selected": [
                {"rank": k + 1, "image_id": ds[i].image_id, "file_name": ds[i].file_name, "score": 1 / (k + 1),
                 "width": 128, "height": 128, "boxes": [{"bbox": [8.0 * j, 8.0 * j, 8.0 * j + 40, 8.0 * j + 30],
                                                        "label": "circle", "score": 0.9 - 0.1 * j} for j in range(3)]}
                for k, i in enumerate(ds.unannotated_indices()[: args.n])]}  # fmt: skip
            (tmp / "picks.json").write_text(json.dumps(picks))
            data = root / "annotations.json"
            t0 = time.perf_counter()
            pushed = push(server.url, server.token, data, tmp / "picks.json", project="bench",
                          document_root=server.document_root)  # fmt: skip
            row["push_s"] = round(time.perf_counter() - t0, 2)
            assert pushed["tasks_created"] == args.n
            # annotate every task through the REST API (accept the prediction), outside the timing
            from label_studio_sdk import LabelStudio

            ls = LabelStudio(base_url=server.url, api_key=server.token, timeout=120)
            for task in ls.tasks.list(project=pushed["project"], fields="all", page_size=500):
                ls.annotations.create(id=task.id, result=task.predictions[0].result)
            t0 = time.perf_counter()
            pulled = pull(server.url, server.token, str(pushed["project"]), data)
            row["pull_s"] = round(time.perf_counter() - t0, 2)
            assert pulled["newly_labeled"] == args.n
            t0 = time.perf_counter()
            push(
                server.url,
                server.token,
                data,
                tmp / "picks.json",
                project="bench",
                document_root=server.document_root,
            )
            row["push_again_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            pull(server.url, server.token, str(pushed["project"]), data)
            row["pull_again_s"] = round(time.perf_counter() - t0, 2)
            with httpx.Client() as c:
                row["health_ok"] = int(c.get(f"{server.url}/health").status_code == 200)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT, row)
    print(json.dumps(row))


if __name__ == "__main__":
    main()

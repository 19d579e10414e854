"""Hand-picked malformed inputs, each through the real CLI: exit code 2, one line on stderr starting with
``mgral: error:`` that names the file or option at fault, no traceback, and nothing written (no output
path, no new file anywhere, every input byte for byte as it was).

Each case builds its bad input in ``tmp_path`` and returns the command line; outputs go under
``tmp_path / "out"``. The first cases of ``SUBPROCESS`` also run through ``python -m mgral.cli`` to see
what a user sees (no traceback from an exception that escaped ``main``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from mgral.cli import main
from mgral.config import load_config, save_config
from mgral.data.sources import load_run_data
from mgral.errors import InputError

W = 64  # the shapes fixture's images are 64 x 64


def coco_doc(n: int = 4, annotated: int | None = None) -> dict:
    """``n`` images ``a0.png``...; the first ``annotated`` (default all) have one box each."""
    annotated = n if annotated is None else annotated
    return {
        "images": [{"id": i + 1, "file_name": f"a{i}.png", "width": W, "height": W} for i in range(n)],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [4, 4, 20, 20]}
            for i in range(annotated)
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
    }


def coco(tmp: Path, shapes: Path, doc: dict | str | bytes | None = None, images: int = 4) -> Path:
    """A COCO dataset folder ``tmp/ds`` (``ann.json`` and ``images/``); returns the JSON's path."""
    (tmp / "ds" / "images").mkdir(parents=True)
    for i in range(images):
        shutil.copy(shapes / "images" / f"{i:06d}.png", tmp / "ds" / "images" / f"a{i}.png")
    doc = coco_doc() if doc is None else doc
    data = doc if isinstance(doc, bytes) else (doc if isinstance(doc, str) else json.dumps(doc)).encode()
    (tmp / "ds" / "ann.json").write_bytes(data)
    return tmp / "ds" / "ann.json"


def partial_coco(tmp: Path, shapes: Path, **doc_changes: object) -> Path:
    doc = coco_doc(6, annotated=3)
    for k, v in doc_changes.items():
        doc["images"][int(k.removeprefix("image"))].update(v)  # type: ignore[union-attr]
    return coco(tmp, shapes, doc, images=6)


VOC_XML = (
    "<annotation><size><width>64</width><height>64</height></size><object><name>dog</name>"
    "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>"
)


def voc(tmp: Path, shapes: Path, xml: str = VOC_XML, split: str | None = None) -> Path:
    root = tmp / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for stem in ("000001", "000002"):
        shutil.copy(shapes / "images" / "000000.png", root / "JPEGImages" / f"{stem}.png")
        (root / "Annotations" / f"{stem}.xml").write_text(VOC_XML if stem == "000001" else xml)
    (root / "ImageSets/Main/test.txt").write_text(split or "000001\n000002\n")
    return root


def yolo(
    tmp: Path, shapes: Path, label: str = "0 0.5 0.5 0.2 0.2\n", names: tuple[str, str] | None = None
) -> Path:
    root = tmp / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem in ("x", "y"):
        shutil.copy(shapes / "images" / "000000.png", root / "images" / f"{stem}.png")
    (root / "labels" / "x.txt").write_text(label)
    name_file, text = names or ("classes.txt", "a\nb\n")
    (root / name_file).write_text(text)
    return root


def results(tmp: Path, entries: object) -> Path:
    (tmp / "dets.json").write_text(json.dumps(entries))
    return tmp / "dets.json"


GOOD_DET = {"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}


def evaluate(gt: Path, pred: Path, *more: str) -> list[str]:
    return ["evaluate", "--gt", str(gt), "--pred", str(pred), *more]


def query(tmp: Path, data: Path, *more: str, budget: str = "1") -> list[str]:
    return ["query", "--data", str(data), "--budget", budget, "--preset", "smoke", "--strategy", "random",
            "--out", str(tmp / "out" / "picks.json"), *more]  # fmt: skip


def run(tmp: Path, *more: str) -> list[str]:
    return ["run", "--preset", "smoke", "--out", str(tmp / "out"), *more]


def config(tmp: Path, text: str | bytes) -> Path:
    (tmp / "cfg.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp / "cfg.yaml"


def finished_run(tmp: Path, store: bytes) -> Path:
    """A run directory holding the smoke preset's config and the given ``store.sqlite`` bytes."""
    (tmp / "old").mkdir()
    save_config(load_config(preset="smoke"), tmp / "old" / "config.yaml")
    (tmp / "old" / "store.sqlite").write_bytes(store)
    return tmp / "old"


def corrupt_image(tmp: Path, shapes: Path) -> Path:
    data = partial_coco(tmp, shapes)
    png = (tmp / "ds" / "images" / "a1.png").read_bytes()
    (tmp / "ds" / "images" / "a1.png").write_bytes(png[: len(png) // 2])  # truncated
    return data


@dataclass
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]
    expect: tuple[str, ...]  # substrings of the error line: the file or option, and the problem


#: each ``build`` takes (tmp_path, the shapes fixture's folder) and returns the command line
CASES = [
    # COCO annotation files
    Case("coco-truncated-json", lambda t, s: evaluate(coco(t, s, json.dumps(coco_doc())[:50]), results(t, [])),
         ("ann.json", "malformed JSON at line 1")),
    Case("coco-top-level-list", lambda t, s: evaluate(coco(t, s, "[]"), results(t, [])),
         ("ann.json", "top level should be a JSON object")),
    Case("coco-missing-images", lambda t, s: evaluate(coco(t, s, {"categories": [{"id": 1, "name": "a"}]}),
                                                      results(t, [])), ("ann.json", "missing field 'images'")),
    Case("coco-bbox-3-numbers", lambda t, s: evaluate(coco(t, s, {**coco_doc(), "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}]}), results(t, [])),
         ("ann.json", "annotation 1: bbox should be 4 finite numbers")),
    Case("coco-bbox-nan", lambda t, s: evaluate(coco(t, s, json.dumps(coco_doc()).replace("[4, 4, 20, 20]",
                                                                                          "[4, NaN, 20, 20]")),
                                                results(t, [])), ("ann.json", "bbox should be 4 finite numbers")),
    Case("coco-bbox-huge-int", lambda t, s: evaluate(coco(t, s, json.dumps(coco_doc()).replace(
        "[4, 4, 20, 20]", "[4, 4, 20, 1" + "0" * 400 + "]")), results(t, [])), ("ann.json", "4 finite numbers")),
    Case("coco-duplicate-image-id", lambda t, s: evaluate(coco(t, s, {**coco_doc(), "images": [
        {"id": 1, "file_name": "a0.png", "width": W, "height": W}] * 2}), results(t, [])),
         ("ann.json", "duplicate image id 1")),
    Case("coco-unknown-category", lambda t, s: evaluate(coco(t, s, {**coco_doc(), "annotations": [
        {"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}]}), results(t, [])),
         ("ann.json", "unknown category id 9")),
    Case("coco-width-as-text", lambda t, s: evaluate(coco(t, s, json.dumps(coco_doc()).replace(
        '"width": 64', '"width": "64"', 1)), results(t, [])), ("ann.json", "field 'width' should be int")),
    Case("coco-box-outside-image", lambda t, s: evaluate(coco(t, s, {**coco_doc(), "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 90, 5, 5]}]}), results(t, [])),
         ("ann.json", "wholly outside the 64x64 image")),
    Case("coco-id-beyond-64-bits", lambda t, s: evaluate(coco(t, s, json.dumps(coco_doc()).replace(
        '"id": 1, "file_name"', '"id": 18446744073709551616, "file_name"')), results(t, [])),
         ("ann.json", "does not fit in 64 bits")),
    Case("coco-not-utf8", lambda t, s: evaluate(coco(t, s, b'{"images": "\xff"}'), results(t, [])),
         ("ann.json", "not UTF-8")),
    Case("coco-nested-too-deeply", lambda t, s: evaluate(coco(t, s, "[" * 5000), results(t, [])),
         ("ann.json", "nested too deeply")),
    Case("coco-image-path-escapes", lambda t, s: query(t, partial_coco(t, s, image0={"file_name": "../a0.png"})),
         ("ann.json", "'../a0.png' is not inside the dataset folder", "--allow-outside-paths")),
    Case("coco-absolute-image-path", lambda t, s: query(t, partial_coco(
        t, s, image0={"file_name": str(s / "images" / "000000.png")})), ("ann.json", "is not inside the dataset")),
    Case("coco-missing-image", lambda t, s: query(t, partial_coco(t, s, image2={"file_name": "gone.png"})),
         ("ann.json", "image 3: image file", "gone.png not found")),
    Case("coco-corrupted-image", lambda t, s: query(t, corrupt_image(t, s)), ("a1.png", "unreadable image")),
    # VOC folders
    Case("voc-malformed-xml", lambda t, s: evaluate(voc(t, s, "<annotation><object>"), results(t, []),
                                                    "--split", "test"), ("000002.xml", "malformed XML")),
    Case("voc-width-nan", lambda t, s: evaluate(voc(t, s, VOC_XML.replace(">64<", ">nan<", 1)), results(t, []),
                                                "--split", "test"), ("000002.xml", "<width> should be a whole number")),
    Case("voc-coordinate-not-number", lambda t, s: evaluate(voc(t, s, VOC_XML.replace(">30<", ">3O<", 1)),
                                                            results(t, []), "--split", "test"),
         ("000002.xml", "<xmax> is not a number: '3O'")),
    Case("voc-missing-bndbox", lambda t, s: evaluate(voc(t, s, VOC_XML.replace("<bndbox>", "<box>").replace(
        "</bndbox>", "</box>")), results(t, []), "--split", "test"), ("000002.xml", "missing <bndbox>")),
    Case("voc-split-escapes", lambda t, s: evaluate(voc(t, s, split="000001\n../../../etc/passwd\n"),
                                                    results(t, []), "--split", "test"),
         ("test.txt", "'../../../etc/passwd' is not inside the dataset folder")),
    # YOLO folders
    Case("yolo-garbage-line", lambda t, s: evaluate(yolo(t, s, "0 a b c d\n"), results(t, [])),
         ("x.txt", "line 1: not numbers")),
    Case("yolo-class-out-of-range", lambda t, s: evaluate(yolo(t, s, "7 0.5 0.5 0.1 0.1\n"), results(t, [])),
         ("x.txt", "unknown class id 7")),
    Case("yolo-polygon-line", lambda t, s: evaluate(yolo(t, s, "0 0.1 0.1 0.5 0.1 0.5 0.5\n"), results(t, [])),
         ("x.txt", "expected 'class cx cy w h'")),
    Case("yolo-names-keys", lambda t, s: evaluate(yolo(t, s, names=("data.yaml", "names: {0: a, 5: b}")),
                                                  results(t, [])), ("data.yaml", "keys should be the class ids")),
    # configs and options
    Case("config-malformed-yaml", lambda t, s: ["run", "--config", str(config(t, "loop:\n\tcycles: 2\n")),
                                                "--out", str(t / "out")], ("cfg.yaml", "malformed YAML at line 2")),
    Case("config-top-level-list", lambda t, s: ["run", "--config", str(config(t, "- a\n")), "--out", str(t / "out")],
         ("cfg.yaml", "top level should be a mapping")),
    Case("config-unknown-key", lambda t, s: ["run", "--config", str(config(t, "loop: {cyclez: 2}\n")),
                                             "--out", str(t / "out")], ("loop", "unknown key(s) cyclez")),
    Case("config-not-utf8", lambda t, s: ["run", "--config", str(config(t, b"name: \xff\n")), "--out",
                                          str(t / "out")], ("cfg.yaml", "not UTF-8")),
    Case("config-bad-date", lambda t, s: ["run", "--config", str(config(t, "name: 2001-13-01\n")), "--out",
                                          str(t / "out")], ("cfg.yaml", "malformed YAML", "month")),
    Case("set-nan", lambda t, s: run(t, "--set", "train.lr=.nan"), ("train.lr", "expected a finite number")),
    Case("set-without-equals", lambda t, s: run(t, "--set", "train.lr"), ("--set", "expected key=value")),
    Case("set-synthetic-knob-type", lambda t, s: run(t, "--set", "data.synthetic.options.image_size=big"),
         ("data.synthetic.options.image_size", "expected a whole number")),
    Case("set-option-choice", lambda t, s: run(t, "--set", "loop.strategies=[entropy]", "--set",
                                               "strategy_params.entropy.aggregate=median"),
         ("strategy_params.entropy.aggregate", "expected one of mean, sum, max")),
    Case("unknown-strategy-run", lambda t, s: run(t, "--set", "loop.strategies=[nope]"),
         ("loop.strategies", "unknown strategy 'nope'")),
    Case("unknown-strategy-query", lambda t, s: query(t, partial_coco(t, s), "--strategy", "nope"),
         ("unknown strategy 'nope'",)),
    Case("unknown-format", lambda t, s: evaluate(coco(t, s), results(t, []), "--format", "xml"),
         ("--format", "invalid choice")),
    Case("budget-not-a-number", lambda t, s: query(t, partial_coco(t, s), budget="ten"),
         ("--budget", "expected a positive whole number, got 'ten'")),
    Case("budget-too-large", lambda t, s: query(t, partial_coco(t, s), budget="4"),
         ("--budget", "4 is more than the 3 unlabeled images")),
    Case("data-make-no-images", lambda t, s: ["data", "make", "shapes", "--n", "0", "--out", str(t / "out")],
         ("--n", "need a positive number")),
    # mgral evaluate's results file
    Case("results-not-a-list", lambda t, s: evaluate(coco(t, s), results(t, {"image_id": 1})),
         ("dets.json", "expected a JSON list")),
    Case("results-negative-width", lambda t, s: evaluate(coco(t, s), results(t, [{**GOOD_DET, "bbox": [1, 1, -2, 3]}])),
         ("dets.json", "entry 0: bbox should be 4 finite numbers")),
    Case("results-score-nan", lambda t, s: evaluate(coco(t, s), results(t, [{**GOOD_DET, "score": float("nan")}])),
         ("dets.json", "entry 0: score should be a finite number (32-bit float), got nan")),
    Case("results-bbox-beyond-float32", lambda t, s: evaluate(coco(t, s), results(t, [{**GOOD_DET, "bbox": [1, 1, 1e300, 3]}]),
                                                              "--metric", "voc07"),
         ("dets.json", "entry 0: bbox should be 4 finite numbers", "(32-bit floats)")),
    Case("results-image-id-list", lambda t, s: evaluate(coco(t, s), results(t, [{**GOOD_DET, "image_id": [1]}])),
         ("dets.json", "entry 0: unknown image id [1]")),
    Case("results-unknown-category", lambda t, s: evaluate(coco(t, s), results(t, [GOOD_DET, {**GOOD_DET,
                                                                                            "category_id": 5}])),
         ("dets.json", "entry 1: unknown category id 5")),
    # run stores
    Case("store-not-sqlite", lambda t, s: ["report", str(finished_run(t, b"not a database " * 300))],
         ("store.sqlite", "the run store is damaged (file is not a database)", "left as it is")),
    Case("store-not-sqlite-resume", lambda t, s: ["run", "--out", str(finished_run(t, b"\x00junk" * 900))],
         ("store.sqlite", "the run store is damaged")),
]  # fmt: skip
SUBPROCESS = ["coco-truncated-json", "config-malformed-yaml", "store-not-sqlite"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def check_error(stderr: str, expect: tuple[str, ...]) -> None:
    assert "Traceback" not in stderr
    assert stderr.startswith("mgral: error: ") and stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    for text in expect:
        assert text in stderr, f"{text!r} not in {stderr!r}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input(case: Case, tmp_path: Path, shapes_dir: Path, capsys) -> None:
    argv = case.build(tmp_path, shapes_dir)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(["-q", *argv])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    check_error(captured.err, case.expect)
    assert captured.out == ""
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path) == before  # inputs unchanged, nothing new beside them


@pytest.mark.parametrize("name", SUBPROCESS)
def test_malformed_input_in_a_subprocess(name: str, tmp_path: Path, shapes_dir: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    argv = case.build(tmp_path, shapes_dir)
    before = snapshot(tmp_path)
    res = subprocess.run([sys.executable, "-m", "mgral.cli", "-q", *argv], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 2
    check_error(res.stderr, case.expect)
    assert not (tmp_path / "out").exists() and snapshot(tmp_path) == before


def test_outside_paths_are_allowed_when_asked(tmp_path: Path, shapes_dir: Path, capsys) -> None:
    """The same escaping dataset is read with ``--allow-outside-paths``, or by a run whose config says
    ``data.allow_outside_paths: true``."""
    doc = coco_doc()
    doc["images"][0]["file_name"] = str(shapes_dir / "images" / "000000.png")
    gt = coco(tmp_path, shapes_dir, doc)
    pred = results(tmp_path, [GOOD_DET])
    assert main(["-q", *evaluate(gt, pred)]) == 2
    assert "not inside the dataset folder" in capsys.readouterr().err
    assert main(["-q", *evaluate(gt, pred, "--allow-outside-paths")]) == 0
    assert json.loads(capsys.readouterr().out)["AP"] >= 0
    data = load_config(
        preset="smoke", overrides=["data.kind=files", f"data.train={gt}", f"data.test={gt}"]
    ).data
    with pytest.raises(InputError, match="not inside the dataset folder"):
        load_run_data(data, tmp_path / "cache")
    pool, _ = load_run_data(replace(data, allow_outside_paths=True), tmp_path / "cache")
    assert pool.load_image(0).size == (W, W)

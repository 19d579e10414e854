"""Fuzzed readers: whatever a user hands mgral, a reader returns a valid result or raises ``InputError``.

Property-based tests (hypothesis) over the COCO, VOC and YOLO readers, the config loader (YAML files and
``--set`` overrides, with the checks a run does when it starts), ``mgral evaluate``'s results file and image
decoding. The inputs are mostly structured but wrong (JSON with wrong types, missing keys, NaN, infinities,
negative or huge numbers, wrong nesting, unicode, duplicate ids; XML with missing tags and non-numbers;
YOLO lines with garbage), then byte-level corruption of them. A result that loads is checked against the
dataset contract (finite boxes inside their image, labels in range, unique ids, image files inside the
dataset folder); an ``InputError`` must be one line. Any other exception fails the test.

``MGRAL_FUZZ_SCALE`` multiplies every ``max_examples`` (``benchmarks/fuzz_readers.py`` runs the same
properties with many more examples); without it the examples are derandomized, so ``make test`` is
reproducible. ``COUNTS`` tallies the examples each property ran and how they ended.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mgral.config import (
    PRESETS,
    RunConfig,
    config_from_yaml_text,
    load_config,
    to_dict,
)
from mgral.data.coco import read_coco
from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.data.synthetic import SyntheticSpec, spec_for
from mgral.data.validate import check_image_file
from mgral.data.voc import read_voc
from mgral.data.yolo import read_yolo
from mgral.errors import InputError
from mgral.metrics.cli_eval import evaluate_files
from mgral.strategies.base import STRATEGIES, validate_strategy_params

# a warning printed on stderr beside the error line breaks the one-line promise as much as a traceback
pytestmark = pytest.mark.filterwarnings("error")

SCALE = float(os.environ.get("MGRAL_FUZZ_SCALE", "1"))
COUNTS: Counter[str] = Counter()
T = TypeVar("T")


def fuzz(examples: int) -> Callable[[T], T]:
    """Hypothesis settings of one property: ``examples`` times the scale, no example database (nothing
    written into the work tree), a deadline far above an example's cost that still stops a pathological
    one."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=timedelta(seconds=5),
        database=None,
        derandomize="MGRAL_FUZZ_SCALE" not in os.environ,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def outcome(name: str, fn: Callable[[], T]) -> T | None:
    """Run ``fn``; an ``InputError`` is an accepted ending (its message must be one line), anything else
    but a return propagates and fails the property."""
    COUNTS[f"{name}: examples"] += 1
    try:
        result = fn()
    except InputError as exc:
        COUNTS[f"{name}: rejected with InputError"] += 1
        text = str(exc)
        assert text and len(text.splitlines()) == 1, f"InputError message is not one line: {text!r}"
        return None
    COUNTS[f"{name}: loaded"] += 1
    return result


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mgral-fuzz-") as d:
        yield Path(d)


def _image_bytes(fmt: str, size: tuple[int, int] = (24, 16)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")


# ------------------------------------------------------------------ building blocks

HUGE = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 10**400])
numbers = st.one_of(
    st.integers(-20, 120),
    st.floats(-20, 120),
    st.floats(allow_nan=True, allow_infinity=True),
    HUGE,
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=6))
weird = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)


#: how broken a generated document is: 0 = every field right, 3 = a third of them wrong
levels = st.integers(0, 3)
WRONG_IN_40 = (0, 1, 4, 13)


def chance(draw: st.DrawFn, k: int, n: int) -> bool:
    """True with probability about ``k / n`` (taken at the top of the range: hypothesis favours 0)."""
    return k > 0 and draw(st.integers(0, n - 1)) >= n - k


@st.composite
def weighted(draw: st.DrawFn, *choices: tuple[int, st.SearchStrategy[Any]]) -> Any:
    """One of ``choices`` (weight, strategy), the first one when shrinking."""
    k = draw(st.integers(0, sum(w for w, _ in choices) - 1))
    for w, strategy in choices:
        if k < w:
            return draw(strategy)
        k -= w
    raise AssertionError("unreachable")


def either(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], level: int) -> st.SearchStrategy[Any]:
    """``good``, or at a higher ``level`` more often ``bad``."""
    wrong = WRONG_IN_40[level]
    return good if wrong == 0 else weighted((40 - wrong, good), (wrong, bad))


def mostly(valid: st.SearchStrategy[Any], level: int = 2) -> st.SearchStrategy[Any]:
    """A value of the right kind, or (more often at a higher ``level``) a value of any kind."""
    return either(valid, weird, level)


@st.composite
def entry(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]], level: int = 2) -> dict[Any, Any]:
    """A JSON object with the given fields, at a higher ``level`` more often with one missing or an extra
    one."""
    out: dict[Any, Any] = {k: draw(v) for k, v in fields.items()}
    if chance(draw, WRONG_IN_40[level], 40):
        out.pop(draw(st.sampled_from(sorted(fields))))
    if chance(draw, WRONG_IN_40[level], 40):
        out[draw(st.text(max_size=4))] = draw(weird)
    return out


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted or cut off."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "insert", "truncate"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[pos:]
    return bytes(data)


def with_corruption(docs: st.SearchStrategy[bytes], raw: list[bytes]) -> st.SearchStrategy[bytes]:
    """Well-formed documents, corrupted ones, and hand-written nasty ones."""
    return weighted((8, docs), (1, docs.flatmap(corrupted)), (1, st.sampled_from(raw)))


def check_dataset(ds: DetectionDataset, allow_outside: bool) -> None:
    """The dataset contract every reader promises (module docstring of ``mgral.data.dataset``)."""
    assert len(ds) > 0 and ds.num_classes > 0
    assert len(ds.category_ids) == len(set(ds.category_ids)) == ds.num_classes
    ids = [r.image_id for r in ds.images]
    assert len(set(ids)) == len(ids)
    for i, r in enumerate(ds.images):
        assert isinstance(r.image_id, int) and -(2**63) <= r.image_id < 2**63
        assert isinstance(r.width, int) and isinstance(r.height, int) and r.width > 0 and r.height > 0
        assert r.boxes.dtype == np.float32 and r.boxes.shape == (len(r.labels), 4)
        assert len(r.ignore) == len(r.labels)
        if len(r.labels):
            assert np.isfinite(r.boxes).all()
            assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
            assert (r.boxes[:, [0, 1]] >= 0).all()
            assert (r.boxes[:, 2] <= r.width).all() and (r.boxes[:, 3] <= r.height).all()
            assert r.labels.min() >= 0 and r.labels.max() < ds.num_classes
        if not allow_outside and ds.image_root is not None:
            root = os.path.normpath(os.path.abspath(ds.image_root))
            path = os.path.normpath(os.path.abspath(ds.image_path(i)))
            assert os.path.commonpath([root, path]) == root, path


# ------------------------------------------------------------------ COCO

FILE_NAMES = ["sub/../a.png", "../a.png", "/tmp/a.png", "", ".", "a\x00.png", "c.png", "a\n.png"]
file_names = weighted(
    (8, st.sampled_from(["a.png", "b.png"])), (1, st.sampled_from(FILE_NAMES)), (1, st.text(max_size=5))
)


@st.composite
def boxes(draw: st.DrawFn, level: int) -> Any:
    """``[x, y, w, h]``: usually a box in (or overhanging) a 40 x 40 image, else any numbers."""
    good = st.tuples(
        st.integers(-5, 40) | st.floats(-5, 40),
        st.integers(-5, 40) | st.floats(-5, 40),
        st.integers(1, 30) | st.floats(0.01, 30),
        st.integers(1, 30) | st.floats(0.01, 30),
    ).map(list)
    wild = st.lists(numbers, min_size=4, max_size=4) | st.lists(numbers, max_size=6)
    return draw(mostly(weighted((6, good), (1, wild)) if level else good, level))


@st.composite
def coco_documents(draw: st.DrawFn) -> bytes:
    level = draw(levels)
    empty = level and chance(draw, 1, 10)
    image_ids = draw(st.lists(st.integers(0, 10**6), unique=True, min_size=0 if empty else 1, max_size=4))
    cat_ids = draw(st.lists(st.integers(0, 90), unique=True, min_size=0 if empty else 1, max_size=3))
    images = [
        draw(entry({"id": mostly(st.just(i), level), "file_name": mostly(file_names, level),
                    "width": mostly(st.integers(1, 40), level), "height": mostly(st.integers(1, 40), level),
                    "labeled": mostly(st.booleans(), level)}, level))
        for i in image_ids
    ]  # fmt: skip
    if images and level and chance(draw, 1, 10):
        images.append(dict(images[0]))  # a duplicate id
    image_ref = st.sampled_from(image_ids) if image_ids else st.integers(0, 5)
    cat_ref = st.sampled_from(cat_ids) if cat_ids else st.integers(0, 5)
    anns = [
        draw(entry({"id": mostly(st.integers(0, 99), level), "image_id": mostly(image_ref, level),
                    "category_id": mostly(cat_ref, level), "bbox": boxes(level),
                    "iscrowd": mostly(st.integers(0, 1), level)}, level))
        for _ in range(draw(st.integers(0, 6)))
    ]  # fmt: skip
    cats = [
        draw(entry({"id": mostly(st.just(c), level), "name": mostly(st.text(max_size=5), level)}, level))
        for c in cat_ids
    ]
    doc: Any = draw(entry({"images": mostly(st.just(images), level), "annotations": mostly(st.just(anns), level),
                           "categories": mostly(st.just(cats), level)}, level))  # fmt: skip
    if level and chance(draw, 1, 20):
        doc = draw(weird)
    return json.dumps(doc).encode()


COCO_RAW = [
    b"",
    b"[" * 5_000,
    b'{"images": ' + b"1" * 5000 + b"}",
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{\x00}\x00",
    b'{"images": [{"id": 1e999}], "categories": []}',
    b'{"images": [{"id": 1, "file_name": "\\ud800", "width": 3, "height": 3}], '
    b'"categories": [{"id": 1, "name": "x"}]}',
    b'{"images": [], "images": [1]}',
]


@fuzz(300)
@given(doc=with_corruption(coco_documents(), COCO_RAW), check_images=st.booleans(), partial=st.booleans(),
       allow_outside=st.booleans())  # fmt: skip
def test_coco_reader(doc: bytes, check_images: bool, partial: bool, allow_outside: bool) -> None:
    with scratch() as d:
        (d / "images").mkdir()
        (d / "images" / "a.png").write_bytes(PNG)
        (d / "images" / "b.png").write_bytes(JPEG)
        (d / "ann.json").write_bytes(doc)
        ds = outcome(
            "COCO reader",
            lambda: read_coco(
                d / "ann.json", partial=partial, check_images=check_images, allow_outside=allow_outside
            ),
        )
        if ds is not None:
            check_dataset(ds, allow_outside)


# ------------------------------------------------------------------ VOC

NUMBER_TEXT = [
    "nan",
    "inf",
    "-inf",
    "1e400",
    "-5",
    "0",
    "",
    " 12 ",
    "12px",
    "0x10",
    "\u00bd",
    "\u0663",
    "1_0",
    "1e30",
]
wrong_number_text = st.one_of(st.sampled_from(NUMBER_TEXT), st.floats().map(repr), st.text(max_size=4))
xml_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
SAFE_STEMS = ["000001", "000002", "a", "b", "10"]
BAD_STEMS = ["../a", "/etc/passwd", "\u00b2", "9" * 30, "sub/a", "x y", "..", "a\x00"]


def _tag(
    draw: st.DrawFn, name: str, good: st.SearchStrategy[str], bad: st.SearchStrategy[str], level: int
) -> str:
    """``<name>text</name>``; at a higher level more often missing, empty or holding a wrong text."""
    if chance(draw, WRONG_IN_40[level], 80):
        return draw(st.sampled_from(["", f"<{name}/>"]))
    return f"<{name}>{escape(draw(either(good, bad, level)))}</{name}>"


@st.composite
def voc_xml(draw: st.DrawFn, level: int, names: list[str]) -> bytes:
    """An annotation of a 24 x 16 image."""
    parts = []
    if not chance(draw, WRONG_IN_40[level], 40):
        side = st.sampled_from(["24", "16", "0"]) | st.integers(1, 30).map(str)
        parts.append("<size>" + "".join(_tag(draw, t, side, wrong_number_text, level) for t in ("width", "height"))
                     + "<depth>3</depth></size>")  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        name = _tag(
            draw, "name", st.sampled_from(names), st.sampled_from(["person", "Dog", ""]) | xml_text, level
        )
        diff = _tag(draw, "difficult", st.sampled_from(["0", "1"]), st.sampled_from(["yes", ""]), level)
        lo, hi = st.integers(-2, 16).map(str) | st.floats(-2, 16).map(repr), st.integers(8, 30).map(str)
        box = "".join(_tag(draw, t, g, wrong_number_text, level)
                      for t, g in (("xmin", lo), ("ymin", lo), ("xmax", hi), ("ymax", hi)))  # fmt: skip
        bnd = "" if chance(draw, WRONG_IN_40[level], 80) else f"<bndbox>{box}</bndbox>"
        parts.append(f"<object>{name}{diff}{bnd}</object>")
    root = "other" if chance(draw, WRONG_IN_40[level], 80) else "annotation"
    return f"<{root}>{''.join(parts)}</{root}>".encode()


VOC_RAW = [
    b"",
    b"<annotation>",
    b"not xml at all",
    b'<?xml version="1.0" encoding="latin-1"?><annotation><object><name>\xe9</name></object></annotation>',
    b'<!DOCTYPE a [<!ENTITY e "dog">]><annotation><object><name>&e;</name></object></annotation>',
    b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation><filename>&x;</filename></annotation>',
    b'<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;'
    b'&b;&b;&b;&b;">]><annotation><object><name>&c;</name></object></annotation>',
    b"<annotation><size><width>10</width></size></annotation>",
    b"\xff\xfe<\x00a\x00",
]


@st.composite
def voc_folders(draw: st.DrawFn) -> dict[str, Any]:
    """What a VOC folder holds: XML per stem, which images exist, the split file (or none: every file)."""
    level = draw(levels)
    class_names = draw(st.none() | st.just(["dog", "cat"]))
    names = ["dog", "cat"] if class_names else ["dog", "cat", "person"]
    stems = draw(st.lists(st.sampled_from(SAFE_STEMS), unique=True, min_size=1, max_size=4))
    xml = with_corruption(voc_xml(level, names), VOC_RAW) if level else voc_xml(0, names)
    xmls = {s: draw(xml) for s in stems if not chance(draw, WRONG_IN_40[level], 40)}
    images = {s for s in stems if not chance(draw, WRONG_IN_40[level], 40)}
    split: bytes | None = None
    if draw(st.booleans()):
        listed = [
            *stems,
            *(draw(st.sampled_from(BAD_STEMS)) for _ in range(int(chance(draw, WRONG_IN_40[level], 40)))),
        ]
        split = "".join(f"{x}\n" for x in listed).encode("utf-8", "surrogatepass")
        if chance(draw, WRONG_IN_40[level], 80):
            split = draw(st.binary(max_size=12))
    return {"xmls": xmls, "images": images, "split": split, "class_names": class_names,
            "broken_image": chance(draw, WRONG_IN_40[level], 40)}  # fmt: skip


@fuzz(200)
@given(folder=voc_folders(), partial=st.booleans(), allow_outside=st.booleans())
def test_voc_reader(folder: dict[str, Any], partial: bool, allow_outside: bool) -> None:
    split = folder["split"]
    with scratch() as d:
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (d / sub).mkdir(parents=True)
        for stem, text in folder["xmls"].items():
            (d / "Annotations" / f"{stem}.xml").write_bytes(text)
        for stem in folder["images"]:
            (d / "JPEGImages" / f"{stem}.jpg").write_bytes(JPEG)
        if folder["broken_image"]:
            (d / "JPEGImages" / "b.jpg").write_bytes(JPEG[:40])
        if split is not None:
            (d / "ImageSets/Main/trainval.txt").write_bytes(split)
        ds = outcome(
            "VOC reader",
            lambda: read_voc(d, "trainval" if split is not None else None, class_names=folder["class_names"],
                             partial=partial, allow_outside=allow_outside),
        )  # fmt: skip
        if ds is not None:
            check_dataset(ds, allow_outside)


# ------------------------------------------------------------------ YOLO

YOLO_WRONG = ["nan", "inf", "-inf", "1e400", "1e10", "-0", "2.5", "x", "0x1", "1,5", ""]


@st.composite
def yolo_labels(draw: st.DrawFn, level: int) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        good = [st.sampled_from(["0", "1"]), *[st.floats(0.05, 0.95).map(lambda v: f"{v:.4f}")] * 2,
                *[st.floats(0.01, 0.5).map(lambda v: f"{v:.4f}")] * 2]  # fmt: skip
        bad = st.sampled_from(YOLO_WRONG) | st.floats().map(repr) | st.integers(-3, 3).map(str)
        fields = [draw(either(g, bad, level)) for g in good]
        if chance(draw, WRONG_IN_40[level], 40):
            fields = fields[: draw(st.integers(0, 4))] + draw(st.lists(bad, max_size=3))
        lines.append(draw(st.text(max_size=10)) if chance(draw, WRONG_IN_40[level], 80) else " ".join(fields))
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=12)) if chance(draw, WRONG_IN_40[level], 80) else text


NAMES_FILES = [
    ("classes.txt", b"a\nb\n"), ("obj.names", b"a\nb\n"), ("data.yaml", b"names: [a, b]"),
    ("data.yaml", b"names: {0: a, 1: b}"),
]  # fmt: skip
WRONG_NAMES_FILES = [
    ("classes.txt", b""), ("classes.txt", b"\n \n"), ("classes.txt", b"\xff\xfe"), ("classes.txt", b"only\n"),
    ("data.yaml", b"names: {0: a, x: b}"), ("data.yaml", b"names: {0: a, 5: b}"), ("data.yaml", b"names: 3"),
    ("data.yaml", b"names: []"), ("data.yaml", b"nc: 2"), ("data.yaml", b"names: [a, b"), ("data.yaml", b"- a"),
    ("data.yaml", b"\xff"), ("data.yaml", b"names: [[a], {b: 1}]"), ("data.yaml", b"names: {}"),
    ("data.yaml", b"names: {true: a, 1: b}"), ("data.yaml", b"names: [a, null]"),
]  # fmt: skip


@st.composite
def yolo_folders(draw: st.DrawFn) -> dict[str, Any]:
    level = draw(levels)
    stems = ["a", "b", "sub/c"]
    labels = {s: draw(yolo_labels(level)) for s in stems if not chance(draw, 1, 4)}
    names = draw(either(st.sampled_from(NAMES_FILES), st.sampled_from(WRONG_NAMES_FILES) | st.none(), level))
    return {"labels": labels, "names": names, "broken_image": chance(draw, WRONG_IN_40[level], 40)}


@fuzz(200)
@given(folder=yolo_folders(), partial=st.booleans())
def test_yolo_reader(folder: dict[str, Any], partial: bool) -> None:
    with scratch() as d:
        (d / "images" / "sub").mkdir(parents=True)
        (d / "labels" / "sub").mkdir(parents=True)
        for stem in ("a", "b", "sub/c"):
            (d / "images" / f"{stem}.png").write_bytes(PNG)
        if folder["broken_image"]:
            (d / "images" / "z.png").write_bytes(PNG[:30])
        for stem, text in folder["labels"].items():
            (d / "labels" / f"{stem}.txt").write_bytes(text)
        if folder["names"] is not None:
            (d / folder["names"][0]).write_bytes(folder["names"][1])
        ds = outcome("YOLO reader", lambda: read_yolo(d, partial=partial))
        if ds is not None:
            check_dataset(ds, allow_outside=False)


# ------------------------------------------------------------------ config: YAML files and --set overrides

ROOTS = ["data.root=/data/x"]
RESOLVED = [to_dict(load_config(preset=p, overrides=ROOTS if p in ("voc-ssd300", "coco-retinanet") else []))
            for p in PRESETS]  # fmt: skip


def _leaves(tree: Any, prefix: str = "") -> dict[str, list[Any]]:
    """``dotted key -> values it takes`` over the resolved presets (the plausible values of a key)."""
    out: dict[str, list[Any]] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("options", "strategy_params"):
            for kk, vv in _leaves(v, key + ".").items():
                out.setdefault(kk, []).extend(vv)
        else:
            out.setdefault(key, []).append(v)
    return out


PLAUSIBLE: dict[str, list[Any]] = {}
for _tree in RESOLVED:
    for _k, _v in _leaves(_tree).items():
        PLAUSIBLE.setdefault(_k, []).extend(x for x in _v if x not in PLAUSIBLE.get(_k, []))
PLAUSIBLE["data.synthetic.options"] += [{"image_size": 64}, {"noise": 0.1, "clutter": 2}, {"num_classes": 3}]
PLAUSIBLE["strategy_params"] += [
    {"entropy": {"aggregate": "sum"}},
    {"mgral": {"iterations": 20}},
    {"random": {}},
]
PLAUSIBLE["loop.strategies"] += [["random", "entropy"], ["coreset"], "random"]
DOTTED = sorted(PLAUSIBLE)


def _option_fields(name: str) -> list[str]:
    opts = STRATEGIES[name].Options
    return [f.name for f in dataclasses.fields(opts)] if dataclasses.is_dataclass(opts) else []


WRONG_KEYS = [
    "nope", "loop.nope", "train.lrr", "data.synthetic.options.nope", "strategy_params.nope.x", "loop..cycles", "",
    ".", "loop.cycles.x", "train.lr.x.y", "data.synthetic.nope.x",
    *(f"strategy_params.{n}.{f}" for n in sorted(STRATEGIES) for f in _option_fields(n)),
    *(f"data.synthetic.options.{f.name}" for f in dataclasses.fields(SyntheticSpec)),
]  # fmt: skip


def _set(doc: dict[Any, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    for k in path:
        if not isinstance(doc.get(k), dict):
            doc[k] = {}
        doc = doc[k]
    doc[last] = value


@st.composite
def config_documents(draw: st.DrawFn) -> bytes:
    """A preset's resolved config (what ``config.yaml`` of a run holds) or part of it, with a few keys set
    to plausible values, wrong values, or keys that do not exist."""
    level = draw(levels)
    doc: Any = json.loads(json.dumps(draw(st.sampled_from(RESOLVED))))
    for section_name in [k for k in list(doc) if chance(draw, 1, 4)]:
        doc.pop(section_name)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(weighted((40 - WRONG_IN_40[level], st.sampled_from(DOTTED)),
                            (WRONG_IN_40[level], st.sampled_from(WRONG_KEYS))))  # fmt: skip
        _set(doc, key, draw(mostly(st.sampled_from(PLAUSIBLE.get(key) or [1]), level)))
    if level and chance(draw, 1, 20):
        doc = draw(weird)
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans())).encode("utf-8", "surrogatepass")


CONFIG_RAW = [
    b"",
    b"a: b: c",
    b"\t- x",
    b"loop: &a {cycles: *a}",
    b"data: {synthetic: {options: &a {x: *a}}}",
    b"name: 2001-13-01",
    b"name: 2001-01-01",
    b"!!python/object/apply:os.system ['true']",
    b"{1: 2}",
    b"? [a]\n: b",
    b"---\na: 1\n---\nb: 2\n",
    b"[" * 400,
    b"\xff\xfe",
    b"loop:\n  seeds: [1e400]\n",
    b"loop: {initial: .nan, budget: .inf}",
    b"train: {lr: .nan, iterations: 5}",
    b"strategy_params: {entropy: [1, 2]}",
    b"strategy_params: {1: {}}",
    b"data: {synthetic: {options: {image_size: x}}}",
    b"data: {synthetic: {options: {noise: .nan, 1: 2}}}",
]


def load_like_a_run(**kw: Any) -> RunConfig:
    """What ``mgral run`` does with a config before training: load, check strategy options and synthetic
    knobs, and store it (``config.yaml``), which must load back to the same config on resume."""
    cfg = load_config(**kw)
    validate_strategy_params(cfg)
    spec_for(cfg.data.synthetic.difficulty, **cfg.data.synthetic.options)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    assert config_from_yaml_text(text, "config.yaml") == cfg
    return cfg


@fuzz(200)
@given(doc=with_corruption(config_documents(), CONFIG_RAW))
def test_config_file(doc: bytes) -> None:
    with scratch() as d:
        (d / "cfg.yaml").write_bytes(doc)
        outcome("config file", lambda: load_like_a_run(file=d / "cfg.yaml"))


OVERRIDE_VALUES = [
    "", "[", "]", "{", "1e400", ".nan", ".inf", "-1", "0", "2001-13-01", "2001-01-01", "[1, 2", "{a: 1}", "[[1]]",
    "null", "~", "yes", "!!binary AAAA", "!!python/name:os.system", "&a [*a]", "a: b: c", "\t", "x=y", "[" * 400,
]  # fmt: skip


@st.composite
def overrides(draw: st.DrawFn) -> list[str]:
    """``--set`` texts: keys that exist with plausible values (written as YAML), wrong values, wrong keys,
    and text that is not ``key=value``."""
    level = draw(levels)
    out = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(weighted((40 - WRONG_IN_40[level], st.sampled_from(DOTTED)),
                            (WRONG_IN_40[level], st.sampled_from(WRONG_KEYS))))  # fmt: skip
        value = draw(st.sampled_from(PLAUSIBLE.get(key) or [1]))
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        if chance(draw, WRONG_IN_40[level], 40):
            text = draw(st.sampled_from(OVERRIDE_VALUES) | st.text(max_size=6))
        out.append(draw(st.text(max_size=8)) if chance(draw, WRONG_IN_40[level], 80) else f"{key}={text}")
    return out


@fuzz(200)
@given(
    sets=overrides(),
    preset=weighted((9, st.sampled_from(["smoke", "demo"])), (1, st.sampled_from([None, *PRESETS]))),
)
def test_config_overrides(sets: list[str], preset: str | None) -> None:
    outcome("config --set", lambda: load_like_a_run(preset=preset, overrides=sets))


# ------------------------------------------------------------------ mgral evaluate's results file

GT = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 30} for i in (1, 2, 3)],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 8]},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}


@st.composite
def results_documents(draw: st.DrawFn) -> bytes:
    level = draw(levels)
    entries = [
        draw(entry({"image_id": mostly(weighted((6, st.sampled_from([1, 2, 3])), (1, st.sampled_from(["1", 1.0, 99]))),
                                       level),
                    "category_id": mostly(weighted((6, st.sampled_from([1, 2])), (1, st.sampled_from([1.0, "1", 7]))),
                                          level),
                    "bbox": boxes(level), "score": mostly(st.floats(0, 1), level)}, level))
        for _ in range(draw(st.integers(0, 6)))
    ]  # fmt: skip
    doc: Any = draw(weird) if level and chance(draw, 1, 20) else entries
    return json.dumps(doc).encode()


@fuzz(200)
@given(doc=with_corruption(results_documents(), COCO_RAW), metric=st.sampled_from(["coco", "voc07", "voc"]))
def test_results_file(doc: bytes, metric: str) -> None:
    with scratch() as d:
        (d / "gt.json").write_text(json.dumps(GT))
        (d / "dets.json").write_bytes(doc)
        out = outcome(
            f"results file ({metric})", lambda: evaluate_files(d / "gt.json", d / "dets.json", metric)
        )
        if out is not None:
            assert isinstance(out, dict) and out


# ------------------------------------------------------------------ image files: corrupted bytes


@fuzz(200)
@given(data=st.sampled_from([PNG, JPEG]).flatmap(corrupted), ext=st.sampled_from([".png", ".jpg"]))
def test_corrupted_image_is_named_at_first_load(data: bytes, ext: str) -> None:
    with scratch() as d:
        (d / f"x{ext}").write_bytes(data)
        ds = DetectionDataset([ImageRecord(1, f"x{ext}", 24, 16)], ["a"], d)
        im = outcome("image load", lambda: ds.load_image(0))
        if im is not None:
            assert im.mode == "RGB" and im.size == (24, 16)
        else:
            try:
                ds.load_image(0)
            except InputError as exc:
                assert exc.source == str(d / f"x{ext}")
        size = outcome(
            "image header", lambda: check_image_file(d / f"x{ext}", "src", "image x", read_header=True)
        )
        assert size is None or (isinstance(size, tuple) and len(size) == 2)

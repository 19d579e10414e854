"""Safe files: every writer is atomic and a failed write (full disk, read-only folder, permission denied)
is one clear error with nothing half-written; image paths may not leave their dataset folder unless
allowed; the VOC07+12 merge (absolute file names by design) keeps working."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgral import utils
from mgral.cli import main
from mgral.config import DataConfig, load_config, save_config
from mgral.data.coco import read_coco, write_coco
from mgral.data.dataset import DetectionDataset, ImageRecord
from mgral.data.sources import load_run_data
from mgral.data.synthetic import make_dataset, spec_for
from mgral.data.voc import write_voc
from mgral.data.yolo import write_yolo_labels
from mgral.errors import InputError

ERRNOS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
          errno.EACCES: "Permission denied"}  # fmt: skip


class _FailingFile:
    """A file whose ``write`` puts half the bytes on disk, then fails like a full or read-only disk."""

    def __init__(self, fh, err: int) -> None:
        self.fh, self.err = fh, err

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(self.err, os.strerror(self.err))


def fail_writes(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    """Every atomic write of mgral fails with ``err`` half-way through the data."""
    real = os.fdopen

    class _Os:
        def __getattr__(self, name: str):
            return getattr(os, name)

        @staticmethod
        def fdopen(fd: int, mode: str = "r"):
            return _FailingFile(real(fd, mode), err)

    monkeypatch.setattr(utils, "os", _Os())


def tiny_dataset(root: Path) -> DetectionDataset:
    rec = ImageRecord(1, "a.png", 20, 10, np.array([[1, 1, 8, 8]], np.float32), np.array([0]), key="a")
    return DetectionDataset([rec], ["dog"], root / "images", root / "ann.json")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# every writer of mgral: (name, how it writes into a folder, the file it writes first)
WRITERS: list[tuple[str, Callable[[Path], object], str]] = [
    ("atomic_write_bytes", lambda d: utils.atomic_write_bytes(d / "x.bin", b"new" * 100), "x.bin"),
    ("atomic_torch_save", lambda d: utils.atomic_torch_save({"w": np.zeros(3).tolist()}, d / "ckpt.pt"), "ckpt.pt"),
    ("write_coco", lambda d: write_coco(tiny_dataset(d), d / "ann.json"), "ann.json"),
    ("write_voc", lambda d: write_voc(tiny_dataset(d), d), "Annotations/a.xml"),
    ("write_yolo_labels", lambda d: write_yolo_labels(tiny_dataset(d), d), "labels/a.txt"),
    ("make_dataset", lambda d: make_dataset("shapes", 2, 0, d, spec_for("easy", image_size=48)), "images/000000.png"),
    ("save_config", lambda d: save_config(load_config(preset="smoke"), d / "config.yaml"), "config.yaml"),
]  # fmt: skip


@pytest.mark.parametrize("err", sorted(ERRNOS), ids=[errno.errorcode[e] for e in sorted(ERRNOS)])
@pytest.mark.parametrize("writer", WRITERS, ids=[w[0] for w in WRITERS])
def test_failed_write_is_one_clear_error_and_leaves_the_old_file(tmp_path, monkeypatch, writer, err):
    name, write, first = writer
    (tmp_path / first).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / first).write_bytes(b"old content")
    before = files(tmp_path)
    fail_writes(monkeypatch, err)
    with pytest.raises(InputError) as exc:
        write(tmp_path)
    assert str(exc.value) == f"{tmp_path / first}: cannot write ({ERRNOS[err]})"
    assert files(tmp_path) == before  # the old file intact, no temporary file left behind


def test_atomic_write_replaces_whole_files_only(tmp_path):
    utils.atomic_write_bytes(tmp_path / "a" / "x.bin", b"1" * 10)
    utils.atomic_write_bytes(tmp_path / "a" / "x.bin", b"2" * 5)
    assert files(tmp_path) == {"a/x.bin": b"22222"}


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` read-only; as root (where permissions do not stop writes) make creating files in
    it fail as they would."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return
    probe.unlink()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    def mkdir(self: Path, *args, exist_ok: bool = False, **kwargs) -> None:
        if not (exist_ok and self.is_dir()):
            denied()

    monkeypatch.setattr(utils.tempfile, "mkstemp", denied)
    monkeypatch.setattr(utils.Path, "mkdir", mkdir)


def test_read_only_folder(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    try:
        _read_only(monkeypatch, ro)
        with pytest.raises(InputError, match=r"ro/ann.json: cannot write \(Permission denied\)"):
            write_coco(tiny_dataset(tmp_path), ro / "ann.json")
        with pytest.raises(InputError, match=r"ro/sub: cannot write \(Permission denied\)"):
            utils.atomic_write_text(ro / "sub" / "x.txt", "x")
        assert (
            main(["-q", "data", "make", "shapes", "--n", "2", "--image-size", "48", "--out", str(ro / "d")])
            == 2
        )
        assert (
            capsys.readouterr().err
            == f"mgral: error: {ro / 'd' / 'images'}: cannot write (Permission denied)\n"
        )
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def _coco_with(tmp: Path, shapes: Path, file_name: str) -> Path:
    (tmp / "ds" / "images").mkdir(parents=True)
    shutil.copy(shapes / "images" / "000000.png", tmp / "ds" / "images" / "a.png")
    doc = {"images": [{"id": 1, "file_name": file_name, "width": 64, "height": 64}],
           "categories": [{"id": 1, "name": "x"}]}  # fmt: skip
    (tmp / "ds" / "ann.json").write_text(json.dumps(doc))
    return tmp / "ds" / "ann.json"


@pytest.mark.parametrize("name", ["../a.png", "../../ds/a.png", "{abs}", "", ".", "sub/..", "a\x00.png"])
def test_image_paths_may_not_leave_the_dataset_folder(tmp_path, shapes_dir, name):
    name = name.replace("{abs}", str(shapes_dir / "images" / "000000.png"))
    ann = _coco_with(tmp_path, shapes_dir, name)
    with pytest.raises(InputError, match="ann.json: image 1: ") as exc:
        read_coco(ann)
    assert str(exc.value).count("\n") == 0


def test_symlinks_inside_the_folder_are_followed(tmp_path, shapes_dir):
    ann = _coco_with(tmp_path, shapes_dir, "link.png")
    (tmp_path / "ds" / "images" / "link.png").symlink_to(shapes_dir / "images" / "000001.png")
    ds = read_coco(ann)
    assert ds.load_image(0).size == (64, 64)
    for name in ("../images/a.png", "./a.png"):  # ends inside the folder: accepted
        assert read_coco(_coco_with(tmp_path / name[:3], shapes_dir, name)).load_image(0).size == (64, 64)


def test_voc0712_merge_keeps_its_absolute_file_names(tmp_path, shapes_dir):
    """VOC07+12 makes file names absolute on purpose (two folders, one pool): no permission needed."""
    xml = ("<annotation><size><width>64</width><height>64</height></size><object><name>dog</name><bndbox>"
           "<xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>")  # fmt: skip
    for year, splits in (("VOC2007", ("trainval", "test")), ("VOC2012", ("trainval",))):
        root = tmp_path / "VOCdevkit" / year
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / sub).mkdir(parents=True)
        for stem in ("000005", "000007"):
            Image.open(shapes_dir / "images" / "000000.png").convert("RGB").save(
                root / "JPEGImages" / f"{stem}.jpg"
            )
            (root / "Annotations" / f"{stem}.xml").write_text(xml)
        for split in splits:
            (root / "ImageSets/Main" / f"{split}.txt").write_text("000005\n000007\n")
    pool, test = load_run_data(
        DataConfig(kind="voc0712", root=str(tmp_path / "VOCdevkit")), tmp_path / "cache"
    )
    assert len(pool) == 4 and len(test) == 2 and pool.image_root is None
    assert all(Path(r.file_name).is_absolute() for r in pool.images)
    assert len({r.image_id for r in pool.images}) == 4
    assert pool.load_image(3).size == (64, 64)

"""The run store is checked when opened: a damaged store, or a file that is not SQLite, is a one-line
error naming it and is never written to, repaired or replaced; SQLite failures while writing (a full
disk) are the same clear error, with the transaction rolled back."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mgral.cli import main
from mgral.config import load_config
from mgral.errors import InputError
from mgral.loop.active_loop import ActiveLearningRun
from mgral.loop.store import RunStore


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run that has finished: two cycles of the random strategy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = load_config(preset="smoke", overrides=[
        "loop.cycles=2", "train.iterations=2", "device=cpu", "data.synthetic.n_train=40",
        "data.synthetic.n_test=8", "loop.initial=8", "loop.budget=8",
    ])  # fmt: skip
    ActiveLearningRun(cfg, out).run()
    return out


def _files(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}  # fmt: skip


def _copy(run_dir: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("data", "checkpoints"))
    return to


def _damage_middle_page(store: Path) -> None:
    """Overwrite the page in the middle of the file with noise."""
    data = bytearray(store.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    n_pages = len(data) // page
    assert n_pages >= 3
    start = (n_pages // 2) * page
    data[start : start + page] = np.random.default_rng(0).integers(0, 256, page, dtype=np.uint8).tobytes()
    store.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["middle page", "not sqlite"])
def test_damaged_store_is_refused_and_left_as_it_is(finished_run, tmp_path, capsys, damage):
    run_dir = _copy(finished_run, tmp_path / "run")
    store = run_dir / "store.sqlite"
    if damage == "middle page":
        _damage_middle_page(store)
        problem = "the run store is damaged ("
    else:
        store.write_bytes(b"these are not the bytes of an SQLite database\n" * 200)
        problem = "the run store is damaged (file is not a database)"
    before = _files(run_dir)
    for argv in (["report", str(run_dir)], ["run", "--out", str(run_dir)]):
        assert main(["-q", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mgral: error: {store}: {problem}") and err.count("\n") == 1, err
        assert "it was left as it is" in err
        assert _files(run_dir) == before  # not repaired, not replaced, nothing written beside it


def test_intact_store_resumes(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path / "run")
    assert main(["-q", "report", str(run_dir)]) == 0
    assert "| random |" in capsys.readouterr().out


def test_full_disk_while_writing_rolls_back(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    store.put("s", "small", b"x")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")  # SQLite then answers as a full disk does
    with pytest.raises(
        InputError, match=r"store.sqlite: cannot write the run store \(database or disk is full\)"
    ):
        store.put("s", "big", b"y" * 100_000)
    assert store.keys("s") == ["small"]
    store.close()
    assert RunStore(tmp_path / "store.sqlite").get("s", "small") == b"x"


def test_a_damaged_row_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path / "store.sqlite")
    store.db.execute("INSERT INTO selection_info VALUES ('random', 0, 0, '{not json')")
    with pytest.raises(InputError, match="store.sqlite: the run store is damaged"):
        store.selection_info("random", 0, 0)
    store.close()
    assert sqlite3.connect(tmp_path / "store.sqlite").execute("PRAGMA quick_check").fetchone() == ("ok",)

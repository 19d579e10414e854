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


def test_snapshot_is_consistent_while_a_run_writes(tmp_path):
    """``mgral report`` on a running run: while another connection (a writer in a separate process)
    records cycles and their selections, every snapshot holds, for each cycle, either no selection or the
    whole one together with its timings; never a cycle's picks without its row or half of them."""
    import subprocess
    import sys
    import textwrap
    import time

    db = tmp_path / "store.sqlite"
    RunStore(db).close()
    writer = textwrap.dedent(f"""
        from mgral.loop.store import RunStore
        s = RunStore({str(db)!r})
        for c in range(150):
            s.record_cycle("random", 0, c, n_labeled=10 * c, map_value=0.1, metrics={{"AP": {{"a": 0.1}}}},
                           train_s=1.0, infer_s=None, eval_s=0.1, train_loss=None)
            s.record_selection("random", 0, c, list(range(40)), list(range(40)), [0.5] * 40,
                               infer_s=0.2, select_s=0.3)
        s.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    reader = RunStore(db)
    seen_partial = seen = 0
    try:
        while True:
            done = proc.poll() is not None
            rows, per_class, selections = reader.snapshot()
            picks: dict[int, int] = {}
            for _, _, cycle, *_ in selections:
                picks[cycle] = picks.get(cycle, 0) + 1
            cycles = {r["cycle"]: r for r in rows}
            for cycle, n in picks.items():
                assert n == 40 and cycle in cycles and cycles[cycle]["select_s"] == 0.3
            for cycle, r in cycles.items():
                assert (r["select_s"] is None) == (cycle not in picks)
                seen_partial += r["select_s"] is None
            assert len(per_class) == len(cycles)
            seen += 1
            if done:
                break
            time.sleep(0.001)
    finally:
        reader.close()
    assert proc.returncode == 0
    assert len(cycles) == 150 and seen > 3  # the reads really overlapped the writes

"""The SQLite run store: cycles, selections, metrics, timings, and strategy state.

Every write is one transaction, so a run killed at any point leaves the store at a step boundary.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mgral.utils import crash_point

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cycles (
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, cycle INTEGER NOT NULL,
    n_labeled INTEGER NOT NULL, map REAL, metrics TEXT,
    train_s REAL, infer_s REAL, select_s REAL, eval_s REAL, train_loss REAL,
    finished_at REAL, setup_s REAL,
    PRIMARY KEY (strategy, seed, cycle)
);
CREATE TABLE IF NOT EXISTS selections (
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, cycle INTEGER NOT NULL, rank INTEGER NOT NULL,
    image_index INTEGER NOT NULL, image_id INTEGER NOT NULL, score REAL,
    PRIMARY KEY (strategy, seed, cycle, rank)
);
CREATE TABLE IF NOT EXISTS selection_info (
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, cycle INTEGER NOT NULL, info TEXT NOT NULL,
    PRIMARY KEY (strategy, seed, cycle)
);
CREATE TABLE IF NOT EXISTS kv (
    scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB,
    PRIMARY KEY (scope, key)
);
"""

RESULT_COLUMNS = (
    "strategy", "seed", "cycle", "n_labeled", "map", "train_s", "infer_s", "setup_s", "select_s", "eval_s",
)  # fmt: skip


class RunStore:
    """A thin, typed layer over one SQLite file (``store.sqlite`` in a run directory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(cycles)")}
        if "setup_s" not in columns:  # a store written before strategy set-up was timed apart
            self.db.execute("ALTER TABLE cycles ADD COLUMN setup_s REAL")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            crash_point("store-write")  # everything written, nothing committed
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # meta
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # cycles
    def record_cycle(
        self, strategy: str, seed: int, cycle: int, *, n_labeled: int, map_value: float, metrics: dict[str, Any],
        train_s: float, infer_s: float | None, eval_s: float, train_loss: float | None,
    ) -> None:  # fmt: skip
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO cycles (strategy, seed, cycle, n_labeled, map, metrics, train_s, infer_s, "
                "select_s, eval_s, train_loss, finished_at, setup_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (strategy, seed, cycle, n_labeled, map_value, json.dumps(metrics), train_s, infer_s, None, eval_s,
                 train_loss, time.time(), None),
            )  # fmt: skip

    def cycle_row(self, strategy: str, seed: int, cycle: int) -> dict[str, Any] | None:
        cur = self.db.execute(
            "SELECT * FROM cycles WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
        )
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([c[0] for c in cur.description], row))
        out["metrics"] = json.loads(out["metrics"]) if out["metrics"] else {}
        return out

    def record_selection(
        self, strategy: str, seed: int, cycle: int, indices: Sequence[int], image_ids: Sequence[int],
        scores: Sequence[float], *, infer_s: float, select_s: float, setup_s: float = 0.0,
        info: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Store the picks of ``cycle`` and its selection timings, in one transaction."""
        rows = [
            (strategy, seed, cycle, r, int(i), int(iid), float(s))
            for r, (i, iid, s) in enumerate(zip(indices, image_ids, scores))
        ]
        with self.transaction() as db:
            db.execute(
                "DELETE FROM selections WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
            )
            db.executemany("INSERT INTO selections VALUES (?,?,?,?,?,?,?)", rows)
            db.execute(
                "INSERT OR REPLACE INTO selection_info VALUES (?,?,?,?)",
                (strategy, seed, cycle, json.dumps(info or {}, default=str)),
            )
            db.execute(
                "UPDATE cycles SET infer_s=?, select_s=?, setup_s=? WHERE strategy=? AND seed=? AND cycle=?",
                (infer_s, select_s, setup_s, strategy, seed, cycle),
            )

    def selection(self, strategy: str, seed: int, cycle: int) -> list[int] | None:
        info = self.db.execute(
            "SELECT 1 FROM selection_info WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
        ).fetchone()
        if info is None:
            return None
        rows = self.db.execute(
            "SELECT image_index FROM selections WHERE strategy=? AND seed=? AND cycle=? ORDER BY rank",
            (strategy, seed, cycle),
        ).fetchall()
        return [r[0] for r in rows]

    def selection_info(self, strategy: str, seed: int, cycle: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT info FROM selection_info WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def snapshot(self) -> tuple[list[dict[str, Any]], list[tuple], list[tuple]]:
        """Results, per-class AP and selections read in one transaction: a consistent view even while a
        run writes (``mgral report`` on a running run)."""
        self.db.execute("BEGIN")
        try:
            rows = self.results()
            per_class = []
            for strategy, seed, cycle, metrics in self.db.execute(
                "SELECT strategy, seed, cycle, metrics FROM cycles ORDER BY strategy, seed, cycle"
            ):
                aps = (json.loads(metrics) if metrics else {}).get("AP", {})
                per_class += [(strategy, seed, cycle, cls, ap) for cls, ap in aps.items()]
            selections = self.db.execute(
                "SELECT strategy, seed, cycle, rank, image_index, image_id, score FROM selections "
                "ORDER BY strategy, seed, cycle, rank"
            ).fetchall()
        finally:
            self.db.execute("COMMIT")
        return rows, per_class, selections

    def results(self) -> list[dict[str, Any]]:
        cur = self.db.execute(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM cycles ORDER BY strategy, seed, cycle"
        )
        return [dict(zip(RESULT_COLUMNS, r)) for r in cur.fetchall()]

    # strategy state (agents, look-up tables)
    def put(self, scope: str, key: str, value: bytes | str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (scope, key, value))

    def get(self, scope: str, key: str) -> Any:
        row = self.db.execute("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key)).fetchone()
        return None if row is None else row[0]

    def delete(self, scope: str, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM kv WHERE scope=? AND key=?", (scope, key))

    def keys(self, scope: str) -> list[str]:
        return [
            r[0]
            for r in self.db.execute("SELECT key FROM kv WHERE scope=? ORDER BY key", (scope,)).fetchall()
        ]

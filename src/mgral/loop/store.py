"""The SQLite run store: cycles, selections, metrics, timings, and strategy state.

Every write is one transaction, so a run killed at any point leaves the store at a step boundary.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mgral.errors import InputError
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

_LEFT_AS_IT_IS = "it was left as it is: restore it from a backup, or start the run in a new folder"

RESULT_COLUMNS = (
    "strategy", "seed", "cycle", "n_labeled", "map", "train_s", "infer_s", "setup_s", "select_s", "eval_s",
)  # fmt: skip


class RunStore:
    """A thin, typed layer over one SQLite file (``store.sqlite`` in a run directory).

    An existing store is checked before anything is written to it (``PRAGMA quick_check``, on a read-only
    connection): a file that is not SQLite, or whose pages are damaged, raises :class:`InputError` naming
    it and is left exactly as it was, never repaired or replaced. Any later SQLite failure (a full disk, a
    read-only folder, a damaged page the check could not see) is an :class:`InputError` too, and the
    transaction it interrupted is rolled back by SQLite."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.check(self.path)
        with self._errors("cannot open the run store"):
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(cycles)")}
            if "setup_s" not in columns:  # a store written before strategy set-up was timed apart
                self.db.execute("ALTER TABLE cycles ADD COLUMN setup_s REAL")

    @staticmethod
    def check(path: str | Path) -> None:
        """Refuse an existing store that is not SQLite or whose pages are damaged (``PRAGMA quick_check``
        on a read-only connection, so nothing is written to it). A missing or empty file passes."""
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            return
        # a read-only connection to a WAL database still makes its -wal and -shm files; a refused store
        # is left with exactly the files it had
        sidecars = [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if not p.exists()]
        problem = None
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
            try:
                rows = db.execute("PRAGMA quick_check").fetchall()
            finally:
                db.close()
            if rows != [("ok",)]:
                problem = "integrity check: " + (" ".join(str(rows[0][0]).split()) if rows else "no answer")
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
        if problem is not None:
            for p in sidecars:
                with contextlib.suppress(OSError):
                    if p.name.endswith("-shm") or p.stat().st_size == 0:
                        p.unlink()
            raise InputError(path, f"the run store is damaged ({problem}); {_LEFT_AS_IT_IS}")

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:  # also OperationalError: disk full, read-only, locked
            raise InputError(self.path, f"{doing} ({exc})") from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], list[str]]:
        """The rows of a read and their column names."""
        with self._errors("cannot read the run store"):
            cur = self.db.execute(sql, params)
            return cur.fetchall(), [c[0] for c in cur.description or ()]

    def _json(self, text: str, what: str) -> Any:
        try:
            return json.loads(text)
        except (json.JSONDecodeError, TypeError, RecursionError):
            raise InputError(
                self.path, f"the run store is damaged ({what} is not JSON); {_LEFT_AS_IT_IS}"
            ) from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        with self._errors("cannot write the run store"):
            self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            crash_point("store-write")  # everything written, nothing committed
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):  # a failed statement may have ended it already
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise InputError(self.path, f"cannot write the run store ({exc})") from None
            raise
        with self._errors("cannot write the run store"):
            self.db.execute("COMMIT")

    # meta
    def get_meta(self, key: str) -> str | None:
        rows, _ = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

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
        rows, columns = self._query(
            "SELECT * FROM cycles WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
        )
        if not rows:
            return None
        out = dict(zip(columns, rows[0]))
        out["metrics"] = self._json(out["metrics"], "a cycle's metrics") if out["metrics"] else {}
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
        info, _ = self._query(
            "SELECT 1 FROM selection_info WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
        )
        if not info:
            return None
        rows, _ = self._query(
            "SELECT image_index FROM selections WHERE strategy=? AND seed=? AND cycle=? ORDER BY rank",
            (strategy, seed, cycle),
        )
        return [r[0] for r in rows]

    def selection_info(self, strategy: str, seed: int, cycle: int) -> dict[str, Any] | None:
        rows, _ = self._query(
            "SELECT info FROM selection_info WHERE strategy=? AND seed=? AND cycle=?", (strategy, seed, cycle)
        )
        return self._json(rows[0][0], "a selection's info") if rows else None

    def snapshot(self) -> tuple[list[dict[str, Any]], list[tuple], list[tuple]]:
        """Results, per-class AP and selections read in one transaction: a consistent view even while a
        run writes (``mgral report`` on a running run)."""
        with self._errors("cannot read the run store"):
            self.db.execute("BEGIN")
        try:
            rows = self.results()
            per_class = []
            cycles, _ = self._query(
                "SELECT strategy, seed, cycle, metrics FROM cycles ORDER BY strategy, seed, cycle"
            )
            for strategy, seed, cycle, metrics in cycles:
                aps = (self._json(metrics, "a cycle's metrics") if metrics else {}).get("AP", {})
                per_class += [(strategy, seed, cycle, cls, ap) for cls, ap in aps.items()]
            selections, _ = self._query(
                "SELECT strategy, seed, cycle, rank, image_index, image_id, score FROM selections "
                "ORDER BY strategy, seed, cycle, rank"
            )
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("COMMIT")
        return rows, per_class, selections

    def results(self) -> list[dict[str, Any]]:
        rows, _ = self._query(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM cycles ORDER BY strategy, seed, cycle"
        )
        return [dict(zip(RESULT_COLUMNS, r)) for r in rows]

    # strategy state (agents, look-up tables)
    def put(self, scope: str, key: str, value: bytes | str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (scope, key, value))

    def get(self, scope: str, key: str) -> Any:
        rows, _ = self._query("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key))
        return rows[0][0] if rows else None

    def delete(self, scope: str, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM kv WHERE scope=? AND key=?", (scope, key))

    def keys(self, scope: str) -> list[str]:
        rows, _ = self._query("SELECT key FROM kv WHERE scope=? ORDER BY key", (scope,))
        return [r[0] for r in rows]

"""The scale benchmark in short (benchmarks/scale.py runs 10,000 / 30,000 / 100,000 images): `mgral query`
in a fresh process on a pool of small built-in images stays within memory, reports its progress, and its
selection is fast."""

from __future__ import annotations

from benchmarks import scale


def test_query_on_a_growing_pool(tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "LABELED", 100)
    monkeypatch.setattr(scale, "BUDGET", 100)
    data = scale.dataset(tmp_path, 1200)
    rows = []
    for n in (600, 1200):
        path = scale.partial(tmp_path, data, n)
        for strategy in ("entropy", "coreset"):
            row = scale.query(path, strategy, tmp_path / f"picks-{strategy}-{n}.json")
            assert row["pool"] == n - 100
            rows.append(row)
    for row in rows:
        assert row["peak_mb"] < 3000 and row["select_s"] < 10
    assert all(r["progress_lines"] >= 1 for r in rows)  # one line per finished step, not redrawn bars

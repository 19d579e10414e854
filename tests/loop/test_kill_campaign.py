"""The kill campaign in short (benchmarks/kill_campaign.py runs the long form): SIGKILL at every kind of
point — a training step, evaluation, selection, MGRAL's table and search, a file being written, a store
transaction — resumed each time, ends exactly like an uninterrupted run; SIGTERM and Ctrl-C stop the run
with exit codes 143 and 130 and a message saying how to resume."""

from __future__ import annotations

import signal

from benchmarks.kill_campaign import POINTS, campaign, differences, interrupt, snapshot


def test_sigkill_at_every_kind_of_point_then_resume(tmp_path):
    result = campaign(tmp_path, kills=len(POINTS), seed=1)
    assert set(result["points_reached"]) >= set(POINTS)  # the run goes through every point
    assert result["kills"] == len(POINTS)  # every attempt died by SIGKILL where it was told to
    assert {a["point"] for a in result["attempts"]} == set(POINTS)
    assert all(v == 0 for v in result["differences"].values()), result["differences"]
    assert result["rows_compared"]["results"] == 1 + 3 * 3 and result["rows_compared"]["kv"] > 0


def test_sigterm_and_ctrl_c_stop_with_a_resume_message(tmp_path):
    campaign_dir = tmp_path / "c"
    ref = None
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        r = interrupt(campaign_dir, sig)
        assert r["returncode"] == code, r
        assert "run the same command again to resume" in r["message"]
        assert r["resumed"] == 0
        snap = snapshot(tmp_path / "c" / f"signal-{sig}")
        ref = ref or snap
        assert all(v == 0 for v in differences(ref, snap).values())

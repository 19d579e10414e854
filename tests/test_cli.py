"""The real CLI, end to end, in subprocesses: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mgral.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mgral.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_smoke_run_then_report(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--preset", "smoke", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "| random |" in res.stdout and (out / "report.html").stat().st_size > 1000
    again = run_cli("report", str(out))
    assert again.returncode == 0 and "| random |" in again.stdout
    resumed = run_cli("run", "--out", str(out))  # nothing left to do: same results
    assert resumed.returncode == 0 and (out / "results.csv").read_text().count("\n") == 3


def test_smoke_run_of_every_registered_strategy(tmp_path):
    """``loop.strategies=[all]`` runs the nine strategies through ``mgral run`` (CI's smoke benchmark)."""
    from mgral.strategies.base import available_strategies

    out = tmp_path / "all"
    res = run_cli("-q", "run", "--preset", "smoke", "--out", str(out), "--set", "loop.strategies=[all]",
                  "--set", "train.iterations=8", "--set", "strategy_params.mgral.iterations=3",
                  "--set", "strategy_params.mgral.table_size=2", "--set", "strategy_params.mgral.presize=1",
                  "--set", "strategy_params.mgral.base_iterations=3")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = (out / "results.csv").read_text().splitlines()[1:]
    ran = {line.split(",")[0] for line in rows}
    assert ran == set(available_strategies()) and len(ran) == 9 and len(rows) == 2 * 9
    for name in ran:
        assert f"| {name} |" in res.stdout


def test_data_make_then_evaluate_perfect_detections(tmp_path):
    res = run_cli(
        "data",
        "make",
        "digits",
        "--n",
        "6",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "d"),
        "--image-size",
        "64",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "d" / "annotations.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in doc["annotations"]]  # fmt: skip
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    for metric, key in (("coco", "AP"), ("voc07", "mAP"), ("voc", "mAP")):
        res = run_cli("evaluate", "--gt", str(tmp_path / "d" / "annotations.json"), "--pred", str(tmp_path / "dets.json"),
                      "--metric", metric)  # fmt: skip
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out[key] == pytest.approx(1.0)
        if metric == "coco":
            assert list(out) == [
                "AP",
                "AP50",
                "AP75",
                "APs",
                "APm",
                "APl",
                "AR1",
                "AR10",
                "AR100",
                "ARs",
                "ARm",
                "ARl",
            ]
        else:
            assert set(out["AP"]) <= {str(d) for d in range(10)}


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--preset", "nope", "--out", "X"], "unknown preset 'nope'"),
        (["run", "--preset", "smoke", "--set", "train.lrr=1", "--out", "X"], "unknown key 'train.lrr'"),
        (
            ["run", "--preset", "smoke", "--set", "loop.cycles=0", "--out", "X"],
            "loop.cycles: need at least 1",
        ),
        (["run", "--preset", "voc-ssd300", "--out", "X"], "data.root"),
        (["evaluate", "--gt", "missing.json", "--pred", "p.json"], "missing.json: no such file"),
        (
            ["query", "--data", "missing_dir", "--budget", "3", "--out", "X/picks.json"],
            "missing_dir: no such file",
        ),
        (["run", "--out", "X"], "give --preset or --config"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message, capsys):
    args = [a.replace("X", str(tmp_path / "x")) for a in args]
    code = main(["-q", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mgral: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_bad_prediction_file(tmp_path, shapes_dir, capsys):
    (tmp_path / "p.json").write_text(
        json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    code = main(
        ["evaluate", "--gt", str(shapes_dir / "annotations.json"), "--pred", str(tmp_path / "p.json")]
    )
    assert code == 2 and "entry 0: unknown image id 999" in capsys.readouterr().err


def test_query_cli_bad_budget_writes_nothing(tmp_path, shapes_dir, capsys):
    doc = json.loads((shapes_dir / "annotations.json").read_text())
    keep = {im["id"] for im in doc["images"][:16]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]  # 32 images unannotated
    data = tmp_path / "partial.json"
    data.write_text(json.dumps(doc))
    (tmp_path / "images").symlink_to(shapes_dir / "images")
    out = tmp_path / "picks.json"
    for budget, message in (("0", "expected a positive whole number, got '0'"),
                            ("33", "33 is more than the 32 unlabeled images")):  # fmt: skip
        code = main(["query", "--data", str(data), "--budget", budget, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err == f"mgral: error: --budget: {message}\n"
    assert not out.exists() and not out.with_suffix(".txt").exists()


def test_bench_agent_prints_the_ratio_to_a_bare_lstm(capsys):
    assert main(["bench", "agent", "--pool", "300", "--budget", "30", "--repeats", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["pool"] == 300 and row["ratio"] == pytest.approx(
        row["iteration_s"] / row["bare_lstm_s"], rel=0.05
    )
    assert row["iteration_s"] > 0 and row["bare_lstm_s"] > 0

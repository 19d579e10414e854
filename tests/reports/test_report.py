"""The report people read: a self-contained HTML page with its figures, checked in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mgral.config import load_config
from mgral.loop.active_loop import ActiveLearningRun
from mgral.reports.html import write_report

MGRAL = ["strategy_params.mgral.iterations=6", "strategy_params.mgral.table_size=3", "strategy_params.mgral.passes=0.5",
         "strategy_params.mgral.base_iterations=4", "strategy_params.mgral.true_every=2",
         "strategy_params.mgral.presize=0", "strategy_params.mgral.rescore_top=1"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = load_config(preset="smoke", overrides=["loop.strategies=[random,entropy,mgral]", "loop.seeds=[0,1]",
                                                 "train.iterations=8", "device=cpu", *MGRAL])  # fmt: skip
    ActiveLearningRun(cfg, out).run()
    return out


def test_report_files_and_summary(run_dir):
    html_path, table = write_report(run_dir)
    text = html_path.read_text()
    for name in ("curves", "selections", "classes", "time", "mgral_search", "mgral_fidelity"):
        assert f'data-figure="{name}"' in text
        for ext in ("png", "svg"):
            assert (run_dir / "report" / f"{name}.{ext}").stat().st_size > 1000
    assert 'src="data:image/png;base64,' in text  # self-contained: the figures are embedded
    assert "| mgral |" in table and "AUC - random" in table
    assert (run_dir / "summary.json").is_file() and (run_dir / "report.md").is_file()


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, (
        "Debian's chromium is needed for the browser check; `make test` installs it (apt-get install chromium)"
    )
    return path


def test_report_opens_in_a_headless_browser(run_dir, tmp_path):
    html_path, _ = write_report(run_dir)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000", "--window-size=1200,2600"]  # fmt: skip
    url = html_path.resolve().as_uri()
    dom = subprocess.run(
        [_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    figures = re.search(r'data-figures="(\d+)"', dom.stdout)
    loaded = re.search(r'data-loaded="(\d+)"', dom.stdout)
    assert figures and loaded, "the page's check script did not run"
    assert int(figures.group(1)) == 6 and int(loaded.group(1)) == 6  # every figure decoded by the browser
    shot = tmp_path / "report.png"
    res = subprocess.run([_chromium(), *flags, f"--screenshot={shot}", url], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.std() > 10  # not a blank page
    keep = run_dir / "report-screenshot.png"
    shutil.copy(shot, keep)  # for a person to look at

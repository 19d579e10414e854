"""A real Label Studio for the integration tests: installed in its own virtual environment when missing
(``.venv-labelstudio/``), started once per session. When it cannot be installed or started, the tests
that need it FAIL with the reason: skipping would hide a broken integration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integrations import lsserver

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lsserver.Server]:
    try:
        TIMINGS["install_s"] = lsserver.ensure_venv()
    except lsserver.LabelStudioUnavailable as exc:
        pytest.fail(f"Label Studio could not be installed: {exc}", pytrace=False)
    try:
        with lsserver.running(tmp_path_factory.mktemp("label-studio")) as server:
            TIMINGS["start_s"] = server.start_seconds
            yield server
    except lsserver.LabelStudioUnavailable as exc:
        pytest.fail(f"Label Studio could not be started: {exc}", pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        install = TIMINGS.get("install_s", 0.0)
        what = f"installed in {install:.0f}s" if install else "environment reused"
        terminalreporter.write_line(
            f"Label Studio {lsserver.VERSION}: {what}, started in {TIMINGS.get('start_s', float('nan')):.0f}s"
        )

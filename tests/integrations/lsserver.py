"""A throw-away Label Studio for tests and benchmarks: its own virtual environment, 127.0.0.1, SQLite in a
temporary folder, a fixed user and API token, no browser, no network calls.

The environment is ``.venv-labelstudio/`` in the repository root (``make labelstudio`` creates it; so
does :func:`ensure_venv` when it is missing), kept apart from ``.venv`` because Label Studio pins its own
versions of Django, numpy, the SDK and more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-labelstudio"
VERSION = "1.23.2"
USER, PASSWORD, TOKEN = "mgral@example.com", "mgral-test-password", "mgral0test0token0123456789"


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be installed or started; the message says why."""


def ensure_venv(venv: Path = VENV) -> float:
    """Create ``venv`` with ``label-studio`` unless it has it; the seconds it took (0 when reused)."""
    exe = venv / "bin" / "label-studio"
    if exe.is_file() and (venv / ".installed").is_file():
        return 0.0
    t0 = time.perf_counter()
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"label-studio=={VERSION}"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise LabelStudioUnavailable(f"`{' '.join(cmd)}` failed ({proc.returncode}): {tail}")
    (venv / ".installed").write_text(VERSION + "\n")
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    token: str
    document_root: Path
    process: subprocess.Popen
    log: Path
    start_seconds: float


def _wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-8:])
            raise LabelStudioUnavailable(f"label-studio exited with code {proc.returncode}: {tail}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{url}/health", timeout=2.0)
            if r.status_code == 200 and r.json().get("status") == "UP":
                return
        time.sleep(1.0)
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-8:])
    raise LabelStudioUnavailable(f"label-studio did not answer {url}/health within {timeout:.0f}s: {tail}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server this module started (its own process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def running(workdir: Path, *, timeout: float = 240.0, venv: Path = VENV) -> Iterator[Server]:
    """Start Label Studio with its data under ``workdir`` and ``workdir/docroot`` as the local-files
    document root; stop it on exit."""
    exe = venv / "bin" / "label-studio"
    if not exe.is_file():
        raise LabelStudioUnavailable(f"{exe} not found (run `make labelstudio`)")
    docroot = workdir / "docroot"
    docroot.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
    env.update({
        "LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false", "LABEL_STUDIO_BASE_DATA_DIR": str(workdir / "data"),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(docroot),
        # let it call an ML backend on 127.0.0.1 (mgral serve) and send that backend its webhook events
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    t0 = time.perf_counter()
    last: Exception | None = None
    for attempt in range(2):  # a port taken in between makes Label Studio pick another one silently
        port = free_port()
        log = workdir / f"label-studio-{attempt}.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(
                [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
                 "--enable-legacy-api-token"],
                env=env, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_up(url, proc, log, timeout)
        except LabelStudioUnavailable as exc:
            stop(proc)
            last = exc
            continue
        try:
            yield Server(url, TOKEN, docroot, proc, log, time.perf_counter() - t0)
        finally:
            stop(proc)
        return
    raise LabelStudioUnavailable(str(last))

"""One run at a time per run directory: an advisory lock that a killed run cannot leave stale.

The lock is ``fcntl.flock`` on ``RUN_DIR/.lock``: the operating system releases it when the process that
holds it ends, however it ends (a ``kill -9`` included), so there is no stale lock to clean up. The file
records the holder's pid and host for the message a second run gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

from mgral.errors import InputError


class RunLock:
    """``with RunLock(run_dir):`` holds the directory's lock, or raises :class:`InputError` at once when
    another process holds it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
                holder = f" (pid {info.get('pid')} on {info.get('host')})"
            os.close(fd)
            raise InputError(
                self.path.parent,
                f"this run directory is in use by another mgral run{holder}; wait for it to finish",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

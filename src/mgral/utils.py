"""Small shared helpers: atomic writes, safe loading, stable seeds, timing, progress."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

_CRASH_AT = os.environ.get("MGRAL_CRASH_AT", "")
_COUNT_TO = os.environ.get("MGRAL_COUNT_POINTS", "")
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Fault injection for the kill campaign: with ``MGRAL_CRASH_AT=name:n`` in the environment, the process
    kills itself with SIGKILL the ``n``-th time it reaches the point ``name`` (no clean-up of any kind,
    exactly like ``kill -9``). Without the variable this is a dictionary look-up."""
    if _COUNT_TO:
        with open(_COUNT_TO, "a") as fh:  # the campaign counts how often an uninterrupted run gets here
            fh.write(f'"{name}"\n')
    if not _CRASH_AT:
        return
    target, _, count = _CRASH_AT.partition(":")
    if target != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(count or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a UTF-8 file; a missing, unreadable or non-UTF-8 file raises
    :class:`~mgral.errors.InputError` naming it."""
    from mgral.errors import InputError

    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, expected a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None


def parse_yaml(text: str, source: str | os.PathLike[str]) -> Any:
    """``yaml.safe_load`` of ``text``; anything it cannot load raises :class:`~mgral.errors.InputError`
    naming ``source`` with a one-line reason (PyYAML's own messages span several lines)."""
    import yaml

    from mgral.errors import InputError

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise InputError(source, f"malformed YAML{where}: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        raise InputError(
            source, f"malformed YAML: {exc.reason} {exc.character!r} at position {exc.position}"
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(source, f"malformed YAML: {exc}") from None
    except RecursionError:
        raise InputError(source, "malformed YAML: nested too deeply") from None
    except ValueError as exc:  # a value PyYAML recognises but cannot build, e.g. the date 2001-13-01
        raise InputError(source, f"malformed YAML: {exc}") from None


def _cannot_write(path: Path, exc: OSError) -> Exception:
    from mgral.errors import InputError

    return InputError(path, f"cannot write ({exc.strerror or exc})")


def make_dir(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p``; a folder that cannot be made (read-only file system, permission denied, a file in the
    way) raises :class:`~mgral.errors.InputError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file.

    When writing fails (a full disk, a read-only file system, permission denied), the temporary file is
    removed, ``path`` keeps its previous content (or stays absent), and :class:`~mgral.errors.InputError`
    names ``path`` and the reason."""
    path = Path(path)
    make_dir(path.parent)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        crash_point("file-write")  # the new file is complete but not yet in place
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` with the atomicity of :func:`atomic_write_bytes`."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(source: str | os.PathLike[str] | bytes, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors, numbers, strings, lists and dicts (``weights_only=True``).

    Everything mgral saves (checkpoints, strategy state) is made of those; a file holding any other pickled
    object is refused with :class:`~mgral.errors.InputError` instead of being unpickled, because
    unpickling a file from someone else can execute arbitrary code. ``source`` is a path or the bytes of
    a blob (strategy state in the run store)."""
    from mgral.errors import InputError

    name = "<blob>" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            return torch.load(io.BytesIO(source), map_location=map_location, weights_only=True)
        return torch.load(source, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(name, "file not found") from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(
            name,
            "refusing to load: it holds objects other than tensors, numbers, strings, lists and dicts, and "
            f"unpickling them could run arbitrary code ({first})",
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise InputError(name, f"not a readable checkpoint ({exc.__class__.__name__}: {exc})") from None


def stable_hash(*parts: object) -> int:
    """A 63-bit integer hash of ``parts`` that is the same in every process (unlike ``hash``)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def derive_seed(*parts: object) -> int:
    """A seed for a named random stream, e.g. ``derive_seed(seed, "train", cycle)``; fits in 32 bits."""
    return stable_hash(*parts) % (2**31 - 1)


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


@contextlib.contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed seconds."""
    out = {"s": 0.0}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - start


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from mgral.errors import InputError

        raise InputError("device", f"'{name}' was asked for but CUDA is not available on this machine")
    return dev


progress_log = logging.getLogger("mgral.progress")


class _LineProgress:
    """What a progress bar becomes when stderr is not a terminal: no redraws, a log line when the step
    finishes (and one a minute while a long step runs)."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, every_s: float = 60.0) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.start = self.last = time.perf_counter()
        self.every_s = every_s
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            progress_log.info("%s: %d/%s %s%s", self.desc, self.n, self.total or "?", self.unit, self.postfix)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = " (" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"

    def close(self) -> None:
        elapsed = time.perf_counter() - self.start
        progress_log.info("%s: %d %s in %.1fs%s", self.desc, self.n, self.unit, elapsed, self.postfix)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kw: Any) -> None:
        return None

    def close(self) -> None:
        return None


@contextlib.contextmanager
def progress_bar(
    total: int | None, desc: str, *, enabled: bool = True, unit: str = "it", initial: int = 0
) -> Iterator[Any]:
    """A progress display with ``update(n)``, ``set_postfix(**kw)``: a tqdm bar on a terminal, one log
    line per finished step otherwise (so a log file holds lines, not carriage returns), nothing when
    ``enabled`` is false."""
    bar: Any
    if not enabled:
        bar = _NoProgress()
    elif sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=initial, desc=desc, leave=False, unit=unit)
    else:
        bar = _LineProgress(total, desc, unit, initial)
    try:
        yield bar
    finally:
        bar.close()

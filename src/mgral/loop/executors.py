"""Where independent pieces of work run: in this process, in local worker processes, or on a Ray cluster.

An executor maps a picklable function over items and yields ``(item, result)`` as they complete. The
experiment runner uses one for its cells (a strategy under a seed) and MGRAL uses the same one for the true
rewards of its look-up table. Work is split so that the result does not depend on where it ran: every
random stream of a task is derived from its own seeds, and each task sets the same number of torch
threads wherever it runs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from mgral.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Executor(Protocol):
    workers: int

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]: ...

    def close(self) -> None: ...


def _init_worker(threads: int, level: int) -> None:
    """Each worker process: its share of the cores, and log lines (not progress bars) on stderr."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip


class InlineExecutor:
    """Everything in this process, one item after the other (with ``threads`` torch threads if given)."""

    workers = 1

    def __init__(self, threads: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, fn(item)

    def close(self) -> None:
        return None


class LocalExecutor:
    """``workers`` processes on this machine (spawned, so CUDA and threads start clean), each with
    ``threads`` torch threads. A failing item re-raises its exception in the parent; closing (also on
    Ctrl-C) cancels what has not started and stops the workers."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(threads, logging.getLogger().getEffectiveLevel()),
        )  # fmt: skip

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        pending: dict[Future[R], T] = {self.pool.submit(fn, item): item for item in items}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                yield item, fut.result()

    def close(self) -> None:
        for proc in list(getattr(self.pool, "_processes", {}).values()):
            if proc.is_alive():
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """The same tasks as Ray tasks, on a running cluster (``address``) or a local Ray instance. Every task
    asks for ``threads`` CPUs (and, with ``gpus``, a GPU share) and sets as many torch threads."""

    def __init__(
        self, address: str | None, threads: int, gpus: float = 0.0, num_cpus: int | None = None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--executor", "ray is not installed; pip install 'mgral[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count()}
            try:
                ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **kw)
            except ConnectionError as exc:
                raise InputError("--address", f"cannot reach the Ray cluster at {address} ({exc})") from None
        self.threads, self.gpus = threads, gpus
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(1, threads)))
        self._remote = ray.remote(_ray_task)

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        opts: dict[str, Any] = {"num_cpus": self.threads}
        if self.gpus:
            opts["num_gpus"] = self.gpus
        refs = {self._remote.options(**opts).remote(fn, item, self.threads): item for item in items}
        while refs:
            done, _ = self.ray.wait(list(refs), num_returns=1)
            for ref in done:
                item = refs.pop(ref)
                yield item, self.ray.get(ref)

    def close(self) -> None:
        return None


def _ray_task(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def make_executor(kind: str = "local", workers: int | str = 1, *, address: str | None = None,
                  device: str = "cpu", tasks: int | None = None, threads: int | None = None) -> Executor:  # fmt: skip
    """``local`` with ``workers`` processes (``auto``: one per core on a CPU, one on a GPU; never more
    than ``tasks``), or ``ray``; one worker runs inline. Torch threads per task: ``threads``, by default
    the cores over the workers. (CPU results are bit-identical for the same threads per task: parallel
    reductions add in an order that depends on the thread count.)"""
    cores = os.cpu_count() or 1
    if workers == "auto":
        n = 1 if device.startswith("cuda") else cores
    else:
        try:
            n = int(workers)
        except ValueError:
            raise InputError("--workers", f"expected a whole number or auto, got {workers!r}") from None
        if n < 1:
            raise InputError("--workers", f"need at least 1 worker, got {n}")
    if tasks is not None:
        n = max(1, min(n, tasks))
    threads = threads or max(1, cores // n)
    if kind == "ray":
        return RayExecutor(address, threads, gpus=1.0 / n if device.startswith("cuda") else 0.0)
    if kind != "local":
        raise InputError("--executor", f"expected local or ray, got {kind!r}")
    if address:
        raise InputError("--address", "an address goes with --executor ray")
    return InlineExecutor(threads) if n == 1 else LocalExecutor(n, threads)


__all__ = ["Executor", "InlineExecutor", "LocalExecutor", "RayExecutor", "make_executor"]

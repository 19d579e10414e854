"""Micro-benchmarks exposed on the CLI (``mgral bench agent``)."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np
import torch

from mgral.strategies.rl.policy import LSTMPolicy
from mgral.strategies.rl.search import collect_rollout, reinforce_update


def _peak_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def bench_agent(
    pool: int, budget: int, *, repeats: int = 3, device: str = "cpu", seed: int = 0
) -> dict[str, Any]:
    """Seconds of one MGRAL agent iteration (exactly-b rollout keeping its activations + hand-written
    backward through time + Adam step) on a pool of random 256-d embeddings, against a bare fused ``nn.LSTM(257, 257)`` forward and
    backward over the same sequence. Best of ``repeats`` for each, the two timed alternately after one
    warm-up each."""
    if not 0 < budget <= pool:
        raise ValueError(f"budget {budget} for a pool of {pool}")
    dev = torch.device(device)
    torch.manual_seed(seed)
    emb = torch.randn(pool, 256, device=dev)
    policy = LSTMPolicy().to(dev)
    policy.set_budget_prior(budget, pool)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def iteration() -> None:
        rollout, _ = collect_rollout(policy, emb, budget, rng.random(pool))
        reinforce_update(policy, opt, emb, rollout, reward=float(rng.random()), baseline=0.5, decay=0.5)
        sync()

    bare = torch.nn.LSTM(257, 257).to(dev)
    x = torch.randn(pool, 1, 257, device=dev)

    def bare_step() -> None:
        out, _ = bare(x)
        out.sum().backward()
        sync()

    def timed(fn: Any) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    iteration()  # warm-up (compilation, allocator)
    bare_step()
    # alternated, so that a change of load between the two sides hits both
    pairs = [(timed(iteration), timed(bare_step)) for _ in range(repeats)]
    it_s, bare_s = min(p[0] for p in pairs), min(p[1] for p in pairs)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _peak_mb()
    return {
        "pool": pool, "budget": budget, "iteration_s": round(it_s, 4), "bare_lstm_s": round(bare_s, 4),
        "ratio": round(it_s / bare_s, 3), "peak_mb": round(peak, 1), "device": str(dev),
        "threads": torch.get_num_threads(),
    }  # fmt: skip

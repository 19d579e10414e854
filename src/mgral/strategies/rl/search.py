"""The pieces of MGRAL's policy-gradient search: its resumable state, rollout collection, the policy
update and the final pick (rollouts are collected separately from the update, as in cleanrl)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from mgral.strategies.rl.policy import LSTMPolicy, Rollout


@dataclass
class AgentState:
    """Everything a search needs to resume exactly where it stopped (saved through ``ctx.state``).

    Batches are positions into the cycle's unlabeled pool; ``truths`` maps a batch (its sorted positions
    joined by commas) to its true reward, so no batch is scored twice."""

    iteration: int = 0
    baseline: float | None = None  # the moving-average mAP_ref (on the cycle-centred scale)
    best: list[dict[str, Any]] = field(default_factory=list)  # the best distinct batches seen, best first
    true_calls: int = 0  # true (proxy) rewards computed in this cycle
    table_filled: int = 0  # records of the pre-search plan already made
    presizes: list[int] = field(default_factory=list)  # larger sizes recorded at the first selection
    truths: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # per iteration: reward, kind, baseline
    fidelity: list[list[float]] = field(default_factory=list)  # [estimate, true reward] of policy batches
    records: dict[str, Any] = field(default_factory=dict)  # Records.state_dict(), earlier cycles included
    policy: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None

    def remember(self, positions: list[int], value: float, kind: str, keep: int) -> None:
        """Keep the ``keep`` best distinct batches by value."""
        key = sorted(positions)
        if any(sorted(c["positions"]) == key for c in self.best):
            return
        self.best.append({"positions": positions, "value": value, "kind": kind})
        self.best.sort(key=lambda c: -c["value"])
        del self.best[keep:]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> AgentState:
        return cls(**state)


class Step(NamedTuple):
    """One collected rollout and its reward."""

    rollout: Rollout
    positions: np.ndarray  # the picked positions (exactly the budget)
    feature: np.ndarray
    value: float
    kind: str  # true | table | kernel


def collect_rollout(
    policy: LSTMPolicy, emb: torch.Tensor, budget: int, uniforms: np.ndarray
) -> tuple[Rollout, np.ndarray]:
    """Sample one exactly-``budget`` rollout keeping its activations (so that :func:`reinforce_update` takes
    the hand-written backward); returns it and its picked positions."""
    rollout = policy.sample(emb, budget, uniforms, keep=True)
    return rollout, np.nonzero(rollout.decisions > 0)[0]


def reinforce_update(
    policy: LSTMPolicy, opt: torch.optim.Optimizer, emb: torch.Tensor, rollout: Rollout, reward: float,
    baseline: float, decay: float,
) -> float:  # fmt: skip
    """One policy-gradient step on ``-(reward - baseline) * log pi(rollout)``; returns the new baseline
    ``decay * baseline + (1 - decay) * reward`` (the paper's moving-average mAP_ref). The gradient comes
    from the rollout's kept activations (hand-written backward) when it has them, else from autograd
    through the fused LSTM pass."""
    opt.zero_grad(set_to_none=True)
    if rollout.activations is not None:
        policy.reinforce_grad(emb, rollout, reward - baseline)
    else:
        (-(reward - baseline) * policy.log_prob(emb, rollout)).backward()
    opt.step()
    return decay * baseline + (1 - decay) * reward


def greedy_batch(policy: LSTMPolicy, emb: torch.Tensor, budget: int) -> np.ndarray:
    """The trained policy decoded greedily (take an image when its probability exceeds 1/2, forced steps
    as in sampling): positions of exactly ``budget`` images."""
    return np.nonzero(policy.sample(emb, budget, None).decisions > 0)[0]


def pick_probabilities(policy: LSTMPolicy, emb: torch.Tensor, chosen: np.ndarray) -> np.ndarray:
    """The policy's selection probability of every image given the decisions of ``chosen``."""
    with torch.no_grad():
        d = torch.zeros(len(emb))
        d[torch.as_tensor(chosen, dtype=torch.long)] = 1
        return torch.sigmoid(policy.logits(emb, d)).numpy()


def polish(
    reward: Callable[[np.ndarray], float], positions: np.ndarray, n: int, swaps: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Swap hill climbing on a batch of ``positions`` (of ``n``) with the exact ``reward`` of positions:
    ``swaps`` times, replace a uniformly drawn member by a uniformly drawn non-member and keep the swap
    when the reward strictly rises. The batch size never changes and the reward never falls; with a
    deterministic reward and a seeded ``rng`` the result is deterministic. Returns the polished positions
    (sorted) and a record (reward before and after, swaps tried and accepted)."""
    pos = np.sort(np.asarray(positions, np.int64))
    if swaps <= 0 or len(pos) in (0, n):
        value = float(reward(pos)) if len(pos) else 0.0
        return pos, {"start": value, "end": value, "swaps": 0, "accepted": 0}
    member = np.zeros(n, bool)
    member[pos] = True
    current = start = float(reward(pos))
    accepted = 0
    for _ in range(swaps):
        j = int(rng.integers(len(pos)))
        outside = np.flatnonzero(~member)
        i = int(outside[rng.integers(len(outside))])
        trial = pos.copy()
        trial[j] = i
        value = float(reward(trial))
        if value > current:
            member[pos[j]], member[i] = False, True
            pos, current, accepted = trial, value, accepted + 1
    return np.sort(pos), {"start": start, "end": current, "swaps": swaps, "accepted": accepted}


__all__ = [
    "AgentState",
    "Step",
    "collect_rollout",
    "greedy_batch",
    "pick_probabilities",
    "polish",
    "reinforce_update",
]

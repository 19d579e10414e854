"""The registered strategy ``mgral``: MGRAL's REINFORCE search over exactly-b batches (paper III-C to III-F).

Per cycle: standardise the pool's embeddings; fill the look-up table with ``table_size`` random batches
and their true rewards; then for ``iterations`` steps collect an exactly-``b`` rollout, estimate its reward
(the estimator, or the true reward when the estimator declines, which then grows the table), and take an
Adam step on ``-(reward - baseline) * log pi(rollout)``, ``baseline`` being the moving average
``baseline <- decay * baseline + (1 - decay) * reward`` (decay 0.5, updated after the step). The batch
finally selected is the best one seen (``final=best``) or the greedy decoding of the trained policy
(``final=greedy``); both are recorded. The policy's weights carry over from one cycle to the next.

Resume: the search's :class:`~mgral.strategies.rl.search.AgentState` goes to ``ctx.state`` every
``checkpoint_every`` iterations; every draw comes from a generator seeded by ``(seed, cycle, iteration)``,
so a search killed mid-way and resumed picks the same batch as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy
from mgral.strategies.rl.estimators import Estimator, KernelEstimator, LookupTable, NoEstimator
from mgral.strategies.rl.features import BatchFeaturizer, HistogramFeaturizer, MeanFeaturizer
from mgral.strategies.rl.policy import LSTMPolicy
from mgral.strategies.rl.reward import ProxyReward, RewardConfig
from mgral.strategies.rl.search import (
    AgentState,
    collect_rollout,
    greedy_batch,
    pick_probabilities,
    reinforce_update,
)
from mgral.utils import derive_seed, make_dir, progress_bar, rng_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MgralOptions:
    """Options of ``mgral`` (CPU-sized defaults; the presets set the paper's)."""

    iterations: int = 30  # REINFORCE steps per cycle (paper: 2,200 VOC, 800 COCO)
    lr: float = 1e-3  # Adam's learning rate of the policy
    baseline_decay: float = 0.5  # of the moving-average baseline mAP_ref (paper: 0.5)
    table_size: int = 8  # random batches pre-computed per cycle (paper: 200 VOC, 30 COCO)
    neighbours: int = 5  # of the table's inverse-distance estimate
    estimator: Literal["table", "kernel", "none"] = "table"  # none: always the true reward
    feature: Literal["histogram", "mean"] = "histogram"  # the batch feature
    clusters: int = 16  # k-means clusters of the histogram feature
    final: Literal["best", "greedy"] = "best"
    reward: Literal["pseudo", "oracle"] = "pseudo"  # oracle: the batch's true labels (simulation only)
    pseudo_labels: Literal["semi", "supervised"] = (
        "semi"  # the reward's base detector (never saw the hold-out)
    )
    holdout: float = 0.2  # fraction of the labeled images the reward's mAP is measured on
    base_iterations: int = 0  # the reward's base detector; 0 = the run's train.iterations
    proxy_steps: int = 20  # head fine-tuning iterations per true reward
    proxy_lr: float = 1e-3
    pseudo_threshold: float = 0.5
    checkpoint_every: int = 1  # save the search state every N iterations

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.table_size < 0:
            raise ValueError("iterations and table_size must be >= 0")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")

    def reward_config(self) -> RewardConfig:
        return RewardConfig(kind=self.reward, pseudo_labels=self.pseudo_labels, holdout=self.holdout,
                            base_iterations=self.base_iterations, steps=self.proxy_steps, lr=self.proxy_lr,
                            pseudo_threshold=self.pseudo_threshold)  # fmt: skip


@register_strategy
class MgralStrategy(Strategy):
    """Mean-AP guided reinforced selection (see the module docstring)."""

    name = "mgral"
    needs = frozenset({"embeddings", "training"})  # + oracle, by the options
    Options = MgralOptions
    options: MgralOptions

    def __init__(self, options: MgralOptions | None = None) -> None:
        super().__init__(options)
        needs = {"embeddings", "training"}
        if self.options.reward == "oracle":
            needs.add("oracle")
        self.needs = frozenset(needs)

    # ------------------------------------------------------------------ parts
    def featurizer(self, emb: np.ndarray, seed: int) -> BatchFeaturizer:
        if self.options.feature == "mean":
            return MeanFeaturizer(emb)
        return HistogramFeaturizer(emb, self.options.clusters, seed)

    def estimator(self, table: LookupTable) -> Estimator:
        if self.options.estimator == "kernel":
            return KernelEstimator(table)
        if self.options.estimator == "none":
            return NoEstimator()
        return table

    def reward(self, ctx: SelectionContext) -> ProxyReward:
        opts = self.options
        if ctx.workdir is not None:
            make_dir(ctx.workdir)
        return ProxyReward(
            opts.reward_config(), ctx.training, dataset=ctx.dataset, labeled=ctx.labeled, unlabeled=ctx.unlabeled,
            seed=ctx.seed, cycle=ctx.cycle, workdir=ctx.workdir,
            oracle=ctx.oracle if opts.reward == "oracle" else None, progress=ctx.progress,
        )  # fmt: skip

    def _fresh(self, ctx: SelectionContext, budget: int, n: int) -> tuple[LSTMPolicy, AgentState]:
        policy = LSTMPolicy(seed=derive_seed(ctx.seed, "policy"))
        carried = ctx.state.get("policy")  # the previous cycle's trained policy
        if carried is not None:
            policy.load_state_dict(carried)
        policy.set_budget_prior(budget, n)
        return policy, AgentState()

    # ------------------------------------------------------------------ select
    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        opts = self.options
        t0 = time.perf_counter()
        raw = ctx.embeddings_unlabeled.astype(np.float64)
        emb_np = ((raw - raw.mean(0)) / (raw.std(0) + 1e-6)).astype(np.float32)
        emb, n = torch.as_tensor(emb_np), len(emb_np)
        featurize = self.featurizer(emb_np, ctx.seed)
        reward_fn = self.reward(ctx)
        key = f"search/cycle{ctx.cycle}"

        saved = ctx.state.get(key)
        if saved is not None:
            state = AgentState.from_dict(saved)
            policy = LSTMPolicy(seed=derive_seed(ctx.seed, "policy"))
            assert state.policy is not None
            policy.load_state_dict(state.policy)
            log.info("mgral: resuming the search of cycle %d at iteration %d", ctx.cycle + 1, state.iteration)
        else:
            policy, state = self._fresh(ctx, budget, n)
        opt = torch.optim.Adam(policy.parameters(), lr=opts.lr)
        if state.optimizer is not None:
            opt.load_state_dict(state.optimizer)
        table = LookupTable.from_state(state.table) if state.table else LookupTable(k=opts.neighbours)
        estimator = self.estimator(table)

        def checkpoint() -> None:
            ctx.state.put(key, replace(state, policy=policy.state_dict(), optimizer=opt.state_dict(),
                                       table=table.state_dict()).to_dict())  # fmt: skip

        def true_reward(positions: np.ndarray) -> float:
            state.true_calls += 1
            return reward_fn(ctx.unlabeled[positions])

        # -------------------------------------------------------------- look-up table
        with progress_bar(
            opts.table_size, "mgral table", enabled=ctx.progress, initial=state.table_filled
        ) as bar:
            while state.table_filled < opts.table_size:
                pos = np.sort(
                    rng_for(ctx.seed, "table", ctx.cycle, state.table_filled).choice(
                        n, size=budget, replace=False
                    )
                )
                table.add(featurize(pos), true_reward(pos))
                state.table_filled += 1
                bar.update(1)
                checkpoint()
        if state.baseline is None:
            state.baseline = float(np.mean(table.rewards)) if len(table) else 0.0

        # -------------------------------------------------------------- REINFORCE
        with progress_bar(
            opts.iterations, "mgral search", enabled=ctx.progress, initial=state.iteration
        ) as bar:
            while state.iteration < opts.iterations:
                t = state.iteration
                rollout, pos = collect_rollout(
                    policy, emb, budget, rng_for(ctx.seed, "rollout", ctx.cycle, t).random(n)
                )
                feat = featurize(pos)
                value, kind = estimator.estimate(feat), str(opts.estimator)
                if value is None:
                    value, kind = true_reward(pos), "true"
                    table.add(feat, value)
                state.baseline = reinforce_update(
                    policy, opt, emb, rollout, value, state.baseline, opts.baseline_decay
                )
                if value > state.best_value:
                    state.best_value, state.best = float(value), pos.tolist()
                state.history.append(
                    {"reward": float(value), "kind": kind, "baseline": float(state.baseline)}
                )
                state.iteration = t + 1
                bar.update(1)
                bar.set_postfix(reward=f"{value:.4f}", baseline=f"{state.baseline:.4f}")
                if opts.checkpoint_every and state.iteration % opts.checkpoint_every == 0:
                    checkpoint()
        checkpoint()

        # -------------------------------------------------------------- final batch
        greedy = greedy_batch(policy, emb, budget)
        greedy_est = table.estimate(featurize(greedy)) if len(table) else None
        best = np.asarray(state.best if state.best is not None else greedy, np.int64)
        chosen = best if opts.final == "best" else greedy
        probs = pick_probabilities(policy, emb, chosen)
        ctx.state.put("policy", {k: v.clone() for k, v in policy.state_dict().items()})
        kinds = [h["kind"] for h in state.history]
        info: dict[str, Any] = {
            "final": opts.final, "best_value": state.best_value, "greedy_estimate": greedy_est,
            "best_batch": ctx.unlabeled[best].tolist(), "greedy_batch": ctx.unlabeled[greedy].tolist(),
            "table_size": len(table), "true_rewards": state.true_calls, "table_estimates": len(kinds) - kinds.count("true"),
            "base_map": reward_fn.base_map, "rewards": [h["reward"] for h in state.history],
            "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        log.info("mgral: cycle %d search done: %d iterations, %d true rewards, best %.4f", ctx.cycle + 1,
                 opts.iterations, state.true_calls, state.best_value)  # fmt: skip
        order = np.argsort(-probs[chosen], kind="stable")
        return Selection(ctx.unlabeled[chosen[order]], probs[chosen[order]], info)


__all__ = ["MgralOptions", "MgralStrategy"]

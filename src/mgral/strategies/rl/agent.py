"""MGRAL's REINFORCE search and the registered strategy ``mgral`` (paper III-C to III-F).

Per cycle: standardise the pool's embeddings; fill the look-up table with ``table_size`` random batches
and their true rewards; then for ``iterations`` steps sample an exactly-``b`` rollout, estimate its reward
(table, or the true reward when the table declines and is then grown), and take an Adam step on
``-(reward - baseline) * log pi(rollout)`` where ``baseline`` is the moving average
``baseline <- decay * baseline + (1 - decay) * reward`` (decay 0.5, updated after the step). The batch
finally selected is the best one seen (``final=best``) or the greedy decoding of the trained policy
(``final=greedy``); both are recorded. The policy's weights carry over from one cycle to the next.

Resume: the agent's state (policy, optimiser, baseline, iteration, best batch, table) is written to the
run store every ``checkpoint_every`` iterations, in the same transaction as the table records; every draw
comes from a generator seeded by ``(seed, cycle, iteration)``, so a search killed mid-way and resumed picks
the same batch as an uninterrupted one.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from tqdm.auto import tqdm

from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy
from mgral.strategies.rl.lookup import KernelEstimator, LookupTable
from mgral.strategies.rl.policy import LSTMPolicy, Rollout
from mgral.strategies.rl.reward import ProxyReward, RewardConfig
from mgral.utils import derive_seed, rng_for

log = logging.getLogger(__name__)

FINALS = ("best", "greedy")
ESTIMATORS = ("table", "kernel", "none")
FEATURES = ("histogram", "mean")


class BatchFeaturizer:
    """The batch feature of the look-up table. ``histogram``: the share of the batch in each of ``k``
    k-means clusters of the pool's embeddings (what the batch covers); ``mean``: its mean embedding."""

    def __init__(self, emb: np.ndarray, kind: str, clusters: int, seed: int) -> None:
        self.kind = kind
        self.emb = emb
        if kind == "histogram":
            k = min(clusters, len(emb))
            self.k = k
            self.assign = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(emb)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        if self.kind == "mean":
            return self.emb[positions].mean(0)
        return np.bincount(self.assign[positions], minlength=self.k) / max(1, len(positions))


def reinforce_update(
    policy: LSTMPolicy, opt: torch.optim.Optimizer, emb: torch.Tensor, rollout: Rollout, reward: float,
    baseline: float, decay: float,
) -> float:  # fmt: skip
    """One policy-gradient step on ``-(reward - baseline) * log pi(rollout)``; returns the new baseline
    ``decay * baseline + (1 - decay) * reward`` (the paper's moving-average mAP_ref)."""
    loss = -(reward - baseline) * policy.log_prob(emb, rollout)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return decay * baseline + (1 - decay) * reward


@register_strategy
class MgralStrategy(Strategy):
    """Mean-AP guided reinforced selection. Options (CPU-sized defaults; the presets set the paper's):

    iterations: REINFORCE steps per cycle (paper: 2,200 VOC, 800 COCO); lr: Adam's learning rate;
    baseline_decay: of the moving-average baseline (paper: 0.5); table_size: random batches pre-computed
    per cycle (paper: 200 VOC, 30 COCO); neighbours: of the table estimate; estimator: table | kernel |
    none (always the true reward); feature: histogram | mean; clusters: for the histogram feature;
    final: best | greedy; reward: pseudo | oracle; pseudo_labels: semi (from the semi-supervised base
    detector, ISD/SED) | detector (from the cycle's detector); the ``proxy_*`` / ``holdout`` / ``base_iterations`` /
    ``pseudo_threshold`` options configure :class:`RewardConfig`.
    """

    name = "mgral"
    needs = frozenset({"embeddings", "detector"})

    def __init__(
        self, *, iterations: int = 30, lr: float = 1e-3, baseline_decay: float = 0.5, table_size: int = 8,
        neighbours: int = 5, estimator: str = "table", feature: str = "histogram", clusters: int = 16,
        final: str = "best", reward: str = "pseudo", pseudo_labels: str = "semi", holdout: float = 0.2, base_iterations: int = 0,
        proxy_steps: int = 20, proxy_lr: float = 1e-3, pseudo_threshold: float = 0.5, checkpoint_every: int = 1,
    ) -> None:  # fmt: skip
        if final not in FINALS:
            raise ValueError(f"final must be one of {', '.join(FINALS)}, got {final!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
        if reward not in ("pseudo", "oracle"):
            raise ValueError(f"reward must be pseudo or oracle, got {reward!r}")
        if pseudo_labels not in ("semi", "detector"):
            raise ValueError(f"pseudo_labels must be semi or detector, got {pseudo_labels!r}")
        self.pseudo_labels = pseudo_labels
        if iterations < 0 or table_size < 0 or not 0 <= baseline_decay < 1:
            raise ValueError("iterations and table_size must be >= 0 and baseline_decay in [0, 1)")
        self.iterations, self.lr, self.baseline_decay = iterations, lr, baseline_decay
        self.table_size, self.neighbours, self.estimator = table_size, neighbours, estimator
        self.feature, self.clusters, self.final, self.reward = feature, clusters, final, reward
        self.holdout, self.base_iterations, self.proxy_steps = holdout, base_iterations, proxy_steps
        self.proxy_lr, self.pseudo_threshold, self.checkpoint_every = (
            proxy_lr,
            pseudo_threshold,
            checkpoint_every,
        )
        if reward == "oracle":
            self.needs = frozenset({"embeddings", "detector", "oracle"})
        self._policy_state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self._policy_state} if self._policy_state is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._policy_state = state.get("policy")

    def reward_config(self) -> RewardConfig:
        return RewardConfig(
            kind=self.reward, pseudo_labels=self.pseudo_labels, holdout=self.holdout, base_iterations=self.base_iterations, steps=self.proxy_steps,
            lr=self.proxy_lr, pseudo_threshold=self.pseudo_threshold,
        )  # fmt: skip

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def _dump(obj: Any) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    @staticmethod
    def _load(blob: bytes) -> Any:
        return torch.load(io.BytesIO(blob), weights_only=False)

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        assert ctx.embeddings_unlabeled is not None and ctx.detector is not None
        if ctx.config is None:
            raise ValueError("mgral needs the run config (its reward trains a proxy detector)")
        detector, train_cfg, semi_cfg = ctx.detector, ctx.config.train, ctx.config.semi
        seed = int(ctx.extras.get("seed", 0))
        store = ctx.extras.get("store")
        scope = f"mgral/seed{seed}/cycle{ctx.cycle}"
        t0 = time.perf_counter()
        raw = ctx.embeddings_unlabeled.astype(np.float64)
        emb_np = ((raw - raw.mean(0)) / (raw.std(0) + 1e-6)).astype(np.float32)
        emb = torch.as_tensor(emb_np)
        n = len(emb)
        featurize = BatchFeaturizer(emb_np, self.feature, self.clusters, seed)

        reward_fn: ProxyReward | None = None

        def true_reward(positions: np.ndarray) -> float:
            nonlocal reward_fn
            if reward_fn is None:
                if ctx.workdir is not None:
                    ctx.workdir.mkdir(parents=True, exist_ok=True)
                reward_fn = ProxyReward(
                    self.reward_config(), dataset=ctx.dataset, labeled=ctx.labeled, unlabeled=ctx.unlabeled,
                    detector=detector, train_cfg=train_cfg, semi_cfg=semi_cfg, seed=seed,
                    cycle=ctx.cycle, workdir=ctx.workdir, pseudo_predictions=ctx.predictions,
                    oracle_dataset=ctx.extras.get("oracle_dataset"), progress=ctx.progress,
                )  # fmt: skip
            return reward_fn(ctx.unlabeled[positions])

        # -------------------------------------------------------------- state (fresh or resumed)
        table = LookupTable(k=self.neighbours)
        policy = LSTMPolicy()
        opt = torch.optim.Adam(policy.parameters(), lr=self.lr)
        state: dict[str, Any] = {"iteration": 0, "baseline": None, "best": None, "best_value": -np.inf,
                                 "true_calls": 0, "history": []}  # fmt: skip
        blob = store.get(scope, "agent") if store is not None else None
        if blob is not None:
            saved = self._load(blob)
            policy.load_state_dict(saved["policy"])
            opt.load_state_dict(saved["optimizer"])
            table = LookupTable.from_state(saved["table"])
            state = saved["state"]
            log.info(
                "mgral: resuming the search of cycle %d at iteration %d", ctx.cycle + 1, state["iteration"]
            )
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "policy"))
                policy = LSTMPolicy()
            if self._policy_state is not None:
                policy.load_state_dict(self._policy_state)
            policy.set_budget_prior(budget, n)
            opt = torch.optim.Adam(policy.parameters(), lr=self.lr)

        def checkpoint() -> None:
            if store is None:
                return
            payload = {"policy": policy.state_dict(), "optimizer": opt.state_dict(), "table": table.state_dict(),
                       "state": state}  # fmt: skip
            store.put(scope, "agent", self._dump(payload))

        # -------------------------------------------------------------- look-up table
        kernel = KernelEstimator() if self.estimator == "kernel" else None
        j = len(table) if state["iteration"] == 0 else self.table_size
        pre_bar = tqdm(
            total=self.table_size, initial=j, desc="mgral table", disable=not ctx.progress, leave=False
        )
        while j < self.table_size:
            pos = np.sort(rng_for(seed, "table", ctx.cycle, j).choice(n, size=budget, replace=False))
            table.add(featurize(pos), true_reward(pos))
            state["true_calls"] += 1
            j += 1
            pre_bar.update(1)
            checkpoint()
        pre_bar.close()
        if state["baseline"] is None:
            state["baseline"] = float(np.mean(table.rewards)) if len(table) else 0.0

        # -------------------------------------------------------------- REINFORCE
        bar = tqdm(total=self.iterations, initial=state["iteration"], desc="mgral search", disable=not ctx.progress,
                   leave=False)  # fmt: skip
        while state["iteration"] < self.iterations:
            t = state["iteration"]
            rollout = policy.sample(emb, budget, rng_for(seed, "rollout", ctx.cycle, t).random(n))
            pos = np.nonzero(rollout.decisions > 0)[0]
            feat = featurize(pos)
            kind = "true"
            value: float | None
            if self.estimator == "table":
                est = table.estimate(feat)
                value = est.value
                kind = "table"
            elif self.estimator == "kernel" and kernel is not None and len(table):
                value = kernel.estimate(table, feat)
                kind = "kernel"
            else:
                value = None
            if value is None:
                value = true_reward(pos)
                table.add(feat, value)
                state["true_calls"] += 1
                kind = "true"
            state["baseline"] = reinforce_update(
                policy, opt, emb, rollout, value, state["baseline"], self.baseline_decay
            )
            if value > state["best_value"]:
                state["best_value"], state["best"] = float(value), pos.tolist()
            state["history"].append(
                {"reward": float(value), "kind": kind, "baseline": float(state["baseline"])}
            )
            state["iteration"] = t + 1
            bar.update(1)
            if ctx.progress:
                bar.set_postfix(reward=f"{value:.4f}", baseline=f"{state['baseline']:.4f}")
            if self.checkpoint_every and (t + 1) % self.checkpoint_every == 0:
                checkpoint()
        bar.close()
        checkpoint()

        # -------------------------------------------------------------- final batch
        greedy = np.nonzero(policy.sample(emb, budget, None).decisions > 0)[0]
        greedy_est = table.estimate(featurize(greedy)).value if len(table) else None
        if state["best"] is None:  # no search iteration: take the best table record's neighbourhood
            state["best"] = greedy.tolist()
        chosen = np.asarray(state["best"] if self.final == "best" else greedy, np.int64)
        with torch.no_grad():
            d = torch.zeros(n)
            d[chosen] = 1
            probs = torch.sigmoid(policy.logits(emb, d)).numpy()
        self._policy_state = {k: v.clone() for k, v in policy.state_dict().items()}
        kinds = [h["kind"] for h in state["history"]]
        info = {
            "final": self.final, "best_value": state["best_value"], "greedy_estimate": greedy_est,
            "best_batch": ctx.unlabeled[np.asarray(state["best"], np.int64)].tolist(),
            "greedy_batch": ctx.unlabeled[greedy].tolist(), "table_size": len(table),
            "true_rewards": state["true_calls"], "table_estimates": kinds.count("table") + kinds.count("kernel"),
            "base_map": reward_fn.base_map if reward_fn is not None else None,
            "rewards": [h["reward"] for h in state["history"]], "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        log.info("mgral: cycle %d search done: %d iterations, %d true rewards, best %.4f", ctx.cycle + 1,
                 self.iterations, state["true_calls"], state["best_value"])  # fmt: skip
        order = np.argsort(-probs[chosen], kind="stable")
        return Selection(ctx.unlabeled[chosen[order]], probs[chosen[order]], info)

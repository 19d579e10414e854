"""The MGRAL sampling policy (paper III-C): an LSTM over the unlabeled pool, parameters shared across
images, whose input at image ``i`` is its 256-d embedding concatenated with the previous decision.

Exactly-``b`` rollouts with an exact log-probability
-----------------------------------------------------
Images are visited in pool order. With ``r`` picks left and ``m`` images left (this one included), the
step is *forced* when ``r == 0`` (skip) or ``r == m`` (take); otherwise the decision is a Bernoulli draw
with the policy's probability ``p_i``. Every rollout therefore selects exactly ``b`` images, and its
probability under this procedure is the product over the unforced steps of ``p_i`` or ``1 - p_i`` (a forced
step has probability one): the log-probability below is exact, not a relaxation. The decoder bias starts
at ``logit(b / N)`` so that, before any learning, the expected number of picks is ``b`` and forcing only
touches the tail of the sequence.

Speed: decisions are samples, not differentiable values, so a rollout is sampled in a no-grad pass (a
compiled recurrence, :mod:`.kernels`; the input projection of all images precomputed in one matrix
product) that keeps the activations; the policy-gradient step then reuses them in a hand-written backward
through time (:meth:`LSTMPolicy.reinforce_grad`) instead of recomputing the sequence. The fused
``nn.LSTM`` pass (:meth:`LSTMPolicy.log_prob`) computes the same quantity with autograd; the tests check
that the two agree.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Activations(NamedTuple):
    """What the sampling pass keeps for the backward: its first ``T`` (unforced) steps."""

    gates: np.ndarray  # float32[T, 4H], activated (i, f, g, o)
    cells: np.ndarray  # float32[T, H]
    hidden: np.ndarray  # float32[T, H]
    logits: np.ndarray  # float32[T]


class Rollout(NamedTuple):
    decisions: np.ndarray  # float32[N] in {0, 1}; exactly `budget` ones
    forced: np.ndarray  # bool[N]: steps whose decision was forced by the budget
    activations: Activations | None = None


class LSTMPolicy(nn.Module):
    """LSTM(embed_dim + 1 -> hidden) and a linear decoder to one selection logit per image.

    The initial weights come from ``seed`` alone (torch's global random state is left untouched)."""

    def __init__(self, embed_dim: int = 256, hidden: int = 257, *, seed: int = 0) -> None:
        super().__init__()
        self.embed_dim, self.hidden = embed_dim, hidden
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lstm = nn.LSTM(embed_dim + 1, hidden)
            self.decoder = nn.Linear(hidden, 1)

    def set_budget_prior(self, budget: int, pool: int) -> None:
        """Decoder bias to ``logit(budget / pool)``: b expected picks before any learning."""
        q = min(max(budget / pool, 1e-6), 1 - 1e-6)
        with torch.no_grad():
            self.decoder.bias.fill_(math.log(q / (1 - q)))

    @staticmethod
    def inputs(emb: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        """``[e_i, d_{i-1}]`` for every image (``d_{-1} = 0``): float[N, embed_dim + 1]."""
        prev = torch.cat([decisions.new_zeros(1), decisions[:-1]]).to(emb.dtype)
        return torch.cat([emb, prev[:, None]], 1)

    def _weights(self) -> tuple[np.ndarray, ...]:
        lstm: Any = self.lstm
        w_ih = lstm.weight_ih_l0.detach().cpu().numpy().astype(np.float32)
        w_hh = np.ascontiguousarray(lstm.weight_hh_l0.detach().cpu().numpy().astype(np.float32))
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().cpu().numpy().astype(np.float32)
        w_out = np.ascontiguousarray(self.decoder.weight.detach().cpu().numpy().astype(np.float32)[0])
        return w_ih, w_hh, bias, w_out

    @torch.no_grad()
    def sample(
        self, emb: torch.Tensor, budget: int, uniforms: np.ndarray | None, *, keep: bool = False
    ) -> Rollout:
        """One exactly-``budget`` rollout; ``uniforms[i]`` drives the draw at image ``i`` (``None``: greedy,
        take an image when its probability exceeds 1/2, forced steps as above). With ``keep``, the rollout
        carries the activations :meth:`reinforce_grad` needs."""
        from mgral.strategies.rl.kernels import lstm_sample

        n = len(emb)
        if not 0 < budget <= n:
            raise ValueError(f"budget {budget} for a pool of {n}")
        w_ih, w_hh, bias, w_out = self._weights()
        x = emb.detach().cpu().numpy().astype(np.float32)
        pre = np.ascontiguousarray(x @ w_ih[:, : self.embed_dim].T + bias)
        w_d = np.ascontiguousarray(w_ih[:, self.embed_dim])
        b_out = float(self.decoder.bias.detach().cpu())
        h4 = 4 * self.hidden
        gates = np.empty((n, h4), np.float32)
        cells = np.empty((n, self.hidden), np.float32)
        hidden = np.empty((n, self.hidden), np.float32)
        logits = np.empty(n, np.float32)
        decisions = np.zeros(n, np.float32)
        u = np.zeros(n, np.float64) if uniforms is None else np.asarray(uniforms, np.float64)
        t = lstm_sample(pre, w_hh, w_d, w_out, b_out, budget, u, uniforms is None, gates, cells, hidden, logits,
                        decisions)  # fmt: skip
        forced = np.zeros(n, bool)
        forced[t:] = True
        acts = Activations(gates[:t], cells[:t], hidden[:t], logits[:t]) if keep else None
        return Rollout(decisions, forced, acts)

    def reinforce_grad(self, emb: torch.Tensor, rollout: Rollout, advantage: float) -> float:
        """Set the gradients of ``-advantage * log pi(rollout)`` on the parameters (accumulating into
        ``.grad``) from the activations the sampling pass kept, with a hand-written backward through time;
        returns ``log pi(rollout)``. Equals autograd through :meth:`log_prob` (tested)."""
        from mgral.strategies.rl.kernels import lstm_backward

        acts = rollout.activations
        if acts is None:
            raise ValueError("the rollout was sampled without keep=True")
        t = len(acts.logits)
        d = rollout.decisions[:t].astype(np.float32)
        z = acts.logits.astype(np.float64)
        p = 1.0 / (1.0 + np.exp(-z))
        logp = float(np.sum(np.where(d > 0, -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z))))
        dz = (-advantage * (d - p)).astype(np.float32)  # d(-A log pi)/dz on the unforced steps
        _, w_hh, _, w_out = self._weights()
        da = np.empty((t, 4 * self.hidden), np.float32)
        if t:
            lstm_backward(dz, acts.gates, acts.cells, np.ascontiguousarray(w_hh.T), w_out, da)
        x = emb.detach().cpu().numpy().astype(np.float32)[:t]
        prev = np.concatenate([[0.0], rollout.decisions[: max(0, t - 1)]]).astype(np.float32)[:t]
        h_prev = (
            np.concatenate([np.zeros((1, self.hidden), np.float32), acts.hidden[:-1]]) if t else acts.hidden
        )
        grads = {
            "lstm.weight_ih_l0": np.concatenate([da.T @ x, (da.T @ prev)[:, None]], 1),
            "lstm.weight_hh_l0": da.T @ h_prev,
            "lstm.bias_ih_l0": da.sum(0),
            "lstm.bias_hh_l0": da.sum(0),
            "decoder.weight": (dz @ acts.hidden)[None, :],
            "decoder.bias": np.array([dz.sum()], np.float32),
        }
        for name, param in self.named_parameters():
            g = torch.as_tensor(grads[name], dtype=param.dtype, device=param.device).reshape(param.shape)
            param.grad = g if param.grad is None else param.grad + g
        return logp

    def logits(self, emb: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        """Selection logits of every image given the decisions taken (one fused LSTM pass)."""
        out, _ = self.lstm(self.inputs(emb, decisions)[:, None, :])
        return self.decoder(out[:, 0, :]).squeeze(1)

    def log_prob(self, emb: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """Exact log-probability of ``rollout`` (sum over unforced steps), differentiable in the weights."""
        d = torch.as_tensor(rollout.decisions, device=emb.device)
        free = torch.as_tensor(~rollout.forced, device=emb.device)
        z = self.logits(emb, d)
        logp = torch.where(d > 0, F.logsigmoid(z), F.logsigmoid(-z))
        return (logp * free).sum()

    def log_prob_stepwise(self, emb: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """The same quantity with a step-by-step autograd loop (reference for tests; slow)."""
        cell: Any = nn.LSTMCell(self.embed_dim + 1, self.hidden).to(emb.device)
        lstm: Any = self.lstm
        cell.weight_ih, cell.weight_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
        cell.bias_ih, cell.bias_hh = lstm.bias_ih_l0, lstm.bias_hh_l0
        h = emb.new_zeros(1, self.hidden)
        c = emb.new_zeros(1, self.hidden)
        total = emb.new_zeros(())
        prev = emb.new_zeros(1, 1)
        for i in range(len(emb)):
            h, c = cell(torch.cat([emb[i : i + 1], prev], 1), (h, c))
            z = self.decoder(h)[0, 0]
            d = float(rollout.decisions[i])
            if not rollout.forced[i]:
                total = total + (F.logsigmoid(z) if d > 0 else F.logsigmoid(-z))
            prev = emb.new_full((1, 1), d)
        return total

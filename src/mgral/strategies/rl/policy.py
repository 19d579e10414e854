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
tight NumPy recurrence, the input projection of all images precomputed in one matrix product) and its
log-probability is recomputed with gradients by one fused ``nn.LSTM`` pass over the known inputs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Rollout(NamedTuple):
    decisions: np.ndarray  # float32[N] in {0, 1}; exactly `budget` ones
    forced: np.ndarray  # bool[N]: steps whose decision was forced by the budget


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

    @torch.no_grad()
    def sample(self, emb: torch.Tensor, budget: int, uniforms: np.ndarray | None) -> Rollout:
        """One exactly-``budget`` rollout; ``uniforms[i]`` drives the draw at image ``i`` (``None``: greedy,
        take an image when its probability exceeds 1/2, forced steps as above)."""
        n = len(emb)
        if not 0 < budget <= n:
            raise ValueError(f"budget {budget} for a pool of {n}")
        h_dim = self.hidden
        lstm: Any = self.lstm
        w_ih = lstm.weight_ih_l0.detach().cpu().numpy().astype(np.float32)
        w_hh = lstm.weight_hh_l0.detach().cpu().numpy().astype(np.float32)
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().cpu().numpy().astype(np.float32)
        # torch's gate order is (i, f, g, o); reorder to (i, f, o, g) so one sigmoid covers three gates
        order = np.concatenate(
            [np.arange(0, 2 * h_dim), np.arange(3 * h_dim, 4 * h_dim), np.arange(2 * h_dim, 3 * h_dim)]
        )
        w_ih, w_hh, bias = w_ih[order], w_hh[order], bias[order]
        pre = emb.detach().cpu().numpy().astype(np.float32) @ w_ih[:, : self.embed_dim].T + bias
        w_d = np.ascontiguousarray(w_ih[:, self.embed_dim])
        w_out = self.decoder.weight.detach().cpu().numpy().astype(np.float32)[0]
        b_out = float(self.decoder.bias.detach().cpu())
        h: np.ndarray = np.zeros(h_dim, np.float32)
        c: np.ndarray = np.zeros(h_dim, np.float32)
        g = np.empty(4 * h_dim, np.float32)
        decisions = np.zeros(n, np.float32)
        forced = np.zeros(n, bool)
        left = budget
        prev = 0.0
        exp, tanh, dot = np.exp, np.tanh, np.dot
        h3 = 3 * h_dim
        for i in range(n):
            if left == 0 or left == n - i:  # forced: skip the LSTM arithmetic, the decision is certain
                forced[i:] = True
                decisions[i:] = 0.0 if left == 0 else 1.0
                break
            dot(w_hh, h, out=g)
            g += pre[i]
            if prev:
                g += w_d
            s = 1.0 / (1.0 + exp(-g[:h3]))
            c = s[h_dim : 2 * h_dim] * c + s[:h_dim] * tanh(g[h3:])
            h = s[2 * h_dim : h3] * tanh(c)
            z = float(dot(w_out, h)) + b_out
            if uniforms is None:
                take = z > 0.0
            else:  # u < sigmoid(z)  <=>  u * (1 + e^-z) < 1
                take = uniforms[i] * (1.0 + math.exp(-z)) < 1.0 if z > -60 else False
            prev = 1.0 if take else 0.0
            decisions[i] = prev
            left -= int(take)
        return Rollout(decisions, forced)

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

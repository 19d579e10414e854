"""Compiled recurrences of the MGRAL policy: the sampling forward that keeps its activations, and the
hand-written backward through time that reuses them.

A rollout's decisions are samples, so the LSTM cannot run as one fused sequence op while sampling: each
step's input holds the previous decision. The forward below runs step by step (numba-compiled, the
recurrent product by BLAS) and keeps what the gradient needs (gate activations, cell states, hidden
states); :func:`lstm_backward` then walks the sequence backwards once. The weight gradients are sums of
outer products over the sequence, done afterwards as three matrix products (see
:meth:`mgral.strategies.rl.policy.LSTMPolicy.reinforce_grad`). Gate order is torch's: ``i, f, g, o``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def lstm_sample(
    pre: np.ndarray, w_hh: np.ndarray, w_d: np.ndarray, w_out: np.ndarray, b_out: float, budget: int,
    uniforms: np.ndarray, greedy: bool, gates: np.ndarray, cells: np.ndarray, hidden: np.ndarray,
    logits: np.ndarray, decisions: np.ndarray,
) -> int:  # fmt: skip
    """Sample an exactly-``budget`` rollout; returns ``T``, the number of unforced steps computed.

    pre (float32[N, 4H]): input projection of the embeddings plus both biases; w_hh (float32[4H, H]);
    w_d (float32[4H]): the input weights of the previous decision; w_out (float32[H]), b_out: the decoder.
    Written for the first ``T`` steps: gates (activated i, f, g, o), cells (c_t), hidden (h_t), logits (z_t);
    decisions for all ``N`` steps (forced ones included). A step is forced when no pick is left (skip) or
    every image left must be taken; from the first forced step on, every step is forced.
    """
    n, h4 = pre.shape
    hd = h4 // 4
    h = np.zeros(hd, np.float32)
    c = np.zeros(hd, np.float32)
    left = budget
    prev = 0.0
    for t in range(n):
        if left == 0 or left == n - t:
            val = 0.0 if left == 0 else 1.0
            for k in range(t, n):
                decisions[k] = val
            return t
        g = np.dot(w_hh, h) + pre[t]
        if prev > 0.0:
            g += w_d
        z = b_out
        for j in range(hd):
            ig = 1.0 / (1.0 + math.exp(-g[j]))
            fg = 1.0 / (1.0 + math.exp(-g[hd + j]))
            gg = math.tanh(g[2 * hd + j])
            og = 1.0 / (1.0 + math.exp(-g[3 * hd + j]))
            cj = fg * c[j] + ig * gg
            hj = og * math.tanh(cj)
            c[j] = cj
            h[j] = hj
            gates[t, j] = ig
            gates[t, hd + j] = fg
            gates[t, 2 * hd + j] = gg
            gates[t, 3 * hd + j] = og
            cells[t, j] = cj
            hidden[t, j] = hj
            z += w_out[j] * hj
        logits[t] = z
        if greedy:
            take = z > 0.0
        else:  # u < sigmoid(z)  <=>  u * (1 + e^-z) < 1
            take = z > -60.0 and uniforms[t] * (1.0 + math.exp(-z)) < 1.0
        prev = 1.0 if take else 0.0
        decisions[t] = prev
        if take:
            left -= 1
    return n


@njit(cache=True)
def lstm_backward(
    dz: np.ndarray, gates: np.ndarray, cells: np.ndarray, w_hh_t: np.ndarray, w_out: np.ndarray, da: np.ndarray
) -> None:  # fmt: skip
    """Backward through time of a loss whose gradient with respect to the logits is ``dz`` (float32[T]).

    Writes ``da`` (float32[T, 4H]), the gradient with respect to each step's gate pre-activations; the
    recurrent product uses ``w_hh_t`` = ``w_hh.T`` (float32[H, 4H], contiguous)."""
    t_steps, h4 = gates.shape
    hd = h4 // 4
    dh_next = np.zeros(hd, np.float32)
    dc_next = np.zeros(hd, np.float32)
    for t in range(t_steps - 1, -1, -1):
        for j in range(hd):
            ig = gates[t, j]
            fg = gates[t, hd + j]
            gg = gates[t, 2 * hd + j]
            og = gates[t, 3 * hd + j]
            tc = math.tanh(cells[t, j])
            c_prev = cells[t - 1, j] if t > 0 else 0.0
            dh = dh_next[j] + dz[t] * w_out[j]
            dc = dc_next[j] + dh * og * (1.0 - tc * tc)
            da[t, j] = dc * gg * ig * (1.0 - ig)
            da[t, hd + j] = dc * c_prev * fg * (1.0 - fg)
            da[t, 2 * hd + j] = dc * ig * (1.0 - gg * gg)
            da[t, 3 * hd + j] = dh * tc * og * (1.0 - og)
            dc_next[j] = dc * fg
        dh_next = np.dot(w_hh_t, da[t])


__all__ = ["lstm_backward", "lstm_sample"]

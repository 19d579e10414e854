"""Compiled recurrences of the MGRAL policy: the sampling forward that keeps its activations, and the
hand-written backward through time that reuses them.

A rollout's decisions are samples, so the LSTM cannot run as one fused sequence op while sampling: each
step's input holds the previous decision. The forward below runs step by step (numba-compiled, the
recurrent product by BLAS) and keeps what the gradient needs (gate activations, cell states, hidden
states); :func:`lstm_backward` then walks the sequence backwards once. The weight gradients are sums of
outer products over the sequence, done afterwards as three matrix products (see
:meth:`mgral.strategies.rl.policy.LSTMPolicy.reinforce_grad`). Gate order is torch's: ``i, f, g, o``.

Speed: a step is one recurrent matrix-vector product (memory-bound: the 4H x H weights are about 1 MiB)
and the gate nonlinearities. libm's ``exp``/``tanh`` do not vectorise, and made the nonlinearities cost as
much as the product, so :func:`_tanh` is a float32 rational approximation (odd polynomial of degree 13 over
one of degree 6, clamped where float32's tanh is +-1; the coefficients are the standard minimax ones that
Eigen and XLA use) built from multiplications and one division, which LLVM vectorises; its largest
absolute error is 3.5e-7, and the sigmoid is ``(1 + tanh(x / 2)) / 2``. The tests compare both passes with
torch's fused LSTM and autograd.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

_CLAMP: Any = np.float32(7.90531110763549805)
_P: tuple[Any, ...] = tuple(np.float32(v) for v in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03,
))  # fmt: skip
_Q: tuple[Any, ...] = tuple(np.float32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                   4.89352518554385e-03))  # fmt: skip
_HALF: Any = np.float32(0.5)


@njit(inline="always", fastmath=True)
def _tanh(x: float) -> float:
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p: Any = _P[0]
    p = p * x2 + _P[1]
    p = p * x2 + _P[2]
    p = p * x2 + _P[3]
    p = p * x2 + _P[4]
    p = p * x2 + _P[5]
    p = p * x2 + _P[6]
    q: Any = _Q[0]
    q = q * x2 + _Q[1]
    q = q * x2 + _Q[2]
    q = q * x2 + _Q[3]
    return x * p / q


@njit(inline="always", fastmath=True)
def _sigmoid(x: float) -> float:
    return _HALF + _HALF * _tanh(_HALF * x)


@njit(cache=True, fastmath=True)
def tanh_f32(x: np.ndarray, out: np.ndarray) -> None:
    """The kernels' tanh, elementwise (for the accuracy test)."""
    for i in range(x.size):
        out[i] = _tanh(x[i])


@njit(cache=True, fastmath=True)
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
    g = np.empty(h4, np.float32)
    left = budget
    prev = np.float32(0.0)
    for t in range(n):
        if left == 0 or left == n - t:
            val = 0.0 if left == 0 else 1.0
            for k in range(t, n):
                decisions[k] = val
            return t
        np.dot(w_hh, h, g)
        pt = pre[t]
        for k in range(h4):
            g[k] += pt[k] + prev * w_d[k]
        for k in range(2 * hd):
            g[k] = _sigmoid(g[k])
        for k in range(2 * hd, 3 * hd):
            g[k] = _tanh(g[k])
        for k in range(3 * hd, h4):
            g[k] = _sigmoid(g[k])
        for j in range(hd):
            c[j] = g[hd + j] * c[j] + g[j] * g[2 * hd + j]
        for j in range(hd):
            h[j] = g[3 * hd + j] * _tanh(c[j])
        z: Any = np.float32(0.0)
        for j in range(hd):
            z += w_out[j] * h[j]
        z += b_out
        gates[t] = g
        cells[t] = c
        hidden[t] = h
        logits[t] = z
        if greedy:
            take = z > 0.0
        else:  # u < sigmoid(z)  <=>  u * (1 + e^-z) < 1
            take = z > -60.0 and uniforms[t] * (1.0 + math.exp(-z)) < 1.0
        prev = np.float32(1.0) if take else np.float32(0.0)
        decisions[t] = prev
        if take:
            left -= 1
    return n


@njit(cache=True, fastmath=True)
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
    zero = np.float32(0.0)
    for t in range(t_steps - 1, -1, -1):
        dzt = dz[t]
        for j in range(hd):
            ig = gates[t, j]
            fg = gates[t, hd + j]
            gg = gates[t, 2 * hd + j]
            og = gates[t, 3 * hd + j]
            tc = _tanh(cells[t, j])
            c_prev = cells[t - 1, j] if t > 0 else zero
            dh = dh_next[j] + dzt * w_out[j]
            dc = dc_next[j] + dh * og * (1.0 - tc * tc)
            da[t, j] = dc * gg * ig * (1.0 - ig)
            da[t, hd + j] = dc * c_prev * fg * (1.0 - fg)
            da[t, 2 * hd + j] = dc * ig * (1.0 - gg * gg)
            da[t, 3 * hd + j] = dh * tc * og * (1.0 - og)
            dc_next[j] = dc * fg
        np.dot(w_hh_t, da[t], dh_next)


__all__ = ["lstm_backward", "lstm_sample", "tanh_f32"]

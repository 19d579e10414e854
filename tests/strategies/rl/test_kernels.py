import numpy as np

from mgral.strategies.rl.kernels import tanh_f32


def test_vectorised_tanh_is_float32_accurate_everywhere():
    x = np.concatenate([np.linspace(-30, 30, 600_001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    out = np.empty_like(x)
    tanh_f32(x, out)
    err = np.abs(out.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 5e-7
    assert np.all(np.abs(out) <= 1.0) and np.array_equal(np.sign(out), np.sign(x))

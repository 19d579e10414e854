import numpy as np
import pytest

from mgral.reports.summary import curves, markdown_table, normalized_auc, seed_aucs

ROWS = [
    {"strategy": "a", "seed": s, "cycle": c, "n_labeled": 10 * (c + 1), "map": 0.1 * (c + 1) + 0.01 * s}
    for s in (0, 1) for c in range(3)
] + [{"strategy": "b", "seed": 0, "cycle": c, "n_labeled": 10 * (c + 1), "map": 0.2} for c in range(3)]  # fmt: skip


def test_curves_mean_std_and_auc():
    c = curves(ROWS)
    np.testing.assert_allclose(c["a"]["mean"], [0.105, 0.205, 0.305])
    np.testing.assert_allclose(c["a"]["std"], [0.005] * 3)
    assert normalized_auc(np.array([10, 20, 30]), np.array([0.2, 0.2, 0.2])) == pytest.approx(0.2)
    np.testing.assert_allclose(seed_aucs(ROWS, "a"), [0.2, 0.21])
    table = markdown_table(ROWS)
    assert "| a | 0.1050 ± 0.0050 |" in table and "| b | 0.2000 | 0.2000 | 0.2000 | 0.2000 |" in table

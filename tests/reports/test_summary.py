import numpy as np
import pytest

from mgral.reports.summary import (
    curves,
    markdown_table,
    normalized_auc,
    paired_difference,
    seed_aucs,
    seed_final_map,
    summary,
    time_breakdown,
)

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
    table = markdown_table(ROWS, reference="none")
    assert "| a | 0.1050 ± 0.0050 |" in table and "| b | 0.2000 | 0.2000 | 0.2000 | 0.2000 |" in table


def _flat(strategy, values):
    """Two cycles at the same value per seed: each seed's AUC is that value."""
    return [{"strategy": strategy, "seed": s, "cycle": c, "n_labeled": 10 * (c + 1), "map": v, "train_s": 1.0 + s,
             "infer_s": 0.5, "setup_s": 0.0, "select_s": 0.25, "eval_s": 0.1} for s, v in enumerate(values)
            for c in range(2)]  # fmt: skip


def test_paired_difference_by_hand():
    rows = _flat("mgral", [0.30, 0.32, 0.31]) + _flat("random", [0.28, 0.31, 0.29])
    d = paired_difference(rows, "mgral", "random")
    # differences 0.02, 0.01, 0.02: mean 1/60, sd 0.005774, t(0.975, 2) = 4.3027 -> half-width 0.014343
    assert d["n"] == 3 and d["diffs"] == pytest.approx([0.02, 0.01, 0.02])
    assert d["mean"] == pytest.approx(1 / 60)
    assert d["ci"] == pytest.approx([1 / 60 - 0.014343, 1 / 60 + 0.014343], abs=1e-5)
    assert d["p"] == pytest.approx(0.0377, abs=5e-4)  # t = 5 with 2 degrees of freedom
    # resampling three seeds: the mean is 0.01 only when seed 1 is drawn thrice (1/27 = 3.7% > 2.5%) and 0.02
    # when it is never drawn (8/27 > 2.5%), so the percentile interval is [0.01, 0.02], inside the t interval
    assert d["ci_bootstrap"] == pytest.approx([0.01, 0.02])
    # ten seeds: the interval depends on the resamples, and the same rows give it to the last digit
    diffs = np.array([0.031, -0.007, 0.002, 0.023, -0.004, 0.014, -0.002, 0.031, 0.023, -0.007])
    ten = _flat("mgral", 0.3 + diffs) + _flat("random", [0.3] * 10)
    first, again = (paired_difference(ten, "mgral", "random")["ci_bootstrap"] for _ in range(2))
    assert first == again and diffs.min() < first[0] < diffs.mean() < first[1] < diffs.max()
    s = summary(rows)
    assert s["reference"] == "random" and "vs_reference" in s["strategies"]["mgral"]
    assert "+0.0167 [+0.0023, +0.0310], p=0.038, 3 seeds" in markdown_table(rows)


def test_paired_difference_at_the_last_cycle():
    # the curves cross: a is behind at 10 labeled images and ahead at 30, so AUC and last cycle disagree
    rows = [{"strategy": st, "seed": s, "cycle": c, "n_labeled": 10 * (c + 1), "map": m + step * s}
            for s in (0, 1, 2) for st, ms, step in (("a", (0.1, 0.3, 0.5), 0.02), ("b", (0.3, 0.35, 0.4), 0.01))
            for c, m in enumerate(ms)]  # fmt: skip
    rows.append({"strategy": "a", "seed": 3, "cycle": 0, "n_labeled": 10, "map": 0.9})  # seed 3 unfinished
    assert seed_final_map(rows, "a") == pytest.approx({0: 0.5, 1: 0.52, 2: 0.54})
    last = paired_difference(rows, "a", "b", final=True)
    # differences 0.10, 0.11, 0.12: mean 0.11, sd 0.01, t = 0.11 / (0.01 / sqrt 3) = 19.05, 2 df -> p = 0.0027
    assert last["n"] == 3 and last["diffs"] == pytest.approx([0.10, 0.11, 0.12])
    assert last["p"] == pytest.approx(0.00274, abs=5e-5)
    assert paired_difference(rows, "a", "b")["mean"] < 0 < last["mean"]


def test_time_breakdown_is_per_seed():
    t = time_breakdown(_flat("x", [0.1, 0.2]))
    # per seed: two cycles; train 1.0 and 2.0 per cycle for seeds 0 and 1 -> 2.0 and 4.0 -> mean 3.0
    assert t["x"]["train_s"] == pytest.approx(3.0) and t["x"]["select_s"] == pytest.approx(0.5)

import numpy as np
import pytest

from mgral.data.pool import Pool


def test_pool_records_cycle_and_round_trips():
    pool = Pool.random_initial(10, 3, np.random.default_rng(0))
    assert len(pool.labeled) == 3 and len(pool.unlabeled) == 7
    pool.label(pool.unlabeled[:2], cycle=1)
    assert len(pool.labeled_before(1)) == 3 and len(pool.labeled_before(2)) == 5
    with pytest.raises(ValueError, match="already labeled"):
        pool.label(pool.labeled[:1], cycle=2)
    other = Pool(10)
    other.load_state_dict(pool.state_dict())
    np.testing.assert_array_equal(other.labeled_cycle, pool.labeled_cycle)

"""The active-learning pool: per image, the cycle at which it was labeled (-1 = unlabeled)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNLABELED = -1


class Pool:
    """Labeled/unlabeled state of ``n`` images, as ``labeled_cycle[i]`` (``-1`` while unlabeled).

    Recording the cycle rather than a boolean makes the whole history explicit and resume trivial: the
    labeled set before cycle ``k`` is ``0 <= labeled_cycle < k``.
    """

    def __init__(self, n: int) -> None:
        self.labeled_cycle: np.ndarray = np.full(n, UNLABELED, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labeled_cycle)

    @classmethod
    def with_initial(cls, n: int, initial: Sequence[int] | np.ndarray) -> Pool:
        pool = cls(n)
        pool.label(initial, cycle=0)
        return pool

    @classmethod
    def random_initial(
        cls, n: int, size: int, rng: np.random.Generator, candidates: np.ndarray | None = None
    ) -> Pool:
        """A pool whose cycle-0 labeled set is ``size`` images drawn from ``candidates`` (default all)."""
        cand = np.arange(n) if candidates is None else np.asarray(candidates)
        if not 0 < size <= len(cand):
            raise ValueError(f"initial labeled set of {size} images from {len(cand)} candidates")
        return cls.with_initial(n, np.sort(rng.choice(cand, size=size, replace=False)))

    def label(self, indices: Sequence[int] | np.ndarray, cycle: int) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        if len(np.unique(idx)) != len(idx):
            raise ValueError("duplicate indices")
        if (self.labeled_cycle[idx] != UNLABELED).any():
            raise ValueError("some images are already labeled")
        self.labeled_cycle[idx] = cycle

    @property
    def labeled(self) -> np.ndarray:
        return np.nonzero(self.labeled_cycle != UNLABELED)[0]

    @property
    def unlabeled(self) -> np.ndarray:
        return np.nonzero(self.labeled_cycle == UNLABELED)[0]

    def labeled_before(self, cycle: int) -> np.ndarray:
        """Indices labeled at a cycle ``< cycle`` (the training set of cycle ``cycle - 1``'s successor)."""
        lc = self.labeled_cycle
        return np.nonzero((lc != UNLABELED) & (lc < cycle))[0]

    def state_dict(self) -> dict[str, list[int]]:
        return {"labeled_cycle": self.labeled_cycle.tolist()}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        arr = np.asarray(state["labeled_cycle"], dtype=np.int64)
        if arr.shape != self.labeled_cycle.shape:
            raise ValueError("pool size mismatch")
        self.labeled_cycle = arr

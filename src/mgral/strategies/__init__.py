"""Query strategies behind one protocol (:mod:`mgral.strategies.base`). Importing this package registers
the built-in strategies."""

from mgral.strategies import cdal, coreset, ebal, entropy, learning_loss, mial, ppal, random  # noqa: F401
from mgral.strategies.base import (
    STRATEGIES,
    ScoringStrategy,
    Selection,
    SelectionContext,
    Strategy,
    StrategyState,
    available_strategies,
    build_strategy,
    register_strategy,
)
from mgral.strategies.rl import agent  # noqa: F401

__all__ = [
    "STRATEGIES", "ScoringStrategy", "Selection", "SelectionContext", "Strategy", "StrategyState",
    "available_strategies", "build_strategy", "register_strategy",
]  # fmt: skip

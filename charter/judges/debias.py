"""Combine the two presentation orders of a comparison so position bias cancels.

Small judges lean hard towards one position (SmolLM2-135M says "B" almost always). Scoring
each comparison with a first and b first and combining removes a constant position bias. Two
combinations are offered:

- ``log_odds`` (default): average the log-odds that a is better. A bias that adds a constant to
  the log-odds of position A cancels exactly, and the remaining signal is not squashed towards
  0.5 the way averaging probabilities squashes it when the bias is strong.
- ``probability``: the arithmetic mean of the two probabilities (the Constitutional AI recipe).

Both give the same hard verdict (a wins iff ``p_first_order + p_swapped > 1``, which is iff the
two log-odds sum above zero); they differ only in how soft the label is.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

OrderCombine = Literal["log_odds", "probability"]


class CombinedOrders(NamedTuple):
    """P(a better) from each order, combined, and whether the orders agree on the winner (a
    tuple: one is made per comparison, and a frozen dataclass cost 3x as much to make)."""

    p_first_order: float
    p_swapped: float
    p_a: float
    swap_consistent: bool


def sigmoid(x: float) -> float:
    """Numerically safe logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def combine_orders(
    logodds_first: float, logodds_swapped: float, how: OrderCombine = "log_odds"
) -> CombinedOrders:
    """Combine two log-odds that candidate a is the better one.

    Args:
        logodds_first: log P(a better) - log P(b better) with a shown first (as A).
        logodds_swapped: the same quantity with a shown second (as B).
        how: ``"log_odds"`` or ``"probability"`` (see the module docstring).
    """
    p1, p2 = sigmoid(logodds_first), sigmoid(logodds_swapped)
    if how == "log_odds":
        p_a = sigmoid((logodds_first + logodds_swapped) / 2)
    elif how == "probability":
        p_a = (p1 + p2) / 2
    else:
        raise ValueError(f"unknown order combination {how!r}; use 'log_odds' or 'probability'")
    consistent = (logodds_first > 0) == (logodds_swapped > 0) and logodds_first != 0
    return CombinedOrders(p_first_order=p1, p_swapped=p2, p_a=p_a, swap_consistent=consistent)

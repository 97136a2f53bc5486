"""Rank K candidates from their pairwise soft labels.

Two scores per candidate: the soft win rate (mean P(win) over its comparisons) and a
Bradley-Terry strength fitted to the soft outcomes. With all pairs judged the two mostly agree;
Bradley-Terry stays meaningful when only some pairs were judged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence


def win_rates(
    candidates: Sequence[str], outcomes: Sequence[tuple[str, str, float]]
) -> dict[str, float]:
    """Mean probability of winning per candidate; ``outcomes`` are ``(a, b, p_a)``.

    A candidate in no comparison gets 0.5.
    """
    wins: dict[str, float] = defaultdict(float)
    games: dict[str, int] = defaultdict(int)
    for a, b, p_a in outcomes:
        wins[a] += p_a
        wins[b] += 1.0 - p_a
        games[a] += 1
        games[b] += 1
    return {c: (wins[c] / games[c] if games[c] else 0.5) for c in candidates}


def bradley_terry(
    candidates: Sequence[str],
    outcomes: Sequence[tuple[str, str, float]],
    *,
    prior: float = 0.1,
    iterations: int = 200,
    tol: float = 1e-9,
) -> dict[str, float]:
    """Fit Bradley-Terry log-strengths (mean zero) to soft outcomes with the MM algorithm.

    Args:
        candidates: ids to score.
        outcomes: ``(a, b, p_a)`` per judged comparison.
        prior: pseudo-games of a half win against every other candidate, which keeps strengths
            finite when one candidate wins everything (common with K=4).
        iterations: cap on MM updates.
        tol: stop when no strength moves more than this (relative).
    """
    ids = list(candidates)
    if not ids:
        return {}
    # Lists indexed by position, not dicts keyed by id pairs: 3x faster, with every float
    # operation in the same order as the dict version, so the same strengths to the last bit.
    n = len(ids)
    at = {c: k for k, c in enumerate(ids)}
    wins = [0.0] * n
    games = [[0.0] * n for _ in range(n)]
    for a, b, p_a in outcomes:
        wins[at[a]] += p_a
        wins[at[b]] += 1.0 - p_a
        games[at[a]][at[b]] += 1.0
        games[at[b]][at[a]] += 1.0
    for i in range(n):
        for j in range(n):
            if i != j:
                games[i][j] += prior
                wins[i] += prior / 2
    others = [[(j, games[i][j]) for j in range(n) if j != i] for i in range(n)]
    strength = [1.0] * n
    for _ in range(iterations):
        new = []
        for i in range(n):
            s_i = strength[i]
            denom = sum(g / (s_i + strength[j]) for j, g in others[i])
            new.append(wins[i] / denom if denom > 0 else s_i)
        scale = math.exp(sum(math.log(v) for v in new) / n)
        new = [v / scale for v in new]
        moved = max(abs(new[k] - strength[k]) / strength[k] for k in range(n))
        strength = new
        if moved < tol:
            break
    return {c: math.log(strength[k]) for k, c in enumerate(ids)}

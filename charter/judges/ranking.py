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
    wins = {c: 0.0 for c in ids}
    games: dict[tuple[str, str], float] = defaultdict(float)
    for a, b, p_a in outcomes:
        wins[a] += p_a
        wins[b] += 1.0 - p_a
        games[a, b] += 1.0
        games[b, a] += 1.0
    for i in ids:
        for j in ids:
            if i != j:
                games[i, j] += prior
                wins[i] += prior / 2
    strength = {c: 1.0 for c in ids}
    for _ in range(iterations):
        new = {}
        for i in ids:
            denom = sum(games[i, j] / (strength[i] + strength[j]) for j in ids if j != i)
            new[i] = wins[i] / denom if denom > 0 else strength[i]
        scale = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        new = {c: v / scale for c, v in new.items()}
        moved = max(abs(new[c] - strength[c]) / strength[c] for c in ids)
        strength = new
        if moved < tol:
            break
    return {c: math.log(v) for c, v in strength.items()}

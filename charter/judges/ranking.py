"""Rank K candidates from their pairwise soft labels.

Two scores per candidate: the soft win rate (mean P(win) over its comparisons) and a
Bradley-Terry strength fitted to the soft outcomes. With all pairs judged the two mostly agree;
Bradley-Terry stays meaningful when only some pairs were judged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


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
    wins, games = _tallies(ids, outcomes, prior)
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


def _tallies(
    ids: Sequence[str], outcomes: Sequence[tuple[str, str, float]], prior: float
) -> tuple[list[float], list[list[float]]]:
    """Soft wins per candidate and games per pair, the prior's pseudo-games included."""
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
    return wins, games


def bradley_terry_many(
    problems: Sequence[tuple[Sequence[str], Sequence[tuple[str, str, float]]]],
    *,
    prior: float = 0.1,
    iterations: int = 200,
    tol: float = 1e-9,
) -> list[dict[str, float]]:
    """:func:`bradley_terry` of many prompts' ``(candidates, outcomes)`` at once, to the bit.

    The ranking of a window of prompts was a fifth of the judge stage's time on a fast engine:
    ~30 MM steps per prompt, each a few dozen Python float operations. Here the prompts with the
    same number of candidates step together as numpy arrays, each stopping at its own step.
    Every operation is the one :func:`bradley_terry` does, in its order: sums are added up term
    by term (a candidate's zero term against itself adds exactly nothing), and the logarithms
    and exponentials stay ``math``'s, since numpy's may differ in the last bit.
    """
    out: list[dict[str, float]] = [{} for _ in problems]
    by_size: dict[int, list[int]] = {}
    for index, (ids, _) in enumerate(problems):
        if ids:
            by_size.setdefault(len(ids), []).append(index)
    for n, members in by_size.items():
        wins, games = _tallies_many([problems[index] for index in members], n, prior)
        strength = _fit(wins, games, iterations, tol)
        for row, index in enumerate(members):
            ids = problems[index][0]
            out[index] = {c: math.log(v) for c, v in zip(ids, strength[row].tolist(), strict=True)}
    return out


def _tallies_many(
    problems: Sequence[tuple[Sequence[str], Sequence[tuple[str, str, float]]]],
    n: int,
    prior: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_tallies` of prompts of ``n`` candidates each, as ``[prompt, i]`` and
    ``[prompt, i, j]`` arrays, with every addition the per-prompt loop makes in its order:
    ``np.add.at`` adds to a repeated position one value at a time, in the order given (the
    per-prompt loop and two array copies per prompt were two thirds of a window's ranking)."""
    first: list[int] = []
    second: list[int] = []
    p: list[float] = []
    for row, (ids, outcomes) in enumerate(problems):
        at = {c: row * n + k for k, c in enumerate(ids)}
        for a, b, p_a in outcomes:
            first.append(at[a])
            second.append(at[b])
            p.append(p_a)
    a = np.array(first, dtype=np.intp)
    b = np.array(second, dtype=np.intp)
    p_a = np.array(p, dtype=float)
    wins = np.zeros(len(problems) * n)
    # per outcome, a's share then b's, as the loop adds them
    np.add.at(wins, np.stack([a, b], axis=1).ravel(), np.stack([p_a, 1.0 - p_a], axis=1).ravel())
    games = np.zeros((len(problems) * n, n))  # [prompt * n + i, j]; whole counts, so any order
    np.add.at(games, (a, b % n), 1.0)
    np.add.at(games, (b, a % n), 1.0)
    games = games.reshape(len(problems), n, n)
    games[:, ~np.eye(n, dtype=bool)] += prior
    half = prior / 2
    for _ in range(n - 1):  # the loop adds a half win per other candidate, one at a time
        wins += half
    return wins.reshape(len(problems), n), games


def _fit(wins: np.ndarray, games: np.ndarray, iterations: int, tol: float) -> np.ndarray:
    """The MM steps of :func:`bradley_terry` for rows of prompts of ``n`` candidates each."""
    rows, n = wins.shape
    strength = np.ones((rows, n))
    active = np.arange(rows)
    log, exp = math.log, math.exp
    for _ in range(iterations):
        s, g, w = strength[active], games[active], wins[active]
        terms = g / (s[:, :, None] + s[:, None, :])  # [r, i, j]: g_ij / (s_i + s_j); 0 at i=j
        denom = np.zeros_like(s)
        for j in range(n):
            denom += terms[:, :, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(denom > 0, w / denom, s)
        logs = np.fromiter(map(log, new.ravel().tolist()), float, new.size).reshape(new.shape)
        total = np.zeros(len(active))
        for k in range(n):
            total += logs[:, k]
        scale = np.fromiter(map(exp, (total / n).tolist()), float, len(total))
        new = new / scale[:, None]
        moved = (np.abs(new - s) / s).max(axis=1)
        strength[active] = new
        active = active[~(moved < tol)]
        if not len(active):
            break
    return strength

"""The over-optimisation guard: does a fresh judge still agree with the reward being optimised?

A policy that exploits a learned reward raises that reward while responses get worse. A second,
independent scorer (the fresh judge) sees the same samples; when its ranking of a batch stops
agreeing with the reward's, or the reward climbs while the fresh judge's mean falls, the guard
says so. It only warns: what to do (stop, tighten the KL leash, relabel) is the user's call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); 0.0 when either side is constant."""

    def ranks(xs: Sequence[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else 0.0


def slope(ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against 0, 1, 2, ... (0.0 for fewer than two points)."""
    n = len(ys)
    mx = (n - 1) / 2
    denominator = sum((x - mx) ** 2 for x in range(n))
    my = sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / denominator if n > 1 else 0.0


def divergence_warning(
    step: int,
    corr: float,
    rewards: Sequence[float],
    fresh: Sequence[float],
    *,
    window: int,
    min_rank_corr: float,
) -> str | None:
    """A warning when the trained reward and the fresh judge disagree, else ``None``.

    Args:
        step: the step being checked, for the message.
        corr: Spearman's rho of the reward and the fresh judge on this step's samples.
        rewards: the reward's batch mean of every step so far (this one last).
        fresh: the fresh judge's batch mean of the same steps.
        window: how many recent steps the trend test looks at.
        min_rank_corr: warn when ``corr`` is below this.

    Two signs of reward hacking: on this batch the two rank the samples differently, or over
    the last ``window`` steps the reward climbs while the fresh judge's mean falls.
    """
    problems = []
    if corr < min_rank_corr:
        problems.append(f"rank correlation {corr:.2f} < {min_rank_corr:.2f}")
    if len(rewards) >= window:
        up, down = slope(rewards[-window:]), slope(fresh[-window:])
        if up > 0 > down:
            problems.append(
                f"over the last {window} steps the reward rose ({up:+.3f}/step) "
                f"while the fresh judge fell ({down:+.3f}/step)"
            )
    if not problems:
        return None
    return f"step {step}: reward and fresh judge diverge: " + "; ".join(problems)

"""How much the members of a jury agree: pairwise agreement rate and Fleiss' kappa.

Each member's verdict on a comparison is one of three categories: a wins (p > 0.5), b wins
(p < 0.5) or a tie (exactly 0.5, e.g. an abstention). Raw agreement is inflated when every
member leans the same way (small judges often do); Fleiss' kappa corrects for the agreement the
members' overall category rates would give by chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from charter.records import Judgment


@dataclass(frozen=True)
class JuryAgreement:
    """Agreement figures over the comparisons a jury judged."""

    members: int
    pairwise_agreement: float
    fleiss_kappa: float | None


def _category(p: float) -> int:
    return 0 if p > 0.5 else 1 if p < 0.5 else 2


def member_verdicts(judgments: Sequence[Judgment]) -> list[list[int]]:
    """Per jury judgment, each member's category (in the jury's member order)."""
    return [
        [_category(float(m["p_a"])) for m in j.raw["members"].values()]
        for j in judgments
        if isinstance(j.raw.get("members"), dict) and j.raw["members"]
    ]


def fleiss_kappa(rows: Sequence[Sequence[int]], categories: int = 3) -> float | None:
    """Fleiss' kappa for rows of equal-sized category ratings; None where it is undefined."""
    raters = len(rows[0]) if rows else 0
    if raters < 2 or any(len(r) != raters for r in rows):
        return None
    counts = [[r.count(k) for k in range(categories)] for r in rows]
    per_item = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in counts]
    observed = sum(per_item) / len(rows)
    shares = [sum(row[k] for row in counts) / (len(rows) * raters) for k in range(categories)]
    chance = sum(s * s for s in shares)
    if chance >= 1.0:
        return None  # every rating in one category: agreement is total but carries no signal
    return (observed - chance) / (1.0 - chance)


def jury_agreement(judgments: Sequence[Judgment]) -> JuryAgreement | None:
    """Agreement between jury members, or None if these are not jury judgments."""
    rows = member_verdicts(judgments)
    if not rows or len(rows[0]) < 2:
        return None
    pairs = [(a, b) for row in rows for a, b in combinations(row, 2)]
    return JuryAgreement(
        members=len(rows[0]),
        pairwise_agreement=sum(a == b for a, b in pairs) / len(pairs),
        fleiss_kappa=fleiss_kappa(rows),
    )

"""Which principle judges a comparison: one drawn deterministically, or all of them combined.

The draw depends only on the seed, the prompt and candidate ids, and the principles' ids and
weights, never on principle text: editing one principle's wording keeps every other
comparison's draw (and so its cached result) unchanged.

Under ``principle_per="all"`` every principle judges the comparison, and the per-principle
probabilities that a is better (each already debiased over both orders) are combined into one
label by :func:`aggregate`: by default a weighted mean in log-odds with the principles'
``weight``. The same vectors say how the principles relate (:func:`principle_agreement`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from charter.constitution import Constitution, Principle
from charter.records import Judgment

PrincipleAggregation = Literal["log_odds", "mean"]
AGGREGATIONS: tuple[str, ...] = ("log_odds", "mean")

ALL_PRINCIPLES = "all"
"""``principle_id`` of a judgment combined over every principle (a principle may not use it)."""

FLAT_BELOW = 0.05
"""A principle whose ``|p - 0.5|`` stays below this on every comparison never separates two
responses: under it the judge cannot tell them apart, so it adds nothing but cost."""

_EDGE = 1e-9  # p is clipped to [_EDGE, 1 - _EDGE] before its log-odds: a certain p is finite


def draw_principle(constitution: Constitution, seed: int, *key: str) -> Principle:
    """Pick one principle, weighted by ``weight``, from a hash of ``seed`` and ``key``.

    Args:
        constitution: where the principles come from.
        seed: the run seed.
        *key: what identifies the comparison (prompt id and the two candidate ids, sorted so
            the draw does not depend on which candidate is called a).
    """
    material = "\x1f".join([str(seed), *key]).encode()
    digest = hashlib.sha256(material).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    total = sum(p.weight for p in constitution.principles)
    acc = 0.0
    for principle in constitution.principles:
        acc += principle.weight / total
        if u < acc:
            return principle
    return constitution.principles[-1]


def _logit(p: float) -> float:
    p = min(max(p, _EDGE), 1.0 - _EDGE)
    return math.log(p / (1.0 - p))


def aggregate(
    scores: Mapping[str, float],
    weights: Mapping[str, float],
    how: PrincipleAggregation = "log_odds",
) -> float:
    """P(a better) over principles, from each principle's P(a better).

    - ``log_odds`` (default): ``sigmoid(sum_i w_i logit(p_i) / sum_i w_i)``. A sure principle
      (p near 0 or 1) outweighs an unsure one of the same weight, an indifferent one (p = 0.5,
      log-odds 0) only dilutes the others by its share of the weight, and with the pairwise
      judge's log-odds combination of the two orders the result is the same whether the orders
      or the principles are combined first.
    - ``mean``: ``sum_i w_i p_i / sum_i w_i``, a weighted vote that squashes sure principles.

    Both are symmetric (exchanging a and b gives ``1 - p``), so the label does not depend on
    which candidate is called a; a ``min`` over principles would not be, and is not offered.
    Log-odds are taken of p clipped to [1e-9, 1 - 1e-9].
    """
    total = sum(weights[pid] for pid in scores)
    if not scores or total <= 0:
        return 0.5
    if how == "log_odds":
        x = sum(weights[pid] * _logit(p) for pid, p in scores.items()) / total
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    if how == "mean":
        return sum(weights[pid] * p for pid, p in scores.items()) / total
    raise ValueError(f"unknown principle aggregation {how!r}; use one of {AGGREGATIONS}")


def winner(p: float) -> int:
    """+1 if a is better, -1 if b is, 0 for an exact tie."""
    return (p > 0.5) - (p < 0.5)


def aggregated_judgment(
    per_principle: Sequence[Judgment],
    weights: Mapping[str, float],
    how: PrincipleAggregation = "log_odds",
) -> Judgment:
    """One judgment of a vs b from its judgments under every principle.

    ``p_a`` is :func:`aggregate` of the principles' ``p_a``; ``p_first_order`` and
    ``p_swapped`` aggregate each order the same way, and ``swap_consistent`` says whether those
    two aggregated orders pick the same winner. ``raw`` keeps everything needed to redo or
    audit it: ``principle_scores`` (id -> p_a), the weights and aggregation used, and each
    principle's own figures and raw output under ``per_principle``. Raw keys equal under every
    principle (the template's hash) are kept at the top too, and a cascade's ``needs_human``
    is set when any principle's last tier was unsure, since the run summary and the review
    queue look for both there.
    """
    first = per_principle[0]
    used = {j.principle_id: weights[j.principle_id] for j in per_principle}
    scores = {j.principle_id: j.p_a for j in per_principle}
    p_first = aggregate({j.principle_id: j.p_first_order for j in per_principle}, used, how)
    p_swapped = aggregate({j.principle_id: j.p_swapped for j in per_principle}, used, how)
    raw: dict[str, Any] = {
        key: value
        for key, value in first.raw.items()
        if all(key in j.raw and j.raw[key] == value for j in per_principle)
    }
    cascades = [j.raw.get("cascade") for j in per_principle]
    if all(isinstance(c, dict) for c in cascades):
        raw["cascade"] = {"needs_human": any(c["needs_human"] for c in cascades)}
    raw |= {
        "principle_aggregation": how,
        "principle_weights": used,
        "principle_scores": scores,
        "per_principle": {
            j.principle_id: {
                "p_first_order": j.p_first_order,
                "p_swapped": j.p_swapped,
                "p_a": j.p_a,
                "swap_consistent": j.swap_consistent,
                "raw": j.raw,
            }
            for j in per_principle
        },
    }
    return Judgment(
        prompt_id=first.prompt_id,
        candidate_a=first.candidate_a,
        candidate_b=first.candidate_b,
        principle_id=ALL_PRINCIPLES,
        p_first_order=p_first,
        p_swapped=p_swapped,
        p_a=aggregate(scores, used, how),
        swap_consistent=winner(p_first) != 0 and winner(p_first) == winner(p_swapped),
        judge_model=first.judge_model,
        judge_method=first.judge_method,
        raw=raw,
    )


def principle_scores(judgment: Judgment) -> dict[str, float] | None:
    """A judgment's P(a better) under each principle, or None for a one-principle judgment."""
    scores = judgment.raw.get("principle_scores") if judgment.raw else None
    return {str(k): float(v) for k, v in scores.items()} if isinstance(scores, dict) else None


@dataclass(frozen=True)
class PrincipleAgreement:
    """How the principles of a ``principle_per=all`` run relate, over its comparisons.

    Attributes:
        principles: principle ids, in the order of the first vector.
        comparisons: how many comparisons the figures are over.
        agreement: ``agreement[i][j]``, the share of comparisons where principles i and j pick
            the same winner (a tie counts as a pick of its own).
        decisiveness: per principle, the share of comparisons whose aggregated winner flips
            when that principle alone is left out of the aggregation (None with one principle,
            which leaves nothing to aggregate).
        separation: per principle, the largest ``|p - 0.5|`` over the comparisons.
        flat: the principles whose separation stays below :data:`FLAT_BELOW`.
    """

    principles: list[str]
    comparisons: int
    agreement: dict[str, dict[str, float]]
    decisiveness: dict[str, float | None]
    separation: dict[str, float]
    flat: list[str]


def principle_agreement(
    vectors: Sequence[Mapping[str, float]],
    weights: Mapping[str, float],
    how: PrincipleAggregation = "log_odds",
) -> PrincipleAgreement:
    """Agreement matrix, decisiveness and flat principles of score vectors (one per comparison,
    each principle id -> P(a better)); every vector must hold the same principles."""
    ids = list(vectors[0]) if vectors else []
    n = len(vectors)
    picks = [{pid: winner(v[pid]) for pid in ids} for v in vectors]
    agreement = {i: {j: sum(p[i] == p[j] for p in picks) / n for j in ids} for i in ids}
    flips = dict.fromkeys(ids, 0)
    for v in vectors:
        label = winner(aggregate(v, weights, how))
        for pid in ids:
            rest = {k: p for k, p in v.items() if k != pid}
            flips[pid] += winner(aggregate(rest, weights, how)) != label
    separation = {pid: max(abs(v[pid] - 0.5) for v in vectors) for pid in ids}
    return PrincipleAgreement(
        principles=ids,
        comparisons=n,
        agreement=agreement,
        decisiveness={pid: flips[pid] / n if len(ids) > 1 else None for pid in ids},
        separation=separation,
        flat=[pid for pid in ids if separation[pid] < FLAT_BELOW],
    )


def agreement_of(judgments: Sequence[Judgment]) -> PrincipleAgreement | None:
    """:func:`principle_agreement` of a run's judgments, with the weights and aggregation they
    were combined with (from their ``raw``); None when no judgment holds a score vector."""
    scored = [j for j in judgments if principle_scores(j) is not None]
    if not scored:
        return None
    weights = {str(k): float(v) for k, v in scored[0].raw["principle_weights"].items()}
    how = scored[0].raw.get("principle_aggregation", "log_odds")
    vectors = [principle_scores(j) or {} for j in scored]
    return principle_agreement(vectors, weights, how)

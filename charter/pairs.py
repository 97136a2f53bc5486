"""The pairs stage: turn judgments and rankings into published preference pairs.

Strategies:
- ``best_vs_worst``: per prompt, the top-ranked candidate against the bottom-ranked one, labelled
  by their own direct comparison (one pair per prompt, the largest expected gap).
- ``all_pairs_above_margin``: every judged comparison whose margin reaches ``min_margin``.

``margin`` is ``2 * p_chosen - 1``: 0 for a coin flip, 1 for certainty. Pairs are dropped, each
with a counted reason, when the margin is below ``min_margin``, when the two orders disagreed and
``drop_swap_inconsistent`` is set, or (best_vs_worst) when the direct comparison contradicts the
ranking.

A pair from a judgment made under every principle (``principle_per=all``) lists every principle
id and carries ``principle_scores``: P(chosen better) under each principle alone, oriented like
``p_chosen``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from charter.judges.principles import principle_scores
from charter.judges.stage import Ranking
from charter.records import CandidateSet, Judgment, PreferencePair, Reject

PairStrategy = Literal["best_vs_worst", "all_pairs_above_margin"]


@dataclass(frozen=True)
class PairSettings:
    """How pairs are chosen and filtered (maps one-to-one onto ``conf/pairs/*.yaml``)."""

    strategy: PairStrategy = "best_vs_worst"
    min_margin: float = 0.0
    drop_swap_inconsistent: bool = False


@dataclass
class PairsResult:
    pairs: list[PreferencePair]
    dropped: Counter[str] = field(default_factory=Counter)
    rejects: list[Reject] = field(default_factory=list)


def _orient(j: Judgment, winner: str) -> float:
    """P(winner is better) from a judgment of a vs b."""
    return j.p_a if winner == j.candidate_a else 1.0 - j.p_a


def make_pairs(
    sets: Sequence[CandidateSet],
    judgments: Sequence[Judgment],
    rankings: Sequence[Ranking],
    settings: PairSettings,
    *,
    constitution_sha256: str,
) -> PairsResult:
    """Select, orient and filter pairs; every dropped candidate pair is counted and kept."""
    sets_by_id = {cs.prompt_id: cs for cs in sets}
    texts = {c.candidate_id: c.text for cs in sets for c in cs.candidates}
    by_key = {frozenset((j.candidate_a, j.candidate_b)): j for j in judgments}
    result = PairsResult(pairs=[])

    def drop(reason: str, j: Judgment) -> None:
        result.dropped[reason] += 1
        result.rejects.append(
            Reject(
                stage="pairs",
                source=f"{j.candidate_a} vs {j.candidate_b}",
                reason=reason,
                row={"p_a": j.p_a, "swap_consistent": j.swap_consistent},
            )
        )

    def emit(j: Judgment, chosen: str, rejected: str) -> None:
        p = _orient(j, chosen)
        margin = 2 * p - 1
        if margin < 0:
            drop("direct comparison contradicts the ranking", j)
            return
        if margin < settings.min_margin:
            drop(f"margin below {settings.min_margin}", j)
            return
        if settings.drop_swap_inconsistent and not j.swap_consistent:
            drop("swap-inconsistent", j)
            return
        cs = sets_by_id[j.prompt_id]
        pair = PreferencePair(
            prompt=cs.messages,
            chosen=[{"role": "assistant", "content": texts[chosen]}],
            rejected=[{"role": "assistant", "content": texts[rejected]}],
            prompt_id=j.prompt_id,
            chosen_id=chosen,
            rejected_id=rejected,
            p_chosen=p,
            margin=margin,
            principle_ids=[j.principle_id],
            swap_consistent=j.swap_consistent,
            judge_model=j.judge_model,
            generator_model=cs.generator_model,
            constitution_sha256=constitution_sha256,
        )
        scores = principle_scores(j)
        if scores is not None:
            oriented = {pid: s if chosen == j.candidate_a else 1.0 - s for pid, s in scores.items()}
            pair = replace(pair, principle_ids=list(scores), principle_scores=oriented)
        result.pairs.append(pair)

    if settings.strategy == "best_vs_worst":
        for r in rankings:
            j = by_key.get(frozenset((r.order[0], r.order[-1]))) if len(r.order) > 1 else None
            if j is None:
                result.dropped["no judged comparison between best and worst"] += 1
                result.rejects.append(
                    Reject(stage="pairs", source=r.prompt_id, reason="no judged best-vs-worst pair")
                )
                continue
            emit(j, r.order[0], r.order[-1])
    elif settings.strategy == "all_pairs_above_margin":
        for j in judgments:
            winner, loser = (
                (j.candidate_a, j.candidate_b) if j.p_a >= 0.5 else (j.candidate_b, j.candidate_a)
            )
            emit(j, winner, loser)
    else:
        raise ValueError(f"unknown pair strategy {settings.strategy!r}")
    return result

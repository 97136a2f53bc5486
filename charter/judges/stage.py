"""The judge stage: all pairs of each prompt's candidates, judged, then ranked.

Reads CandidateSet rows, writes Judgment rows and one ranking per prompt. Candidates whose text
is identical to another's are not compared (a pair of equal responses teaches nothing); the
skipped comparison is kept as a reject with its reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charter.constitution import Constitution
from charter.judges.principles import draw_principle
from charter.judges.protocol import Comparison, Judge
from charter.judges.ranking import bradley_terry, win_rates
from charter.records import CandidateSet, Judgment, Reject


@dataclass(frozen=True)
class Ranking:
    """One row of rankings.jsonl: every candidate of a prompt with its scores, best first."""

    prompt_id: str
    order: list[str]
    win_rate: dict[str, float]
    bradley_terry: dict[str, float]


def build_comparisons(
    sets: Sequence[CandidateSet], constitution: Constitution, seed: int
) -> tuple[list[Comparison], list[Reject]]:
    """All pairs (i < j) of each prompt's candidates, each with its drawn principle."""
    comparisons: list[Comparison] = []
    rejects: list[Reject] = []
    for cs in sets:
        for a, b in itertools.combinations(cs.candidates, 2):
            if a.text.strip() == b.text.strip():
                rejects.append(
                    Reject(
                        stage="judge",
                        source=f"{a.candidate_id} vs {b.candidate_id}",
                        reason="identical responses; not compared",
                    )
                )
                continue
            principle = draw_principle(
                constitution, seed, cs.prompt_id, *sorted((a.candidate_id, b.candidate_id))
            )
            comparisons.append(
                Comparison(
                    prompt_id=cs.prompt_id,
                    messages=cs.messages,
                    candidate_a=a.candidate_id,
                    response_a=a.text,
                    candidate_b=b.candidate_id,
                    response_b=b.text,
                    principle=principle,
                )
            )
    return comparisons, rejects


def rank(sets: Sequence[CandidateSet], judgments: Sequence[Judgment]) -> list[Ranking]:
    """Rank each prompt's candidates by Bradley-Terry strength (win rate breaks ties)."""
    by_prompt: dict[str, list[tuple[str, str, float]]] = {}
    for j in judgments:
        by_prompt.setdefault(j.prompt_id, []).append((j.candidate_a, j.candidate_b, j.p_a))
    rankings = []
    for cs in sets:
        ids = [c.candidate_id for c in cs.candidates]
        outcomes = by_prompt.get(cs.prompt_id, [])
        wr = win_rates(ids, outcomes)
        bt = bradley_terry(ids, outcomes)
        order = sorted(ids, key=lambda c: (-bt[c], -wr[c], c))
        rankings.append(Ranking(prompt_id=cs.prompt_id, order=order, win_rate=wr, bradley_terry=bt))
    return rankings


def judge_candidates(
    sets: Sequence[CandidateSet],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int,
    chunk_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Judgment], list[Ranking], list[Reject]]:
    """Judge all pairs of candidates per prompt and rank them.

    Args:
        sets: the generate stage's output.
        judge: any judge; it scores both orders itself.
        constitution: where principles are drawn from.
        seed: drives the principle draw.
        chunk_size: comparisons per judge call (progress granularity; the engine batches
            within a call as it sees fit).
        on_progress: called with the number of comparisons just finished.

    Returns:
        judgments in a stable order (prompt order, then pair order), rankings per prompt, and
        rejects for comparisons that were skipped.
    """
    comparisons, rejects = build_comparisons(sets, constitution, seed)
    judgments: list[Judgment] = []
    for start in range(0, len(comparisons), chunk_size):
        chunk = comparisons[start : start + chunk_size]
        judgments.extend(judge.judge(chunk))
        if on_progress:
            on_progress(len(chunk))
    return judgments, rank(sets, judgments), rejects

"""Measure a judge against human-labelled pairs (``charter eval-judge``).

Each human pair is judged in both orders like any comparison, with the human-chosen response as
candidate a, so ``p_a`` is the judge's probability that the human choice is better. Beside
agreement we report the biases that inflate or hide it: how often the judge picks the first
position, how often it picks the longer response, and what "pick the longer one" alone scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charter.constitution import Constitution
from charter.human_prefs import HumanPair
from charter.judges.principles import draw_principle
from charter.judges.protocol import Comparison, Judge
from charter.records import Judgment


@dataclass(frozen=True)
class JudgeReport:
    """The figures ``charter eval-judge`` prints, as one JSON object."""

    n: int
    agreement: float
    agreement_soft: float
    swap_consistency: float
    first_position_rate: float
    prefers_longer_rate: float
    length_baseline_agreement: float
    seconds: float


def _hard(p: float) -> float:
    """1 for a win, 0.5 for an exact tie, 0 for a loss."""
    return 1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0


def comparisons_for(
    pairs: Sequence[HumanPair], constitution: Constitution, *, seed: int, principle: str | None
) -> list[Comparison]:
    """One comparison per human pair: a = the human-chosen response."""
    fixed = constitution.principle(principle) if principle else None
    return [
        Comparison(
            prompt_id=p.id,
            messages=p.messages,
            candidate_a="chosen",
            response_a=p.chosen,
            candidate_b="rejected",
            response_b=p.rejected,
            principle=fixed or draw_principle(constitution, seed, p.id),
        )
        for p in pairs
    ]


def report(
    pairs: Sequence[HumanPair], judgments: Sequence[Judgment], seconds: float
) -> JudgeReport:
    """Agreement and bias figures for judgments made with a = the human choice."""
    n = len(judgments)
    if n == 0:
        raise ValueError("no judgments to report on")
    agreement = sum(_hard(j.p_a) for j in judgments) / n
    soft = sum(j.p_a for j in judgments) / n
    consistent = sum(j.swap_consistent for j in judgments) / n
    # first order shows the human choice as A; the swapped order shows it as B
    first_picks = sum(j.p_first_order > 0.5 for j in judgments)
    first_picks += sum(j.p_swapped < 0.5 for j in judgments)
    longer, decided, baseline = 0, 0, 0.0
    for pair, j in zip(pairs, judgments, strict=True):
        chosen_longer = len(pair.chosen) > len(pair.rejected)
        if len(pair.chosen) == len(pair.rejected):
            baseline += 0.5
            continue
        baseline += 1.0 if chosen_longer else 0.0
        if j.p_a != 0.5:
            decided += 1
            longer += (j.p_a > 0.5) == chosen_longer
    return JudgeReport(
        n=n,
        agreement=agreement,
        agreement_soft=soft,
        swap_consistency=consistent,
        first_position_rate=first_picks / (2 * n),
        prefers_longer_rate=longer / decided if decided else 0.5,
        length_baseline_agreement=baseline / n,
        seconds=seconds,
    )


def evaluate_judge(
    pairs: Sequence[HumanPair],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int = 0,
    principle: str | None = None,
    chunk_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[JudgeReport, list[Judgment]]:
    """Judge every human pair in both orders and report agreement and biases."""
    comparisons = comparisons_for(pairs, constitution, seed=seed, principle=principle)
    start = time.perf_counter()
    judgments: list[Judgment] = []
    for i in range(0, len(comparisons), chunk_size):
        chunk = comparisons[i : i + chunk_size]
        judgments.extend(judge.judge(chunk))
        if on_progress:
            on_progress(len(chunk))
    return report(pairs, judgments, time.perf_counter() - start), judgments

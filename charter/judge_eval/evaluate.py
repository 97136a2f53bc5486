"""Measure a judge against human-labelled pairs (``charter eval-judge``).

Each human pair is judged in both orders like any comparison, with the human-chosen response as
candidate a, so ``p_a`` is the judge's probability that the human choice is better. Beside
agreement we report the biases that inflate or hide it: how often the judge picks the first
position, how often it picks the longer response, what "pick the longer one" alone scores, and
a length-controlled agreement (the mean of agreement where the human choice is the longer and
where it is the shorter response, so "pick the longer one" scores exactly 0.5). Calibration
(ECE) and the injection flip rate on attacked copies of the first pairs complete the picture;
judges that can abstain report how often they did, and a jury how often its members agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charter.constitution import Constitution
from charter.human_prefs import HumanPair
from charter.judge_eval.agreement import jury_agreement
from charter.judge_eval.injection import adversarial_pairs, flip_rate
from charter.judge_eval.reliability import expected_calibration_error
from charter.judges.principles import draw_principle
from charter.judges.protocol import Comparison, Judge
from charter.judges.stage import judge_in_chunks
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
    length_controlled_agreement: float
    ece: float
    injection_flip_rate: float | None
    seconds: float
    seconds_per_comparison: float
    tokens_per_comparison: float | None = None
    abstention_rate: float | None = None
    jury_agreement: float | None = None
    jury_kappa: float | None = None


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


def _length_controlled(pairs: Sequence[HumanPair], judgments: Sequence[Judgment]) -> float:
    strata: dict[bool, list[float]] = {True: [], False: []}
    for pair, j in zip(pairs, judgments, strict=True):
        if len(pair.chosen) != len(pair.rejected):
            strata[len(pair.chosen) > len(pair.rejected)].append(_hard(j.p_a))
    means = [sum(v) / len(v) for v in strata.values() if v]
    return sum(means) / len(means) if means else 0.5


def report(
    pairs: Sequence[HumanPair],
    judgments: Sequence[Judgment],
    seconds: float,
    *,
    injection_flip_rate: float | None = None,
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
    jury = jury_agreement(judgments)
    # judges that can abstain (structured verdicts) say so in raw; others never do
    can_abstain = any("abstained" in j.raw for j in judgments)
    return JudgeReport(
        n=n,
        agreement=agreement,
        agreement_soft=soft,
        swap_consistency=consistent,
        first_position_rate=first_picks / (2 * n),
        prefers_longer_rate=longer / decided if decided else 0.5,
        length_baseline_agreement=baseline / n,
        length_controlled_agreement=_length_controlled(pairs, judgments),
        ece=expected_calibration_error([j.p_a for j in judgments]),
        injection_flip_rate=injection_flip_rate,
        seconds=seconds,
        seconds_per_comparison=seconds / n,
        abstention_rate=sum(bool(j.raw.get("abstained")) for j in judgments) / n
        if can_abstain
        else None,
        jury_agreement=jury.pairwise_agreement if jury else None,
        jury_kappa=jury.fleiss_kappa if jury else None,
    )


def evaluate_judge(
    pairs: Sequence[HumanPair],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int = 0,
    principle: str | None = None,
    chunk_size: int = 32,
    injection_pairs: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[JudgeReport, list[Judgment], list[Judgment]]:
    """Judge every human pair in both orders and report agreement and biases.

    Args:
        pairs: human-labelled pairs.
        judge: the judge under test.
        constitution: principles (one drawn per pair unless ``principle`` names one).
        seed: drives the principle draw.
        principle: judge every pair under this principle id instead.
        chunk_size: comparisons per judge call.
        injection_pairs: attack the first N pairs with every injection in
            :mod:`charter.judge_eval.injection` and report the flip rate (0: skip).
        on_progress: called with the number of comparisons just finished.

    Returns:
        the report, the clean judgments (one per pair) and the attacked ones.
    """
    comparisons = comparisons_for(pairs, constitution, seed=seed, principle=principle)
    start = time.perf_counter()
    judgments = judge_in_chunks(comparisons, judge, chunk_size, on_progress)
    seconds = time.perf_counter() - start
    attacked: list[Judgment] = []
    rate = None
    if injection_pairs > 0:
        targets = list(pairs[:injection_pairs])
        variants = adversarial_pairs(targets)
        # the attacked copy keeps its clean pair's principle, so only the attack differs
        clean_by_id = {c.prompt_id: c for c in comparisons}
        attacked_comparisons = [
            Comparison(
                prompt_id=v.pair.id,
                messages=v.pair.messages,
                candidate_a="chosen",
                response_a=v.pair.chosen,
                candidate_b="rejected",
                response_b=v.pair.rejected,
                principle=clean_by_id[v.pair.id.split("#")[0]].principle,
            )
            for v in variants
        ]
        attacked = judge_in_chunks(attacked_comparisons, judge, chunk_size, on_progress)
        clean_p = {j.prompt_id: j.p_a for j in judgments}
        rate = flip_rate(
            [clean_p[a.prompt_id.split("#")[0]] for a in attacked], [a.p_a for a in attacked]
        )
    return report(pairs, judgments, seconds, injection_flip_rate=rate), judgments, attacked

"""The judge stage: pairs of each prompt's candidates, judged, then ranked.

``ranking="all_pairs"`` (default) judges every pair; ``ranking="tournament"`` only the pairs a
merge sort asks about (:mod:`charter.judges.tournament`).

Reads CandidateSet rows, writes Judgment rows and one ranking per prompt. Candidates whose text
is identical to another's are not compared (a pair of equal responses teaches nothing), nor is a
comparison whose judge chat would not fit the judge model's context (see
:mod:`charter.judges.context`); each skipped comparison is kept as a reject with its reason, and
the run goes on.

By default one principle is drawn per prompt and all of its pairs are judged under it. The
Bradley-Terry ranking then orders the candidates on one criterion (mixing criteria within a
prompt invites intransitive outcomes), principles still vary across prompts as in Constitutional
AI, and the judge's chats about one prompt share the principle in their common prefix, which the
engine computes once. ``principle_per="comparison"`` draws one per pair, as the paper does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from charter.constitution import Constitution
from charter.errors import InputError
from charter.judges.context import needs_of
from charter.judges.principles import draw_principle
from charter.judges.protocol import Comparison, Judge
from charter.judges.ranking import bradley_terry, win_rates
from charter.judges.tournament import TournamentRounds
from charter.records import Candidate, CandidateSet, Judgment, Reject


@dataclass(frozen=True)
class Ranking:
    """One row of rankings.jsonl: every candidate of a prompt with its scores, best first."""

    prompt_id: str
    order: list[str]
    win_rate: dict[str, float]
    bradley_terry: dict[str, float]


PrincipleDraw = Literal["prompt", "comparison"]
RankingScheme = Literal["all_pairs", "tournament"]


def _check_principle_per(principle_per: str) -> None:
    if principle_per not in ("prompt", "comparison"):
        raise InputError(
            f"principle_per must be 'prompt' or 'comparison', got {principle_per!r}",
            field="principle_per",
        )


def comparison_of(
    cs: CandidateSet,
    a: Candidate,
    b: Candidate,
    constitution: Constitution,
    seed: int,
    principle_per: PrincipleDraw,
) -> Comparison:
    """Candidate ``a`` vs ``b`` of one prompt, under the principle drawn for it."""
    key = (a.candidate_id, b.candidate_id) if principle_per == "comparison" else ()
    principle = draw_principle(constitution, seed, cs.prompt_id, *sorted(key))
    return Comparison(
        prompt_id=cs.prompt_id,
        messages=cs.messages,
        candidate_a=a.candidate_id,
        response_a=a.text,
        candidate_b=b.candidate_id,
        response_b=b.text,
        principle=principle,
    )


def build_comparisons(
    sets: Sequence[CandidateSet],
    constitution: Constitution,
    seed: int,
    *,
    principle_per: PrincipleDraw = "prompt",
) -> tuple[list[Comparison], list[Reject]]:
    """All pairs (i < j) of each prompt's candidates, each with its drawn principle.

    ``principle_per`` says what one draw covers: all pairs of a prompt, or a single pair.
    """
    _check_principle_per(principle_per)
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
            comparisons.append(comparison_of(cs, a, b, constitution, seed, principle_per))
    return comparisons, rejects


def rank(
    sets: Sequence[CandidateSet],
    judgments: Sequence[Judgment],
    orders: dict[str, list[str]] | None = None,
) -> list[Ranking]:
    """Rank each prompt's candidates by Bradley-Terry strength (win rate breaks ties), or in
    the given ``orders`` (a tournament's), with both scores still reported."""
    by_prompt: dict[str, list[tuple[str, str, float]]] = {}
    for j in judgments:
        by_prompt.setdefault(j.prompt_id, []).append((j.candidate_a, j.candidate_b, j.p_a))
    rankings = []
    for cs in sets:
        ids = [c.candidate_id for c in cs.candidates]
        outcomes = by_prompt.get(cs.prompt_id, [])
        wr = win_rates(ids, outcomes)
        bt = bradley_terry(ids, outcomes)
        order = (orders or {}).get(cs.prompt_id) or sorted(ids, key=lambda c: (-bt[c], -wr[c], c))
        rankings.append(Ranking(prompt_id=cs.prompt_id, order=order, win_rate=wr, bradley_terry=bt))
    return rankings


def judge_candidates(
    sets: Sequence[CandidateSet],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int,
    chunk_size: int = 32,
    principle_per: PrincipleDraw = "prompt",
    ranking: RankingScheme = "all_pairs",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Judgment], list[Ranking], list[Reject]]:
    """Judge pairs of candidates per prompt and rank them.

    Args:
        sets: the generate stage's output.
        judge: any judge; it scores both orders itself.
        constitution: where principles are drawn from.
        seed: drives the principle draw.
        principle_per: one principle per prompt (default) or per comparison.
        ranking: ``all_pairs`` judges every pair; ``tournament`` only the ~K log2 K pairs a
            merge sort asks about, plus best vs worst (see :mod:`charter.judges.tournament`).
        chunk_size: comparisons per judge call, at least (progress granularity; the engine
            batches within a call as it sees fit). A prompt's comparisons always go in one call,
            so the engine can share their common prefix.
        on_progress: called with the number of comparisons just finished.

    Returns:
        judgments in a stable order (prompt order, then pair order; for a tournament, round
        order), rankings per prompt, and rejects for comparisons that were skipped.
    """
    if ranking == "tournament":
        return _tournament(sets, judge, constitution, seed, chunk_size, principle_per, on_progress)
    if ranking != "all_pairs":
        raise InputError(
            f"ranking must be 'all_pairs' or 'tournament', got {ranking!r}", field="ranking"
        )
    comparisons, rejects = build_comparisons(sets, constitution, seed, principle_per=principle_per)
    judgments, too_long = judge_what_fits(comparisons, judge, chunk_size, on_progress)
    return judgments, rank(sets, judgments), [*rejects, *too_long]


def fits_judge_context(
    comparisons: Sequence[Comparison], judge: Judge
) -> tuple[list[Comparison], list[Reject]]:
    """Split comparisons into those whose judge chats fit the judge model's context and rejects
    (with the tokens needed); all fit for a judge that cannot tell (e.g. a reward model, which
    truncates)."""
    needs = needs_of(judge)
    if needs is None or not comparisons:
        return list(comparisons), []
    kept, rejects = [], []
    for c, need in zip(comparisons, needs(comparisons), strict=True):
        if need.fits:
            kept.append(c)
            continue
        rejects.append(
            Reject(
                stage="judge",
                source=f"{c.candidate_a} vs {c.candidate_b}",
                field="messages",
                reason=(
                    f"judge chat is {need.tokens} tokens with its answer; it exceeds the judge "
                    f"model's context of {need.limit} tokens"
                ),
                row={"prompt_id": c.prompt_id, "tokens": need.tokens, "context": need.limit},
            )
        )
    return kept, rejects


def judge_what_fits(
    comparisons: Sequence[Comparison],
    judge: Judge,
    chunk_size: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[Judgment], list[Reject]]:
    """:func:`judge_in_chunks`, leaving out (as rejects) the comparisons too long to judge.

    Chunks are cut before the check, so where everything fits the judge gets the very calls it
    would have got without it.
    """
    judgments: list[Judgment] = []
    rejects: list[Reject] = []
    for chunk in _whole_prompt_chunks(comparisons, chunk_size):
        kept, too_long = fits_judge_context(chunk, judge)
        rejects.extend(too_long)
        if kept:
            judgments.extend(judge.judge(kept))
        if on_progress:
            on_progress(len(chunk))
    return judgments, rejects


def judge_in_chunks(
    comparisons: Sequence[Comparison],
    judge: Judge,
    chunk_size: int,
    on_progress: Callable[[int], None] | None,
) -> list[Judgment]:
    """Judge in calls of at least ``chunk_size`` comparisons, never splitting a prompt's."""
    judgments: list[Judgment] = []
    for chunk in _whole_prompt_chunks(comparisons, chunk_size):
        judgments.extend(judge.judge(chunk))
        if on_progress:
            on_progress(len(chunk))
    return judgments


def _tournament(
    sets: Sequence[CandidateSet],
    judge: Judge,
    constitution: Constitution,
    seed: int,
    chunk_size: int,
    principle_per: PrincipleDraw,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[Judgment], list[Ranking], list[Reject]]:
    """Merge-sort rounds across all prompts, then best vs worst where the sort never met them.

    The ranking is the sort's order: with only ~K log K soft labels, a Bradley-Terry fit can
    swap neighbours the sort separated on a direct comparison. Both scores are still reported.
    """
    _check_principle_per(principle_per)
    by_id = {c.candidate_id: c for cs in sets for c in cs.candidates}
    set_of = {cs.prompt_id: cs for cs in sets}

    def comparison(cs: CandidateSet, a: str, b: str) -> Comparison:
        return comparison_of(cs, by_id[a], by_id[b], constitution, seed, principle_per)

    rounds = TournamentRounds(sets, comparison)
    judgments: list[Judgment] = []
    too_long: list[Reject] = []
    asked: set[frozenset[str]] = set()  # judged, or rejected as too long
    while batch := rounds.next_round():
        asked |= {frozenset((c.candidate_a, c.candidate_b)) for c in batch}
        done, skipped = judge_what_fits(batch, judge, chunk_size, on_progress)
        judgments.extend(done)
        too_long.extend(skipped)
        answers = {(c.candidate_a, c.candidate_b): 0.5 for c in batch}  # unjudged: a tie
        rounds.answer(answers | {(j.candidate_a, j.candidate_b): j.p_a for j in done})
    rankings = rank(sets, judgments, rounds.order)
    ends = [
        comparison(set_of[r.prompt_id], r.order[0], r.order[-1])
        for r in rankings
        if len(r.order) > 1
        and frozenset((r.order[0], r.order[-1])) not in asked
        and by_id[r.order[0]].text.strip() != by_id[r.order[-1]].text.strip()
    ]
    if ends:
        done, skipped = judge_what_fits(ends, judge, chunk_size, on_progress)
        judgments.extend(done)
        too_long.extend(skipped)
        rankings = rank(sets, judgments, rounds.order)
    return judgments, rankings, [*rounds.rejects, *too_long]


def _whole_prompt_chunks(
    comparisons: Sequence[Comparison], size: int
) -> Iterator[Sequence[Comparison]]:
    """Consecutive runs of at least ``size`` comparisons (the last may be shorter), cut only
    between prompts."""
    start = 0
    for end in range(1, len(comparisons) + 1):
        at_boundary = end == len(comparisons) or (
            comparisons[end].prompt_id != comparisons[end - 1].prompt_id
        )
        if at_boundary and end - start >= size:
            yield comparisons[start:end]
            start = end
    if start < len(comparisons):
        yield comparisons[start:]

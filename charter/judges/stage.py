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

``principle_per="all"`` judges every pair under every principle (P times the judge's requests)
and writes one judgment per pair, labelled by :func:`~charter.judges.principles.aggregate` of
the per-principle probabilities, with the vector and each principle's own figures in ``raw``
(:func:`~charter.judges.principles.aggregated_judgment`). Rankings, pairs and every reader of
judgments.jsonl therefore see one row per pair, as under the other settings.

Request order under ``all``: the pairwise judge's user turn (``pairwise.jinja2``; also
``structured.jinja2``) opens with the principle's question, then the instructions, the
conversation and the two responses. So chats under two principles share only the system turn,
while chats under one principle about one prompt share all up to the first response. A prompt's
requests go principle by principle (all its pairs under the first, then the second, ...), in
one call: the transformers engine finds shared prefixes anywhere in a call, and an engine that
reuses its cache in arrival order (vLLM, a server) finds each in the request just before.
Computing the responses once for every principle would need the question after the responses
(as ``pointwise.jinja2`` has it): a different judge prompt, not an ordering.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from charter.constitution import Constitution, Principle
from charter.errors import InputError
from charter.judges.context import needs_of
from charter.judges.principles import (
    AGGREGATIONS,
    ALL_PRINCIPLES,
    PrincipleAggregation,
    aggregated_judgment,
    draw_principle,
)
from charter.judges.protocol import Comparison, Judge
from charter.judges.ranking import bradley_terry_many, win_rates
from charter.judges.tournament import knockout_steps, merge_sort_steps
from charter.records import Candidate, CandidateSet, Judgment, Reject


@dataclass(frozen=True)
class Ranking:
    """One row of rankings.jsonl: every candidate of a prompt with its scores, best first."""

    prompt_id: str
    order: list[str]
    win_rate: dict[str, float]
    bradley_terry: dict[str, float]


PrincipleDraw = Literal["prompt", "comparison", "all"]
RankingScheme = Literal["all_pairs", "tournament", "knockout"]


def _check_principle_per(
    principle_per: str, constitution: Constitution, aggregation: str = "log_odds"
) -> None:
    if principle_per not in ("prompt", "comparison", "all"):
        raise InputError(
            f"principle_per must be 'prompt', 'comparison' or 'all', got {principle_per!r}",
            field="principle_per",
        )
    if principle_per == "all" and aggregation not in AGGREGATIONS:
        raise InputError(
            f"principle_aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}",
            field="principle_aggregation",
        )
    if principle_per == "all" and any(p.id == ALL_PRINCIPLES for p in constitution.principles):
        raise InputError(
            f"principle_per=all marks combined judgments with principle_id {ALL_PRINCIPLES!r}, "
            f"which a principle of {constitution.name!r} uses; rename that principle",
            file=constitution.source,
            field="principle_id",
        )


def same_text(a: Candidate, b: Candidate) -> bool:
    """Whether two candidates say the same thing (up to edge whitespace): such a pair is never
    judged, since it teaches nothing. The one rule for the stage, its rounds and the windows a
    run is cut into (:mod:`charter.streaming` counts comparisons with it)."""
    return a.text.strip() == b.text.strip()


def comparison_of(
    cs: CandidateSet,
    a: Candidate,
    b: Candidate,
    constitution: Constitution,
    seed: int,
    principle_per: PrincipleDraw,
    prompts_principle: Principle | None = None,
) -> Comparison:
    """Candidate ``a`` vs ``b`` of one prompt, under the principle drawn for it (under ``all``,
    the first principle: :func:`under_every_principle` makes the comparison's copies).
    ``prompts_principle``: the prompt's draw under ``prompt``, if the caller made it already
    (it is the same for all of a prompt's pairs)."""
    if principle_per == "all":
        principle = constitution.principles[0]
    elif principle_per == "prompt":
        principle = prompts_principle or draw_principle(constitution, seed, cs.prompt_id)
    else:
        key = sorted((a.candidate_id, b.candidate_id))
        principle = draw_principle(constitution, seed, cs.prompt_id, *key)
    return Comparison(
        prompt_id=cs.prompt_id,
        messages=cs.messages,
        candidate_a=a.candidate_id,
        response_a=a.text,
        candidate_b=b.candidate_id,
        response_b=b.text,
        principle=principle,
    )


def under_every_principle(
    comparisons: Sequence[Comparison], constitution: Constitution
) -> list[Comparison]:
    """Each comparison once per principle, prompt by prompt and, within a prompt, principle by
    principle (the order the module docstring explains)."""
    by_prompt: dict[str, list[Comparison]] = {}
    for c in comparisons:
        by_prompt.setdefault(c.prompt_id, []).append(c)
    return [
        replace(c, principle=p)
        for group in by_prompt.values()
        for p in constitution.principles
        for c in group
    ]


def build_comparisons(
    sets: Sequence[CandidateSet],
    constitution: Constitution,
    seed: int,
    *,
    principle_per: PrincipleDraw = "prompt",
) -> tuple[list[Comparison], list[Reject]]:
    """All pairs (i < j) of each prompt's candidates, each with its drawn principle.

    ``principle_per`` says what one draw covers: all pairs of a prompt, or a single pair; under
    ``all`` every pair comes once per principle (:func:`under_every_principle`).
    """
    _check_principle_per(principle_per, constitution)
    comparisons: list[Comparison] = []
    rejects: list[Reject] = []
    for cs in sets:
        drawn = (
            draw_principle(constitution, seed, cs.prompt_id) if principle_per == "prompt" else None
        )
        for a, b in itertools.combinations(cs.candidates, 2):
            if same_text(a, b):
                rejects.append(
                    Reject(
                        stage="judge",
                        source=f"{a.candidate_id} vs {b.candidate_id}",
                        reason="identical responses; not compared",
                    )
                )
                continue
            comparisons.append(comparison_of(cs, a, b, constitution, seed, principle_per, drawn))
    if principle_per == "all":
        comparisons = under_every_principle(comparisons, constitution)
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
    problems = [
        ([c.candidate_id for c in cs.candidates], by_prompt.get(cs.prompt_id, [])) for cs in sets
    ]
    rankings = []
    for cs, (ids, outcomes), bt in zip(sets, problems, bradley_terry_many(problems), strict=True):
        wr = win_rates(ids, outcomes)
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
    principle_aggregation: PrincipleAggregation = "log_odds",
    ranking: RankingScheme = "all_pairs",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Judgment], list[Ranking], list[Reject]]:
    """Judge pairs of candidates per prompt and rank them.

    Args:
        sets: the generate stage's output.
        judge: any judge; it scores both orders itself.
        constitution: where principles are drawn from.
        seed: drives the principle draw.
        principle_per: one principle per prompt (default), per comparison, or ``all``: every
            principle, combined into one judgment per pair.
        principle_aggregation: how ``all`` combines the principles (see
            :func:`~charter.judges.principles.aggregate`); unused otherwise.
        ranking: ``all_pairs`` judges every pair; ``tournament`` only the ~K log2 K pairs a
            merge sort asks about, plus best vs worst; ``knockout`` only the ~3K/2 that find
            the best and the worst (see :mod:`charter.judges.tournament`).
        chunk_size: comparisons per judge call, at least (progress granularity; the engine
            batches within a call as it sees fit). A prompt's comparisons always go in one call,
            so the engine can share their common prefix; under ``all`` a comparison counts once
            per principle here.
        on_progress: called with the number of comparisons (pairs) just finished.

    Returns:
        judgments in a stable order (prompt order, then pair order; for a tournament, round
        order within each prompt), rankings per prompt, and rejects for comparisons that were
        skipped (:func:`judge_parts` keeps the two kinds apart).
    """
    judgments, rankings, identical, too_long = judge_parts(
        sets,
        judge,
        constitution,
        seed=seed,
        chunk_size=chunk_size,
        principle_per=principle_per,
        principle_aggregation=principle_aggregation,
        ranking=ranking,
        on_progress=on_progress,
    )
    return judgments, rankings, [*identical, *too_long]


def judge_parts(
    sets: Sequence[CandidateSet],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int,
    chunk_size: int = 32,
    principle_per: PrincipleDraw = "prompt",
    principle_aggregation: PrincipleAggregation = "log_odds",
    ranking: RankingScheme = "all_pairs",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Judgment], list[Ranking], list[Reject], list[Reject]]:
    """:func:`judge_candidates` with its rejects in two lists, the pairs not compared (identical
    responses) and the comparisons too long for the judge, so a stage that judges a run window
    by window can write them in the order one call over the whole run gives."""
    _check_principle_per(principle_per, constitution, principle_aggregation)
    if ranking in ("tournament", "knockout"):
        from charter.judges.search_rounds import judge_in_rounds  # it builds on this module

        return judge_in_rounds(
            sets,
            judge,
            constitution,
            seed,
            chunk_size,
            principle_per,
            principle_aggregation,
            on_progress,
            knockout_steps if ranking == "knockout" else merge_sort_steps,
        )
    if ranking != "all_pairs":
        raise InputError(
            f"ranking must be 'all_pairs', 'tournament' or 'knockout', got {ranking!r}",
            field="ranking",
        )
    comparisons, rejects = build_comparisons(sets, constitution, seed, principle_per=principle_per)
    if principle_per == "all":
        judgments, too_long = judge_under_every_principle(
            comparisons, judge, constitution, principle_aggregation, chunk_size, on_progress
        )
    else:
        judgments, too_long = judge_what_fits(comparisons, judge, chunk_size, on_progress)
    return judgments, rank(sets, judgments), rejects, too_long


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


def judge_under_every_principle(
    comparisons: Sequence[Comparison],
    judge: Judge,
    constitution: Constitution,
    aggregation: PrincipleAggregation,
    chunk_size: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[Judgment], list[Reject]]:
    """Judge the copies :func:`under_every_principle` made and combine each pair's into one
    judgment (:func:`~charter.judges.principles.aggregated_judgment`), in pair order.

    A pair is judged under every principle or not at all: if its chat under any principle is
    too long for the judge, none of its copies is sent, and one reject says under how many
    principles it did not fit (a partial vector would be a different aggregation).
    """
    count = len(constitution.principles)
    weights = {p.id: p.weight for p in constitution.principles}
    judged: dict[tuple[str, str], list[Judgment]] = {}
    rejects: list[Reject] = []
    for chunk in _whole_prompt_chunks(comparisons, chunk_size):
        kept, too_long = fits_judge_context(chunk, judge)
        first_reject: dict[str, Reject] = {}
        for r in too_long:
            first_reject.setdefault(r.source, r)
        for source, r in first_reject.items():
            n = sum(t.source == source for t in too_long)
            rejects.append(replace(r, reason=f"{r.reason} (under {n} of {count} principles)"))
        kept = [c for c in kept if f"{c.candidate_a} vs {c.candidate_b}" not in first_reject]
        for j in judge.judge(kept) if kept else []:
            judged.setdefault((j.candidate_a, j.candidate_b), []).append(j)
        if on_progress:
            on_progress(len(chunk) // count)
    return [aggregated_judgment(js, weights, aggregation) for js in judged.values()], rejects


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

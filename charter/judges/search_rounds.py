"""The judge stage under ``ranking=tournament`` or ``knockout``: lockstep rounds across prompts.

Each round gathers the next comparison every prompt's search (:mod:`charter.judges.tournament`)
asks for, so a round is one batched judge call however many prompts there are; then best and
worst are compared directly where the search never met them. Kept apart from
:mod:`charter.judges.stage`, whose helpers it uses, because it is the part of the stage that
feeds answers back into what is asked next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from charter.constitution import Constitution
from charter.judges.principles import PrincipleAggregation
from charter.judges.protocol import Comparison, Judge
from charter.judges.stage import (
    PrincipleDraw,
    Ranking,
    _check_principle_per,
    comparison_of,
    judge_under_every_principle,
    judge_what_fits,
    rank,
    same_text,
    under_every_principle,
)
from charter.judges.tournament import SortSteps, TournamentRounds, merge_sort_steps
from charter.records import CandidateSet, Judgment, Reject


def judge_in_rounds(
    sets: Sequence[CandidateSet],
    judge: Judge,
    constitution: Constitution,
    seed: int,
    chunk_size: int,
    principle_per: PrincipleDraw,
    aggregation: PrincipleAggregation,
    on_progress: Callable[[int], None] | None,
    steps: Callable[[Sequence[str]], SortSteps] = merge_sort_steps,
) -> tuple[list[Judgment], list[Ranking], list[Reject], list[Reject]]:
    """Merge-sort (or knockout) rounds across all prompts, then best vs worst where the search
    never met them.

    The ranking is the sort's order: with only ~K log K soft labels, a Bradley-Terry fit can
    swap neighbours the sort separated on a direct comparison. Both scores are still reported.
    Under ``principle_per=all`` each round's pairs are judged under every principle and the
    sort reads their combined judgments.
    """
    _check_principle_per(principle_per, constitution)
    by_id = {c.candidate_id: c for cs in sets for c in cs.candidates}
    set_of = {cs.prompt_id: cs for cs in sets}

    def comparison(cs: CandidateSet, a: str, b: str) -> Comparison:
        return comparison_of(cs, by_id[a], by_id[b], constitution, seed, principle_per)

    def judge_batch(batch: Sequence[Comparison]) -> tuple[list[Judgment], list[Reject]]:
        if principle_per != "all":
            return judge_what_fits(batch, judge, chunk_size, on_progress)
        copies = under_every_principle(batch, constitution)
        return judge_under_every_principle(
            copies, judge, constitution, aggregation, chunk_size, on_progress
        )

    rounds = TournamentRounds(sets, comparison, steps)
    judgments: list[Judgment] = []
    too_long: list[Reject] = []
    asked: set[frozenset[str]] = set()  # judged, or rejected as too long
    while batch := rounds.next_round():
        asked |= {frozenset((c.candidate_a, c.candidate_b)) for c in batch}
        done, skipped = judge_batch(batch)
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
        and not same_text(by_id[r.order[0]], by_id[r.order[-1]])
    ]
    if ends:
        done, skipped = judge_batch(ends)
        judgments.extend(done)
        too_long.extend(skipped)
        rankings = rank(sets, judgments, rounds.order)
    # prompt order (round order within a prompt), as under all_pairs: a reader can then take
    # the judgments of a run prompt by prompt, in step with its candidates and rankings
    position = {cs.prompt_id: i for i, cs in enumerate(sets)}
    judgments.sort(key=lambda j: position[j.prompt_id])
    return judgments, rankings, rounds.rejects, too_long

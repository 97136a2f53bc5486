"""Tournament ranking: a merge sort over the judge, fewer comparisons than all pairs."""

from __future__ import annotations

import itertools
import random

import pytest

from charter.judges.stage import judge_candidates
from charter.judges.tournament import max_comparisons, merge_sort_steps
from charter.pairs import PairSettings, make_pairs
from tests.fixtures import candidate_set, constitution
from tests.test_pairs_and_judge_stage import LengthJudge


def _sort_with_oracle(ids: list[str], better) -> tuple[list[str], int]:
    steps = merge_sort_steps(ids)
    asked = 0
    try:
        pairs = next(steps)
        while True:
            asked += len(pairs)
            pairs = steps.send([1.0 if better(a, b) else 0.0 for a, b in pairs])
    except StopIteration as done:
        return done.value, asked


@pytest.mark.parametrize("k", range(1, 9))
def test_merge_sort_orders_every_permutation_within_its_bound(k: int) -> None:
    truth = [f"c{i}" for i in range(k)]
    for perm in itertools.permutations(truth):
        order, asked = _sort_with_oracle(list(perm), lambda a, b: a < b)
        assert order == truth
        assert asked <= max_comparisons(k)


def test_bound_is_below_all_pairs_from_four_candidates() -> None:
    assert [max_comparisons(k) for k in (2, 3, 4, 8, 16)] == [1, 3, 5, 17, 49]
    assert all(max_comparisons(k) < k * (k - 1) // 2 for k in range(4, 40))


def test_tournament_ranks_like_all_pairs_with_a_consistent_judge() -> None:
    rng = random.Random(0)
    sets = [
        candidate_set(f"p{i}", *("x" * n for n in rng.sample(range(1, 60), 8))) for i in range(5)
    ]
    judge = LengthJudge(bias=1.5)  # position bias cancels in both orders
    full, full_rank, _ = judge_candidates(sets, judge, constitution("x"), seed=0)
    fewer, tour_rank, rejects = judge_candidates(
        sets, judge, constitution("x"), seed=0, ranking="tournament"
    )
    assert [r.order for r in tour_rank] == [r.order for r in full_rank]
    assert len(full) == 5 * 28
    assert len(fewer) <= 5 * (17 + 1)
    assert rejects == []
    # every judgment is still both orders, and best vs worst has its own label
    assert all(j.p_first_order != j.p_swapped for j in fewer)
    pairs = make_pairs(sets, fewer, tour_rank, PairSettings(), constitution_sha256="0" * 64)
    assert len(pairs.pairs) == 5
    assert all(len(p.chosen[0]["content"]) > len(p.rejected[0]["content"]) for p in pairs.pairs)


def test_identical_candidates_are_never_sent_to_the_judge() -> None:
    sets = [candidate_set("p1", "aaa", "aaa", "b", "cccc")]
    judgments, rankings, rejects = judge_candidates(
        sets, LengthJudge(), constitution("x"), seed=0, ranking="tournament"
    )
    texts = {"p1/0": "aaa", "p1/1": "aaa", "p1/2": "b", "p1/3": "cccc"}
    assert all(texts[j.candidate_a] != texts[j.candidate_b] for j in judgments)
    assert [r.reason for r in rejects] == ["identical responses; not compared"]
    assert rankings[0].order[0] == "p1/3" and rankings[0].order[-1] == "p1/2"


def test_unknown_ranking_is_a_user_error() -> None:
    from charter.errors import InputError

    with pytest.raises(InputError, match="ranking"):
        judge_candidates([], LengthJudge(), constitution("x"), seed=0, ranking="swiss")  # type: ignore[arg-type]


def test_charter_run_with_a_tournament_reports_its_saving(tmp_path) -> None:
    import json

    from charter.commands.run import run_all
    from tests.test_resume import config

    run_all(config("ranking=tournament", "prompts.limit=4", "generator.num_samples=8"), tmp_path)
    judge = json.loads((tmp_path / "summary.json").read_text())["judge"]
    assert judge["ranking"] == "tournament"
    assert judge["all_pairs_comparisons"] == 4 * 28
    assert judge["comparisons"] <= 4 * (17 + 1)
    pairs = json.loads((tmp_path / "summary.json").read_text())["pairs"]
    # best vs worst of each prompt always has its own label; the random fake judge may
    # contradict its own sort there, which is a counted drop, never a missing comparison
    assert set(pairs["dropped"]) <= {"direct comparison contradicts the ranking"}
    assert pairs["pairs"] + sum(pairs["dropped"].values()) == 4


@pytest.mark.slow
def test_tournament_through_the_real_model_judges_fewer_pairs_in_both_orders() -> None:
    from charter.generators.transformers_engine import TransformersEngine
    from charter.judges.pairwise import PairwiseLogprobJudge

    judge = PairwiseLogprobJudge(TransformersEngine("smollm2-135m-instruct", batch_size=8))
    sets = [
        candidate_set(
            "egg",
            "Boil it for 8 minutes, then cool it in cold water.",
            "Eggs are food.",
            "Put the egg in boiling water; 6 minutes gives a soft yolk, 10 a firm one.",
            "I cannot help with that.",
            "Crack it into a pan.",
            "Eggs take about eight to ten minutes in boiling water for a hard yolk.",
        )
    ]
    judgments, rankings, _ = judge_candidates(
        sets, judge, constitution("helpful"), seed=0, ranking="tournament"
    )
    assert len(judgments) <= max_comparisons(6) + 1 == 12  # all pairs: 15
    assert sorted(rankings[0].order) == [f"egg/{k}" for k in range(6)]
    for j in judgments:
        assert set(j.raw["logprobs_a_first"]) == {"A", "B"}
        assert set(j.raw["logprobs_b_first"]) == {"A", "B"}
    judged = {frozenset((j.candidate_a, j.candidate_b)) for j in judgments}
    assert frozenset((rankings[0].order[0], rankings[0].order[-1])) in judged

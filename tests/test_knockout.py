"""``ranking=knockout``: the best and the worst of K in about 3K/2 comparisons and log2 K rounds."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from charter.judges.tournament import knockout_steps
from tests.cli import charter


def run(ids: list[str], p_first: Callable[[str, str], float]) -> tuple[list[str], int, int]:
    """The order, the comparisons asked and the rounds, answering with ``p_first``."""
    steps = knockout_steps(ids)
    asked = rounds = 0
    try:
        pairs = next(steps)
        while True:
            asked += len(pairs)
            rounds += 1
            pairs = steps.send([p_first(a, b) for a, b in pairs])
    except StopIteration as done:
        return done.value, asked, rounds


@pytest.mark.parametrize("k", range(2, 17))
def test_a_consistent_judge_gets_the_true_best_and_worst(k: int) -> None:
    rng = random.Random(k)
    for _ in range(20):
        ids = [f"p/{i}" for i in range(k)]
        strength = {c: rng.random() for c in ids}
        order, asked, rounds = run(ids, lambda a, b, s=strength: float(s[a] > s[b]))
        assert order[0] == max(ids, key=strength.__getitem__)
        assert order[-1] == min(ids, key=strength.__getitem__)
        assert sorted(order) == sorted(ids)
        assert asked <= 3 * k // 2  # all pairs would take k(k-1)/2
        assert rounds <= (k - 1).bit_length() + 1


def test_comparison_counts_for_the_documented_sizes() -> None:
    counts = {k: run([str(i) for i in range(k)], lambda a, b: 1.0)[1] for k in (4, 8, 16)}
    assert counts == {4: 4, 8: 10, 16: 22}  # 3K/2 - 2; all pairs: 6, 28, 120


def test_a_contradictory_judge_still_gives_two_different_ends() -> None:
    # K=3: the odd one out enters both brackets; a judge that prefers it to the winner and the
    # loser to it must not make it both best and worst
    def p(a: str, b: str) -> float:
        return {("0", "1"): 1.0, ("0", "2"): 0.0, ("1", "2"): 1.0}[a, b]

    order, _, _ = run(["0", "1", "2"], p)
    assert order[0] != order[-1] and sorted(order) == ["0", "1", "2"]


def test_one_candidate_needs_no_comparison() -> None:
    assert run(["only"], lambda a, b: 1.0) == (["only"], 0, 0)


def test_a_knockout_run_judges_fewer_pairs_and_publishes_best_against_worst(
    tmp_path: Path,
) -> None:
    size = ["experiment=smoke", "prompts.limit=4", "generator.num_samples=8", "report=false"]
    fake = ["engine@generator.engine=fake", "engine@judge.engine=fake", f"cache_dir={tmp_path}"]
    for ranking in ("all_pairs", "knockout"):
        result = charter(
            "run",
            *size,
            *fake,
            f"ranking={ranking}",
            f"hydra.run.dir={tmp_path / ranking}",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    judged = {
        r: [json.loads(line) for line in (tmp_path / r / "judgments.jsonl").open()]
        for r in ("all_pairs", "knockout")
    }
    per_prompt = Counter(j["prompt_id"] for j in judged["knockout"])
    assert all(n <= 3 * 8 // 2 - 1 for n in per_prompt.values())  # 10 + best vs worst
    assert len(judged["knockout"]) < len(judged["all_pairs"]) / 2
    pairs = [json.loads(line) for line in (tmp_path / "knockout" / "pairs.jsonl").open()]
    rankings = {
        r["prompt_id"]: r["order"]
        for r in map(json.loads, (tmp_path / "knockout" / "rankings.jsonl").open())
    }
    direct = {frozenset((j["candidate_a"], j["candidate_b"])) for j in judged["knockout"]}
    for pair in pairs:  # each published pair is the ranking's two ends, judged directly
        order = rankings[pair["prompt_id"]]
        assert {pair["chosen_id"], pair["rejected_id"]} == {order[0], order[-1]}
        assert frozenset((order[0], order[-1])) in direct

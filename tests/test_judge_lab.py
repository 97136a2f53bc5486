"""Pointwise judge, injection set and calibration: plumbing with a fake engine, then real."""

from __future__ import annotations

import math

import pytest

from charter.generators.fake_engine import FakeEngine
from charter.human_prefs import HumanPair
from charter.judge_eval.injection import ATTACKS, adversarial_pairs, flip_rate
from charter.judge_eval.reliability import expected_calibration_error, reliability
from charter.judges.pointwise import PointwiseScoreJudge
from charter.judges.protocol import Comparison
from tests.fixtures import principle


def reply_length_score(chat, choice: str) -> float:
    """A fake judge that rates longer replies higher: logit peaks at min(9, words) ."""
    reply = chat[1]["content"].split("<reply>")[1].split("</reply>")[0]
    target = min(9, len(reply.split()))
    return -abs(int(choice) - target)


def comparison(a: str, b: str) -> Comparison:
    return Comparison(
        prompt_id="p",
        messages=[{"role": "user", "content": "Tell me about tea."}],
        candidate_a="a",
        response_a=a,
        candidate_b="b",
        response_b=b,
        principle=principle("helpful"),
    )


def test_pointwise_prefers_the_higher_expected_score_and_is_order_free() -> None:
    judge = PointwiseScoreJudge(FakeEngine(score=reply_length_score))
    long, short = "Tea is a drink made from leaves of the tea plant.", "Tea."
    forward, backward = judge.judge([comparison(long, short), comparison(short, long)])
    assert forward.p_a > 0.9
    assert forward.p_a == pytest.approx(1 - backward.p_a)
    assert forward.raw["score_a"] > forward.raw["score_b"]
    assert forward.p_first_order == forward.p_swapped == forward.p_a


def test_pointwise_scores_each_distinct_chat_once() -> None:
    calls: list[int] = []

    class Counting(FakeEngine):
        def choice_logprobs(self, chats, choices):
            calls.append(len(chats))
            return super().choice_logprobs(chats, choices)

    judge = PointwiseScoreJudge(Counting(score=reply_length_score))
    judge.judge([comparison("x y", "z"), comparison("x y", "w v u")])
    assert calls == [3]  # "x y" under the same principle and conversation is shared


def test_injection_variants_attack_only_the_rejected_response() -> None:
    pair = HumanPair(
        id="1",
        messages=[{"role": "user", "content": "q"}],
        chosen="good",
        rejected="bad",
        dimension="helpfulness",
    )
    variants = adversarial_pairs([pair])
    assert [v.attack for v in variants] == list(ATTACKS)
    assert all(v.pair.chosen == "good" for v in variants)
    assert {v.pair.rejected for v in variants if v.attack in ("empty", "near_empty")} == {"", "Ok."}
    assert all(
        "bad" in v.pair.rejected for v in variants if v.attack not in ("empty", "near_empty")
    )


def test_flip_rate_counts_only_pairs_right_when_clean() -> None:
    assert flip_rate([0.9, 0.8, 0.3], [0.2, 0.7, 0.1]) == 0.5
    assert flip_rate([0.1], [0.9]) == 0.0


def test_calibration_of_a_perfectly_calibrated_judge_is_near_zero() -> None:
    # 80% confident and right 80% of the time; 60% confident and right 60% of the time
    ps = [0.8] * 8 + [0.2] * 2 + [0.6] * 6 + [0.4] * 4
    assert expected_calibration_error(ps) == pytest.approx(0.0, abs=1e-9)
    overconfident = [0.99] * 5 + [0.01] * 5
    assert expected_calibration_error(overconfident) == pytest.approx(0.49, abs=1e-6)
    assert sum(b.count for b in reliability(ps)) == len(ps)


@pytest.mark.slow
def test_pointwise_judge_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    judge = PointwiseScoreJudge(TransformersEngine("smollm2-135m-instruct", batch_size=8))
    good = "Steep green tea for two to three minutes in water just below boiling."
    bad = "I don't know."
    forward, backward = judge.judge([comparison(good, bad), comparison(bad, good)])
    for j in (forward, backward):
        assert 1.0 <= j.raw["score_a"] <= 9.0 and 1.0 <= j.raw["score_b"] <= 9.0
        assert math.isfinite(j.p_a)
    assert forward.p_a == pytest.approx(1 - backward.p_a, abs=1e-4)


def test_chain_of_thought_keeps_critiques_and_clamps_each_order() -> None:
    from charter.judges.chain_of_thought import PairwiseCoTJudge

    judge = PairwiseCoTJudge(FakeEngine(bias=5.0), critique_tokens=8)
    forward, backward = judge.judge(
        [comparison("one two", "three"), comparison("three", "one two")]
    )
    for j in (forward, backward):
        assert j.raw["critique_a_first"] and j.raw["critique_b_first"]
        assert 0.4 - 1e-9 <= j.p_first_order <= 0.6 + 1e-9
        assert 0.4 - 1e-9 <= j.p_swapped <= 0.6 + 1e-9
    with pytest.raises(ValueError, match="clamp"):
        PairwiseCoTJudge(FakeEngine(), clamp=(0.6, 0.4))


@pytest.mark.slow
def test_chain_of_thought_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine
    from charter.judges.chain_of_thought import PairwiseCoTJudge

    judge = PairwiseCoTJudge(
        TransformersEngine("smollm2-135m-instruct", batch_size=8), critique_tokens=16
    )
    good = "Steep green tea for two to three minutes in water just below boiling."
    (j,) = judge.judge([comparison(good, "I don't know.")])
    assert len(j.raw["critique_a_first"].split()) >= 2
    assert 0.4 <= j.p_a <= 0.6 and set(j.raw["logprobs_a_first"]) == {"A", "B"}

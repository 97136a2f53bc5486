"""Likelihood-contrast judge: exact A-vs-B arithmetic with a fake engine, then the real model."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from charter.generators.fake_engine import FakeEngine
from charter.judges.contrast import LikelihoodContrastJudge
from charter.judges.protocol import Comparison
from tests.fixtures import principle

GOOD = "Steep green tea for two to three minutes in water just below boiling."
BAD = "I don't know."


def comparison(a: str, b: str) -> Comparison:
    return Comparison(
        prompt_id="p",
        messages=[{"role": "user", "content": "How do I make green tea?"}],
        candidate_a="a",
        response_a=a,
        candidate_b="b",
        response_b=b,
        principle=principle("helpful"),
    )


def raw_score(chat, choice: str) -> float:
    """A known raw log-likelihood: guidance raises long replies, and every chat has its own
    offset, so the engine's renormalisation has something to hide."""
    guided = "follow this principle" in chat[0]["content"]
    words = len(choice.split())
    return -2.0 * words + (0.5 * words if guided else 0.0) + (7.0 if guided else -3.0)


def test_contrast_is_exact_from_renormalised_scores() -> None:
    judge = LikelihoodContrastJudge(FakeEngine(score=raw_score), temperature=1.0, normalise="sum")
    (j,) = judge.judge([comparison(GOOD, BAD)])
    words_a, words_b = len(GOOD.split()), len(BAD.split())
    # [s_a(g) - s_a(p)] - [s_b(g) - s_b(p)]: the per-chat offsets (7, -3) and normalisers cancel
    expected = 0.5 * words_a - 0.5 * words_b
    assert j.raw["contrast"] == pytest.approx(expected)
    assert j.p_a == pytest.approx(1 / (1 + math.exp(-expected)))


def test_pair_tokens_divides_by_the_mean_response_length() -> None:
    judge = LikelihoodContrastJudge(FakeEngine(score=raw_score), temperature=0.5)
    (j,) = judge.judge([comparison(GOOD, BAD)])
    # the fake engine counts words as tokens
    assert (j.raw["tokens_a"], j.raw["tokens_b"]) == (len(GOOD.split()), len(BAD.split()))
    mean_tokens = (j.raw["tokens_a"] + j.raw["tokens_b"]) / 2
    summed = j.raw["logratio_guided"] - j.raw["logratio_plain"]
    assert j.raw["contrast"] == pytest.approx(summed / mean_tokens)
    assert j.p_a > 0.5


def test_swapping_the_responses_flips_the_label_and_one_order_suffices() -> None:
    calls: list[int] = []

    class Counting(FakeEngine):
        def choice_logprobs(self, chats, choices):
            calls.append(len(chats))
            return super().choice_logprobs(chats, choices)

    judge = LikelihoodContrastJudge(Counting(score=raw_score))
    forward, backward = judge.judge([comparison(GOOD, BAD), comparison(BAD, GOOD)])
    assert forward.p_a == pytest.approx(1 - backward.p_a)
    assert forward.p_first_order == forward.p_swapped == forward.p_a
    assert calls == [2, 2]  # guided + plain per comparison; no swapped order


def test_identical_or_empty_responses_give_an_exact_tie_without_scoring() -> None:
    judge = LikelihoodContrastJudge(FakeEngine())
    same, empty = judge.judge([comparison(GOOD, GOOD), comparison(GOOD, "")])
    assert same.p_a == empty.p_a == 0.5 and not same.swap_consistent
    assert empty.raw["unscorable"] and empty.raw["tokens_b"] == 1


def test_a_conversation_system_turn_is_the_base_of_both_conditions() -> None:
    judge = LikelihoodContrastJudge(FakeEngine())
    c = comparison(GOOD, BAD)
    c = replace(c, messages=[{"role": "system", "content": "Be brief."}, *c.messages])
    guided, plain = judge.chats(c.messages, c.principle)
    assert plain[0] == {"role": "system", "content": "Be brief."}
    assert guided[0]["content"].startswith("Be brief.") and "helpful" in guided[0]["content"]
    assert guided[1:] == plain[1:] == c.messages[1:]


def on_topic_score(chat, choice: str) -> float:
    """A known raw log-likelihood: the real question raises the reply that mentions tea."""
    asked = "green tea" in chat[-1]["content"]
    return (4.0 if asked and "tea" in choice else 0.0) - len(choice.split()) + (5.0 if asked else 0)


def test_conversation_pmi_contrasts_the_conversation_with_a_neutral_request() -> None:
    judge = LikelihoodContrastJudge(
        FakeEngine(score=on_topic_score), condition="conversation", normalise="sum"
    )
    c = comparison(GOOD, BAD)
    guided, plain = judge.chats(c.messages, c.principle)
    assert guided[1:] == c.messages and plain[0] == guided[0]
    assert plain[1:] == [{"role": "user", "content": "Write a reply."}]
    (j,) = judge.judge([c])
    # only the on-topic bonus survives: lengths and per-chat offsets cancel in the difference
    assert j.raw["contrast"] == pytest.approx(4.0)
    assert j.p_a > 0.99 and j.judge_method == "conversation_pmi"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        LikelihoodContrastJudge(FakeEngine(), temperature=0)
    with pytest.raises(ValueError, match="normalise"):
        LikelihoodContrastJudge(FakeEngine(), normalise="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="condition"):
        LikelihoodContrastJudge(FakeEngine(), condition="topic")  # type: ignore[arg-type]


@pytest.mark.slow
def test_contrast_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    judge = LikelihoodContrastJudge(TransformersEngine("smollm2-135m-instruct", batch_size=8))
    forward, backward = judge.judge([comparison(GOOD, BAD), comparison(BAD, GOOD)])
    assert forward.raw["tokens_a"] > forward.raw["tokens_b"] >= 1
    assert math.isfinite(forward.raw["contrast"]) and forward.raw["contrast"] != 0.0
    # exact antisymmetry up to float noise: the same four sequences, scored in another order
    assert forward.p_a == pytest.approx(1 - backward.p_a, abs=1e-3)


@pytest.mark.slow
def test_conversation_pmi_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    engine = TransformersEngine("smollm2-135m-instruct", batch_size=8)
    judge = LikelihoodContrastJudge(engine, condition="conversation")
    generic = "Thank you for your message. I am happy to help with anything you need."
    forward, backward = judge.judge([comparison(GOOD, generic), comparison(generic, GOOD)])
    assert math.isfinite(forward.raw["contrast"]) and forward.raw["contrast"] != 0.0
    assert forward.p_a == pytest.approx(1 - backward.p_a, abs=1e-3)
    # the tea instructions owe more of their likelihood to the tea question than a stock reply
    assert forward.p_a > 0.5

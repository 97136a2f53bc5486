"""Structured verdicts: JSON validated by a schema, one retry, then an abstention, never a crash."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from jsonschema import Draft202012Validator

from charter.generators.engine import SamplingSettings
from charter.judges.protocol import Comparison
from charter.judges.structured import (
    PREFILL,
    StructuredVerdictJudge,
    parse_verdict,
    verdict_schema,
)
from charter.records import Chat, Completion
from tests.fixtures import principle

GOOD = "Steep green tea for two to three minutes in water just below boiling."
BAD = "I don't know."


def comparison(a: str = GOOD, b: str = BAD) -> Comparison:
    return Comparison(
        prompt_id="p",
        messages=[{"role": "user", "content": "How do I make green tea?"}],
        candidate_a="a",
        response_a=a,
        candidate_b="b",
        response_b=b,
        principle=principle("helpful"),
    )


class ScriptedEngine:
    """Replies from a script, per call; records what it was asked."""

    model_id = "scripted"
    context_length = 4096

    def __init__(self, replies: Sequence[Sequence[str]], *, constrained: bool = False) -> None:
        self.replies = [list(r) for r in replies]
        self.calls: list[tuple[list[Chat], dict]] = []
        self.supports_json_schema = constrained

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return [1 for _ in chats]

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1, **kwargs
    ) -> list[list[Completion]]:
        self.calls.append((list(chats), kwargs))
        texts = self.replies.pop(0)
        assert len(texts) == len(chats)
        return [[Completion(t, "stop", len(t.split()))] for t in texts]

    def choice_logprobs(self, chats, choices):  # pragma: no cover - not used by this judge
        raise AssertionError("the structured judge generates; it does not score choices")


def continuation(better: str, confidence: float, critique: str = "the first is concrete") -> str:
    """What a model writes after the prefilled ``{"critique": "``."""
    full = json.dumps({"critique": critique, "better": better, "confidence": confidence})
    assert full.startswith(PREFILL)
    return full[len(PREFILL) :]


def test_valid_verdicts_in_both_orders_become_a_debiased_label() -> None:
    # a first: "A" at 0.8 -> 0.9; b first: "B" at 0.6 -> a wins with 0.8
    engine = ScriptedEngine([[continuation("A", 0.8), continuation("B", 0.6)]])
    (j,) = StructuredVerdictJudge(engine).judge([comparison()])
    assert j.p_first_order == pytest.approx(0.9)
    assert j.p_swapped == pytest.approx(0.8)
    assert j.p_a > 0.8 and j.swap_consistent
    assert j.raw["a_first"]["verdict"]["better"] == "A" and not j.raw["abstained"]
    assert len(engine.calls) == 1  # nothing to retry
    chat = engine.calls[0][0][0]
    assert chat[-1] == {"role": "assistant", "content": PREFILL}
    assert "<response_A>" in chat[1]["content"] and '"better"' in chat[1]["content"]


def test_a_bad_reply_is_retried_once_with_the_problem_shown() -> None:
    engine = ScriptedEngine(
        [
            ['nice answer", "better": "first"}', continuation("B", 1.0)],
            [continuation("A", 0.5)],
        ]
    )
    (j,) = StructuredVerdictJudge(engine, clamp=(0.1, 0.9)).judge([comparison()])
    retry_chat = engine.calls[1][0][0]
    assert retry_chat[-3]["content"].startswith('{"critique": "nice answer')
    assert (
        "better" in retry_chat[-2]["content"]
        and "'first' is not one of" in (retry_chat[-2]["content"])
    )
    first = j.raw["a_first"]
    assert len(first["replies"]) == 2 and len(first["problems"]) == 1
    assert j.p_first_order == pytest.approx(0.75) and j.p_swapped == pytest.approx(0.9)


def test_two_failures_make_an_abstention_with_the_raw_text_kept() -> None:
    engine = ScriptedEngine([["no json here", "also no"], ["still not", "nope {"]])
    (j,) = StructuredVerdictJudge(engine).judge([comparison()])
    assert j.p_a == 0.5 and j.p_first_order == 0.5 and j.p_swapped == 0.5
    assert j.raw["abstained"] is True and not j.swap_consistent
    assert j.raw["a_first"]["replies"] == [PREFILL + "no json here", PREFILL + "still not"]
    assert j.raw["b_first"]["abstained"] and len(j.raw["b_first"]["problems"]) == 2


def test_one_abstaining_order_leaves_the_other_order_to_decide() -> None:
    engine = ScriptedEngine([[continuation("A", 0.8), "x"], ["y"]])
    (j,) = StructuredVerdictJudge(engine).judge([comparison()])
    assert j.raw["b_first"]["abstained"] and not j.raw["abstained"]
    assert j.p_swapped == 0.5 and j.p_first_order == pytest.approx(0.9)
    assert 0.5 < j.p_a < 0.9


def test_constrained_engines_get_the_schema_and_no_prefill() -> None:
    full = json.dumps({"critique": "c", "better": "B", "confidence": 0.4})
    engine = ScriptedEngine([[full, full]], constrained=True)
    (j,) = StructuredVerdictJudge(engine).judge([comparison()])
    chats, kwargs = engine.calls[0]
    assert kwargs["json_schema"] == verdict_schema()
    assert chats[0][-1]["role"] == "user"
    assert j.raw["constrained"] is True and j.raw["a_first"]["replies"] == [full]
    # "B" in both orders is pure position: the label cancels to a tie
    assert j.p_a == pytest.approx(0.5) and not j.swap_consistent


def test_the_call_cache_and_token_counter_keep_decoding_constrained(tmp_path) -> None:
    from charter.cached_engine import CachedEngine
    from charter.call_cache import CallCache
    from charter.generators.counting import TokenCountingEngine

    full = json.dumps({"critique": "c", "better": "A", "confidence": 0.9})
    inner = ScriptedEngine([[full, full], ["free text"]], constrained=True)
    cached = CachedEngine(inner, CallCache(tmp_path / "calls.sqlite"), "fp")
    wrapped = TokenCountingEngine(cached)  # the stack eval-judge builds
    (j,) = StructuredVerdictJudge(wrapped).judge([comparison()])
    assert j.raw["constrained"] is True
    assert inner.calls[0][1]["json_schema"] == verdict_schema()
    # the schema is part of the cache key: the same chats unconstrained are a fresh call
    again = wrapped.generate(inner.calls[0][0][:1], StructuredVerdictJudge(wrapped).sampling)
    assert again[0][0].text == "free text" and inner.calls[1][1] == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nothing", "no JSON object"),
        ('{"critique": "x", "better": "A"', "not valid JSON"),
        ('{"critique": "x", "better": "A"}', "'confidence' is a required property"),
        ('{"critique": "x", "better": "A", "confidence": 1.5}', "confidence: 1.5 is greater"),
        ('{"critique": "x", "better": "A", "confidence": 0.5, "extra": 1}', "Additional"),
    ],
)
def test_parse_verdict_names_what_is_wrong(text: str, problem: str) -> None:
    verdict, why = parse_verdict(text, Draft202012Validator(verdict_schema()))
    assert verdict is None and problem in why


def test_parse_verdict_reads_the_first_object_after_chatter() -> None:
    text = 'Sure: {"critique": "x", "better": "B", "confidence": 0} and more {"a": 1}'
    verdict, why = parse_verdict(text, Draft202012Validator(verdict_schema()))
    assert verdict == {"critique": "x", "better": "B", "confidence": 0} and why == ""


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="clamp"):
        StructuredVerdictJudge(ScriptedEngine([]), clamp=(0.0, 1.0))
    with pytest.raises(ValueError, match="retries"):
        StructuredVerdictJudge(ScriptedEngine([]), retries=-1)


@pytest.mark.slow
def test_structured_judge_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    engine = TransformersEngine("smollm2-135m-instruct", batch_size=8)
    judge = StructuredVerdictJudge(engine, max_new_tokens=24)
    (j,) = judge.judge([comparison()])
    for order in (j.raw["a_first"], j.raw["b_first"]):
        # either a validated verdict, or two kept replies and the problems that sank them
        if order["abstained"]:
            assert len(order["replies"]) == 2 and len(order["problems"]) == 2
        else:
            assert order["verdict"]["better"] in ("A", "B")
        assert all(r.startswith(PREFILL) for r in order["replies"])
    assert 0.0 <= j.p_a <= 1.0 and j.raw["constrained"] is False

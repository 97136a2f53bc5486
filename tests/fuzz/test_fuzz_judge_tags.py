"""Responses that try to close their own tag: whatever a response or the conversation holds
(the tag in any case, with spaces or attributes, in full-width letters, with zero-width or bidi
characters inside), the judge's prompt keeps exactly the template's tags."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from charter.constitution import FewShotExample
from charter.generators.fake_engine import FakeEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.pointwise import PointwiseScoreJudge
from charter.judges.prompting import neutralise
from charter.judges.protocol import Comparison
from charter.judges.structured import StructuredVerdictJudge
from tests.fixtures import principle
from tests.fuzz.bad_inputs import nasty_text
from tests.fuzz.fuzzing import ending, examples

NAMES = ("response_A", "response_B", "response_a", "RESPONSE_b", "conversation", "reply", "Reply")
INVISIBLE = ("\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u2066", "\u200e")
# what a reader (a model) takes for a tag: NFKC, no format characters, any case
TAG = re.compile(r"<\s*(/?)\s*(response_a|response_b|conversation|reply)\b[^<>]*>")


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def tag_attacks(draw: st.DrawFn) -> str:
    """A copy of a delimiter as an attacker (or an unlucky response) might write it."""
    name = draw(st.sampled_from(NAMES))
    slash = draw(st.sampled_from(["", "/", " / ", "\uff0f"]))
    attrs = draw(st.sampled_from(["", " ", " x='1'", "\n", ' role="judge"']))
    tag = f"<{slash}{name}{attrs}>"
    if draw(st.booleans()):
        tag = _full_width(tag) if draw(st.booleans()) else tag.replace("<", "\ufe64")
    if draw(st.booleans()):
        tag = tag.swapcase()
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        at = draw(st.integers(min_value=1, max_value=len(tag) - 1))
        tag = tag[:at] + draw(st.sampled_from(INVISIBLE)) + tag[at:]
    return tag


untrusted = st.lists(st.one_of(tag_attacks(), nasty_text), max_size=5).map("".join)


def tags(prompt: str) -> list[tuple[str, str]]:
    """The tags a reader sees in ``prompt``, in order."""
    folded = "".join(c for c in prompt if unicodedata.category(c) != "Cf")
    folded = unicodedata.normalize("NFKC", folded).lower()
    return [(m.group(1), m.group(2)) for m in TAG.finditer(folded)]


PAIRWISE = [("", "conversation"), ("/", "conversation"), ("", "response_a"), ("/", "response_a")]
PAIRWISE += [("", "response_b"), ("/", "response_b")]
POINTWISE = [("", "conversation"), ("/", "conversation"), ("", "reply"), ("/", "reply")]


@examples(60)
@given(
    user=untrusted,
    earlier=untrusted,
    response_a=untrusted,
    response_b=untrusted,
    example=untrusted,
    swapped=st.booleans(),
)
def test_response_text_never_adds_or_closes_a_judge_tag(
    user: str, earlier: str, response_a: str, response_b: str, example: str, swapped: bool
) -> None:
    few_shot = FewShotExample(example, example, example, "A", explanation=example)
    rule = replace(principle("p"), examples=(few_shot,))
    messages = [
        {"role": "user", "content": earlier},
        {"role": "assistant", "content": earlier},
        {"role": "user", "content": user or "?"},
    ]
    comparison = Comparison("q", messages, "q/0", response_a, "q/1", response_b, rule)
    engine = FakeEngine()
    with ending("judge tags"):
        for judge in (
            PairwiseLogprobJudge(engine, use_examples=True),
            StructuredVerdictJudge(engine, use_examples=True),
        ):
            prompt = judge.chat(comparison, swapped=swapped)[1]["content"]
            assert tags(prompt) == PAIRWISE, tags(prompt)
        prompt = PointwiseScoreJudge(engine).chat(messages, rule, response_a)[1]["content"]
        assert tags(prompt) == POINTWISE, tags(prompt)


@examples(30)
@given(text=nasty_text)
def test_text_without_a_bracket_is_left_as_it_is(text: str) -> None:
    text = text.replace("<", "").replace("\uff1c", "").replace("\ufe64", "")
    assert neutralise(text) == text

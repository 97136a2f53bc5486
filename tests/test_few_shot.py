"""Few-shot examples from the bundled constitutions, in the pairwise judge's prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.constitution import load_constitution
from charter.generators.fake_engine import FakeEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.protocol import Comparison

ROOT = Path(__file__).resolve().parents[1] / "constitutions"


def comparison(principle_id: str) -> Comparison:
    harmless = load_constitution(ROOT / "harmless.yaml")
    principle = next(p for p in harmless.principles if p.id == principle_id)
    return Comparison(
        prompt_id="p",
        messages=[{"role": "user", "content": "Which cleaning products are safe together?"}],
        candidate_a="a",
        response_a="Keep bleach away from ammonia.",
        candidate_b="b",
        response_b="Mix them all.",
        principle=principle,
    )


def test_bundled_examples_balance_the_letters() -> None:
    letters = [
        e.better
        for name in ("harmless.yaml", "helpful.yaml")
        for p in load_constitution(ROOT / name).principles
        for e in p.examples
    ]
    assert len(letters) >= 6 and letters.count("A") == letters.count("B")


def test_examples_appear_only_when_switched_on_and_cannot_fake_a_tag() -> None:
    c = comparison("no-dangerous-uplift")
    plain = PairwiseLogprobJudge(FakeEngine()).chat(c, swapped=False)[-2]["content"]
    shot = PairwiseLogprobJudge(FakeEngine(), use_examples=True).chat(c, swapped=False)
    text = shot[-2]["content"]  # the user turn; the last is the prefilled answer
    assert "Examples of how to decide" not in plain
    assert "Examples of how to decide" in text and "Better: (A)" in text
    assert "bleach with ammonia" in text  # the example's own words
    assert text.count("<response_A>") == 1  # examples never open a response tag of their own


@pytest.mark.slow
def test_few_shot_pairwise_judge_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    engine = TransformersEngine("smollm2-135m-instruct", batch_size=8)
    judge = PairwiseLogprobJudge(engine, use_examples=True)
    (j,) = judge.judge([comparison("no-dangerous-uplift")])
    assert set(j.raw["logprobs_a_first"]) == {"A", "B"} == set(j.raw["logprobs_b_first"])
    assert 0.0 < j.p_a < 1.0
    # the examples change what the model reads, so its scores differ from the zero-shot prompt
    (zero,) = PairwiseLogprobJudge(engine).judge([comparison("no-dangerous-uplift")])
    assert j.raw["logprobs_a_first"] != zero.raw["logprobs_a_first"]

"""A judge chat longer than the judge's context becomes a reject with its token count, and the
run goes on; where everything fits, the judgments are what they always were.

Engines refuse an over-long chat with an error (the transformers and vLLM engines on a token
count, the OpenAI server with HTTP 400). ``StrictFakeEngine`` does the same on the fake engine's
word count, so the plumbing is tested in milliseconds; the tiny random Llama and (slow) the real
SmolLM2 check it on the transformers engine's own limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pytest

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.judges.cascade import CascadeJudge
from charter.judges.chain_of_thought import PairwiseCoTJudge
from charter.judges.contrast import LikelihoodContrastJudge
from charter.judges.jury import JuryJudge
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.pointwise import PointwiseScoreJudge
from charter.judges.stage import build_comparisons, judge_candidates, judge_in_chunks
from charter.judges.structured import PREFILL, StructuredVerdictJudge
from charter.records import CandidateSet, Chat, Completion
from tests.cli import charter
from tests.fixtures import candidate_set, constitution

LONG = " ".join(["word"] * 400)
PREFILLED = {"role": "assistant", "content": PREFILL}


class StrictFakeEngine(FakeEngine):
    """The fake engine with a small context that it enforces as the real engines do."""

    def __init__(self, context_length: int, model_id: str = "strict") -> None:
        super().__init__(model_id)
        self.context_length = context_length  # type: ignore[misc]
        self.calls = 0

    def _check(self, chats: Sequence[Chat], room: int) -> None:
        for i, n in enumerate(self.count_tokens(chats)):
            if n + room > self.context_length:
                raise InputError(f"chat {i} is {n} tokens: it does not fit the context")

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        self._check(chats, 1)
        self.calls += 1
        return super().generate(chats, sampling, n)

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        self._check(chats, max(len(c.split()) for c in choices))
        self.calls += 1
        return super().choice_logprobs(chats, choices)


def sets_with_one_long_answer() -> list[CandidateSet]:
    """Three prompts of three candidates; p1's third answer is far too long for the judge."""
    return [
        candidate_set("p0", "short a", "short b", "short c"),
        candidate_set("p1", "tiny a", "tiny b", LONG),
        candidate_set("p2", "brief a", "brief b", "brief c"),
    ]


def test_an_over_long_comparison_is_a_reject_and_the_rest_are_judged() -> None:
    judge = PairwiseLogprobJudge(StrictFakeEngine(300))
    judgments, rankings, rejects = judge_candidates(
        sets_with_one_long_answer(), judge, constitution("x"), seed=0, chunk_size=2
    )
    judged = {(j.candidate_a, j.candidate_b) for j in judgments}
    assert len(judged) == 9 - 2 and ("p1/0", "p1/1") in judged
    assert [r.source for r in rejects] == ["p1/0 vs p1/2", "p1/1 vs p1/2"]
    for r in rejects:
        assert r.stage == "judge" and r.row and r.row["prompt_id"] == "p1"
        tokens = r.row["tokens"]
        assert tokens > 400 and r.row["context"] == 300
        assert r.reason == (
            f"judge chat is {tokens} tokens with its answer; it exceeds the judge model's "
            "context of 300 tokens"
        )
    assert [len(r.order) for r in rankings] == [3, 3, 3]


def test_a_tournament_treats_an_over_long_comparison_as_a_tie_and_goes_on() -> None:
    judge = PairwiseLogprobJudge(StrictFakeEngine(300))
    sets = sets_with_one_long_answer()
    judgments, rankings, rejects = judge_candidates(
        sets, judge, constitution("x"), seed=0, ranking="tournament"
    )
    assert rejects and all("exceeds the judge model's context" in r.reason for r in rejects)
    assert len({r.source for r in rejects}) == len(rejects)  # each pair rejected once
    assert {j.prompt_id for j in judgments} == {"p0", "p1", "p2"}
    assert all(sorted(r.order) == [f"{r.prompt_id}/{k}" for k in range(3)] for r in rankings)


JUDGES = {
    "pairwise": lambda e: PairwiseLogprobJudge(e),
    "pointwise": lambda e: PointwiseScoreJudge(e),
    "chain_of_thought": lambda e: PairwiseCoTJudge(e, critique_tokens=8),
    "structured": lambda e: StructuredVerdictJudge(e, max_new_tokens=8),
    "contrast": lambda e: LikelihoodContrastJudge(e),
    "jury": lambda e: JuryJudge(
        e, members={"p": PairwiseLogprobJudge(e), "s": PointwiseScoreJudge(e)}
    ),
}


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_every_judge_with_an_engine_says_what_it_needs(name: str) -> None:
    judge = JUDGES[name](StrictFakeEngine(300))
    judgments, _, rejects = judge_candidates(
        sets_with_one_long_answer(), judge, constitution("x"), seed=0
    )
    assert [r.source for r in rejects] == ["p1/0 vs p1/2", "p1/1 vs p1/2"]
    assert len(judgments) == 7


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_judgments_are_unchanged_where_everything_fits(name: str) -> None:
    sets = [candidate_set(f"p{i}", "one", "two words", "three more words") for i in range(4)]
    comparisons, _ = build_comparisons(sets, constitution("x", "y"), seed=3)
    plain = judge_in_chunks(comparisons, JUDGES[name](FakeEngine()), 5, None)
    checked, _, rejects = judge_candidates(
        sets, JUDGES[name](FakeEngine()), constitution("x", "y"), seed=3, chunk_size=5
    )
    assert rejects == []
    assert [json.dumps(asdict(j)) for j in checked] == [json.dumps(asdict(j)) for j in plain]


def test_a_cascade_leaves_what_its_next_tier_cannot_read_to_a_human() -> None:
    sets = [candidate_set("p0", "short a", "short b"), candidate_set("p1", "tiny a", LONG)]
    strong = StrictFakeEngine(300, model_id="strong")
    cascade = CascadeJudge(
        {
            "cheap": lambda: PairwiseLogprobJudge(FakeEngine("cheap")),
            "strong": lambda: PairwiseLogprobJudge(strong),
        },
        escalate_below=1.0,  # everything escalates
    )
    judgments, _, rejects = judge_candidates(sets, cascade, constitution("x"), seed=0)
    assert rejects == []  # the first tier read everything
    by_prompt = {j.prompt_id: j.raw["cascade"] for j in judgments}
    assert by_prompt["p0"]["decided_by"] == "strong"
    assert by_prompt["p1"]["decided_by"] == "cheap" and by_prompt["p1"]["needs_human"]
    assert cascade.tier_stats["strong"].comparisons == 1


def test_a_structured_retry_that_would_not_fit_abstains_instead() -> None:
    # the fake engine never writes JSON, so every order is retried with its reply and the
    # retry request: the first attempt fits with its full reply, the retry does not
    sets = [candidate_set("p0", "short a", "short b")]
    probe = StructuredVerdictJudge(FakeEngine(), max_new_tokens=4)
    comparisons, _ = build_comparisons(sets, constitution("x"), seed=0)
    sent = [[*probe.chat(comparisons[0], swapped=s), PREFILLED] for s in (False, True)]
    engine = StrictFakeEngine(max(FakeEngine().count_tokens(sent)) + 4 + 2)
    judge = StructuredVerdictJudge(engine, max_new_tokens=4)
    judgments, _, rejects = judge_candidates(sets, judge, constitution("x"), seed=0)
    assert rejects == [] and engine.calls == 1  # the retry was never sent
    assert judgments[0].raw["abstained"] and judgments[0].p_a == 0.5


def test_a_run_with_an_over_long_prompt_for_the_judge_goes_on(tmp_path: Path) -> None:
    # the long prompt fits the generator (with 16 new words) but not the judge's chat, which
    # adds the judge's instructions and two responses: 2048 words is the fake engine's context
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "short1", "prompt": "Name a colour."}, {"id": "short2", "prompt": "Say hi."}]
    rows.insert(1, {"id": "long", "prompt": " ".join(["please"] * 2000)})
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = charter(
        "run", "experiment=smoke", "engine@generator.engine=fake", "engine@judge.engine=fake",
        f"prompts.path={prompts}", "report=false", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run = tmp_path / "run"
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").open()]
    judge_rejects = [r for r in rejects if r["stage"] == "judge"]
    assert judge_rejects and all(r["row"]["prompt_id"] == "long" for r in judge_rejects)
    assert all("exceeds the judge model's context of 2048" in r["reason"] for r in judge_rejects)
    judged = {json.loads(line)["prompt_id"] for line in (run / "judgments.jsonl").open()}
    assert judged == {"short1", "short2"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["judge"]["skipped"] == len(judge_rejects)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.engine_fixtures import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_the_transformers_engines_own_limit_is_respected(tiny_llama: Path) -> None:
    from charter.generators.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(tiny_llama), max_context=320)
    judge = PairwiseLogprobJudge(engine)
    judgments, _, rejects = judge_candidates(
        sets_with_one_long_answer(), judge, constitution("x"), seed=0
    )
    assert [r.source for r in rejects] == ["p1/0 vs p1/2", "p1/1 vs p1/2"]
    assert len(judgments) == 7
    assert all(r.row and r.row["tokens"] > 320 for r in rejects)


@pytest.mark.slow
def test_smollm2_judge_with_a_small_context_rejects_and_goes_on() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    engine = TransformersEngine("smollm2-135m-instruct", max_context=320)
    judgments, rankings, rejects = judge_candidates(
        sets_with_one_long_answer(), PairwiseLogprobJudge(engine), constitution("x"), seed=0
    )
    assert [r.source for r in rejects] == ["p1/0 vs p1/2", "p1/1 vs p1/2"]
    assert len(judgments) == 7 and len(rankings) == 3

"""Critique -> revision plumbing with the fake engine: chains, degenerate checks, verification."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from datasets import load_from_disk

from charter.constitution import FewShotExample
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.records import Chat, Completion, PromptRecord, to_row
from charter.revisions.chain import RevisionChain, RevisionRound, critique_chat
from charter.revisions.degenerate import (
    BOILERPLATE,
    EMPTY,
    IDENTICAL,
    RESTATES,
    DegenerateFilter,
    restatement_share,
)
from charter.revisions.outputs import preference_pair, sft_row
from charter.revisions.stage import RevisionSettings, draw_round_principle, revise_prompts
from charter.revisions.verify import BELOW_MARGIN, JUDGE_PREFERS_INITIAL, verify_revisions
from charter.schema_check import check_rows
from tests.fixtures import constitution, principle

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
SHA = "0" * 64


class CountingEngine(FakeEngine):
    """The fake engine, recording how many chats each generate call carried."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        self.calls.append(len(chats))
        return super().generate(chats, sampling, n)


def prompts(n: int) -> list[PromptRecord]:
    return [
        PromptRecord(f"p{i}", [{"role": "user", "content": f"question {i}"}], f"in.jsonl:{i + 1}")
        for i in range(n)
    ]


def chain(pid: str, initial: str, revision: str, critique: str = "It is fine.") -> RevisionChain:
    return RevisionChain(
        prompt_id=pid,
        messages=[{"role": "user", "content": f"question {pid}"}],
        source=f"in.jsonl:{pid}",
        initial=initial,
        initial_finish_reason="stop",
        rounds=[
            RevisionRound(1, "a", "Critique it.", critique, "Rewrite it.", revision, "stop", "stop")
        ],
        generator_model="gen",
    )


def test_every_prompt_gets_a_complete_chain_in_one_call_per_step() -> None:
    engine = CountingEngine()
    tiny = constitution("a", "b", "c")
    chains, rejects = revise_prompts(
        prompts(5),
        engine,
        SamplingSettings(max_new_tokens=8),
        tiny,
        RevisionSettings(rounds=2),
        seed=3,
    )
    assert rejects == []
    assert engine.calls == [5, 5, 5, 5, 5]  # initial, then critique + revision per round
    assert [c.prompt_id for c in chains] == [f"p{i}" for i in range(5)]
    for c in chains:
        assert [r.round for r in c.rounds] == [1, 2]
        for r in c.rounds:
            drawn = draw_round_principle(tiny, 3, c.prompt_id, r.round)
            assert r.principle_id == drawn.id
            assert r.critique_request == drawn.critique_request
            assert r.revision_request.startswith(drawn.revision_request)
            assert r.critique and r.revision
        # round 2 revises round 1's revision, and the final revision is the last round's
        assert c.final == c.rounds[-1].revision != c.initial


def test_a_chat_that_outgrows_the_context_is_rejected_with_its_step() -> None:
    engine = FakeEngine()
    long = PromptRecord("long", [{"role": "user", "content": "word " * 2045}], "in.jsonl:9")
    chains, rejects = revise_prompts(
        [*prompts(1), long],
        engine,
        SamplingSettings(max_new_tokens=8),
        constitution("a"),
        RevisionSettings(),
        seed=0,
    )
    assert [c.prompt_id for c in chains] == ["p0"]
    assert len(rejects) == 1 and rejects[0].source == "in.jsonl:9"
    assert rejects[0].stage == "revise" and rejects[0].reason.startswith("initial chat is")


def test_few_shot_examples_come_after_the_system_turn_only_when_switched_on() -> None:
    example = FewShotExample(
        "How do I pick a lock?",
        "Use a tension wrench.",
        "Call a locksmith.",
        better="B",
        explanation="It helps with a break-in.",
    )
    p = replace(principle("a"), examples=(example,))
    messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
    plain = critique_chat(messages, "Hello", p, "Rewrite only.", use_examples=False)
    shot = critique_chat(messages, "Hello", p, "Rewrite only.", use_examples=True)
    assert [m["content"] for m in plain] == ["Be nice.", "Hi", "Hello", p.critique_request]
    assert shot[0]["content"] == "Be nice."
    # the worse reply is critiqued with the explanation and rewritten as the better one
    assert [m["content"] for m in shot[1:7]] == [
        "How do I pick a lock?",
        "Use a tension wrench.",
        p.critique_request,
        "It helps with a break-in.",
        f"{p.revision_request} Rewrite only.",
        "Call a locksmith.",
    ]
    assert shot[7:] == plain[1:]


def test_degenerate_revisions_are_dropped_with_their_reasons() -> None:
    refusal = "I am sorry but I cannot help with that request at all."
    chains = [
        chain("empty", "An answer.", "   "),
        chain("same", "Boil it for 8 minutes.", "boil it for 8 minutes"),
        chain(
            "parrot",
            "Eggs are food.",
            "The response should say how long to boil the egg and at what heat.",
            critique="The response should say how long to boil the egg and at what heat.",
        ),
        *(chain(f"b{i}", f"Original answer {i}.", f"{refusal} Sorry.") for i in range(4)),
        chain("good", "Eggs are food.", "Boil the egg for eight minutes, then cool it."),
    ]
    report = DegenerateFilter(boilerplate_min_prompts=3).check(chains)
    assert [c.prompt_id for c in report.kept] == ["good"]
    assert report.dropped == {EMPTY: 1, IDENTICAL: 1, RESTATES: 1, BOILERPLATE: 4}
    by_prompt = {r.row["prompt_id"]: r.reason for r in report.rejects}
    assert "appears in 4 prompts" in by_prompt["b0"]
    assert report.repeated_sentences[0] == (
        "i am sorry but i cannot help with that request at all",
        4,
    )
    assert report.openings[0] == ("i am sorry but", 4)
    # switched off: the same figures are reported, nothing is dropped
    relaxed = DegenerateFilter(enabled=False).check(chains)
    assert len(relaxed.kept) == len(chains) and not relaxed.rejects
    assert relaxed.openings == report.openings


def test_quoting_the_original_is_not_restating_the_critique() -> None:
    initial = "Mix bleach and ammonia to clean the sink."
    critique = "The response says to mix bleach and ammonia to clean the sink, which is toxic."
    assert restatement_share("Mix bleach and ammonia to clean the sink.", critique, initial) == 0
    assert restatement_share("which is toxic", critique, initial) == 1.0


def prefers_marked(chat: Chat, choice: str) -> float:
    """A judge that prefers whichever response contains GOOD (logit +3)."""
    text = chat[1]["content"]
    block = re.search(rf"<response_{choice}>(.*?)</response_{choice}>", text, re.S)
    return 3.0 if block and "GOOD" in block.group(1) else 0.0


def test_verification_keeps_only_revisions_the_judge_prefers() -> None:
    judge = PairwiseLogprobJudge(FakeEngine(score=prefers_marked, bias=1.0))
    tiny = constitution("a")
    chains = [
        chain("better", "plain answer", "GOOD answer"),
        chain("worse", "GOOD answer", "plain answer"),
        chain("tie", "plain answer", "another plain answer"),
    ]
    result = verify_revisions(chains, judge, tiny, min_margin=0.0)
    assert [c.prompt_id for c, _ in result.kept] == ["better"]
    assert len(result.judgments) == 3  # one comparison per chain, both orders inside
    assert result.dropped == {JUDGE_PREFERS_INITIAL: 2}
    kept = result.kept[0][1]
    assert kept.p_revision > 0.9 and kept.swap_consistent
    # the same pairs under a margin the judge does not reach
    strict = verify_revisions(chains, judge, tiny, min_margin=0.99)
    assert strict.kept == [] and strict.dropped[BELOW_MARGIN] == 1
    assert "margin" in strict.rejects[0].reason


def test_outputs_match_the_published_schemas() -> None:
    judge = PairwiseLogprobJudge(FakeEngine(score=prefers_marked))
    c = chain("better", "plain answer", "GOOD answer")
    ((kept, verdict),) = verify_revisions([c], judge, constitution("a")).kept
    rows = [sft_row(kept, verdict, SHA), sft_row(kept, None, SHA)]
    check_rows("sft", rows, file="sft.jsonl")
    pairs = [to_row(preference_pair(kept, verdict, SHA)), to_row(preference_pair(kept, None, SHA))]
    check_rows("pairs", pairs, file="pairs.jsonl")
    assert pairs[0]["chosen"][0]["content"] == "GOOD answer"
    assert pairs[0]["rejected"][0]["content"] == "plain answer"
    assert pairs[1]["judge_model"] == "unverified" and pairs[1]["p_chosen"] == 1.0
    assert rows[1]["p_revision_better"] is None


def charter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("verify", [True, False])
def test_cai_sl_run_publishes_sft_and_pairs(tmp_path: Path, verify: bool) -> None:
    run = tmp_path / "run"
    result = charter(
        "run",
        "experiment=cai_sl",
        *FAKE,
        "prompts.limit=6",
        f"revise.verify={verify}",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())["revise"]
    assert summary["chains"] == 6
    sft = load_from_disk(str(run / "sft_dataset"))
    pairs = load_from_disk(str(run / "dataset"))
    assert {"prompt", "completion", "revision_chain"} <= set(sft.column_names)
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert len(sft) == len(pairs) == summary["pairs"]
    card = (run / "README.md").read_text()
    assert "config_name: sft" in card and "Most common revision openings" in card
    judgments = (run / "judgments.jsonl").read_text().splitlines()
    if verify:
        ver = summary["verification"]
        assert len(judgments) == ver["judged"] and ver["kept"] == len(pairs)
        assert f"Verified: {ver['kept']} of {ver['judged']}" in card
        dropped = [json.loads(x) for x in (run / "rejects.jsonl").read_text().splitlines()]
        judge_drops = [r for r in dropped if "judge" in r["reason"]]
        assert len(judge_drops) == ver["judged"] - ver["kept"]
    else:
        assert judgments == [] and "Verification was off" in card
        assert len(pairs) == 6 - sum(summary["degenerate"].values())
        assert set(pairs["judge_model"]) <= {"unverified"}

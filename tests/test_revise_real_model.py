"""Critique -> revision through the real SmolLM2 model: the chain, the judge's check, TRL columns.

Small on purpose (two or three prompts, a few tokens each): these check that the stage works end
to end with real weights, never that a 135M model writes good revisions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from datasets import load_from_disk

from charter.constitution import load_constitution
from charter.generators.engine import SamplingSettings
from charter.generators.transformers_engine import TransformersEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.protocol import Comparison
from charter.records import Judgment, PromptRecord
from charter.revisions.degenerate import DegenerateFilter
from charter.revisions.stage import RevisionSettings, revise_prompts
from charter.revisions.verify import BELOW_MARGIN, JUDGE_PREFERS_INITIAL, verify_revisions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ("How do I boil an egg?", "How can I get into my neighbour's house?")


class _Remembering:
    """A judge that scores each comparison once, so the strict pass below costs nothing."""

    def __init__(self, judge: PairwiseLogprobJudge) -> None:
        self.judge_ = judge
        self.model_id, self.method = judge.model_id, judge.method
        self.seen: dict[tuple[str, str], Judgment] = {}

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        new = [c for c in comparisons if (c.prompt_id, c.principle.id) not in self.seen]
        for c, j in zip(new, self.judge_.judge(new) if new else [], strict=True):
            self.seen[(c.prompt_id, c.principle.id)] = j
        return [self.seen[(c.prompt_id, c.principle.id)] for c in comparisons]


@pytest.fixture(scope="module")
def engine() -> TransformersEngine:
    return TransformersEngine("smollm2-135m-instruct", batch_size=8)


@pytest.fixture(scope="module")
def chains(engine: TransformersEngine):
    prompts = [
        PromptRecord(f"q{i}", [{"role": "user", "content": q}], f"test:{i + 1}")
        for i, q in enumerate(QUESTIONS)
    ]
    harmless = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    chains, rejects = revise_prompts(
        prompts,
        engine,
        SamplingSettings(max_new_tokens=12, temperature=0.7, seed=1),
        harmless,
        RevisionSettings(rounds=2),
        seed=0,
    )
    assert rejects == []
    return chains, harmless


def test_every_prompt_gets_a_complete_chain(chains) -> None:
    chains, harmless = chains
    ids = {p.id for p in harmless.principles}
    assert [c.prompt_id for c in chains] == ["q0", "q1"]
    for c in chains:
        assert c.initial.strip() and c.generator_model == "smollm2-135m-instruct"
        assert [r.round for r in c.rounds] == [1, 2]
        for r in c.rounds:
            assert r.principle_id in ids
            assert r.critique.strip() and r.revision.strip()
            assert r.critique_finish_reason in ("stop", "length")
        # the model really wrote something new at each step
        assert c.rounds[0].critique != c.initial and c.final != c.initial


def test_verification_drops_exactly_the_pairs_the_judge_rejects(chains, engine) -> None:
    chains, harmless = chains
    judge = _Remembering(PairwiseLogprobJudge(engine))
    kept = DegenerateFilter(enabled=False).check(chains).kept
    loose = verify_revisions(kept, judge, harmless, min_margin=0.0)
    by_prompt: dict[str, list[float]] = {}
    for j in loose.judgments:
        assert j.candidate_a.endswith("/revision-2") and j.candidate_b.endswith("/initial")
        by_prompt.setdefault(j.prompt_id, []).append(j.p_a)
    assert len(loose.judgments) == sum(len(c.principle_ids) for c in kept)
    margins = {pid: v.margin for pid, v in ((c.prompt_id, v) for c, v in loose.kept)}
    assert all(m > 0 for m in margins.values())
    dropped = {r.row["prompt_id"] for r in loose.rejects}
    assert dropped | set(margins) == {c.prompt_id for c in kept}
    assert all(JUDGE_PREFERS_INITIAL in r.reason for r in loose.rejects)
    for r in loose.rejects:  # a dropped chain's combined label favours the initial response
        assert r.row["p_revision"] <= 0.5
    # a margin above every kept pair's drops them all, each with the reason and its margin
    strict = verify_revisions(kept, judge, harmless, min_margin=0.999)
    assert strict.kept == []
    assert strict.dropped[BELOW_MARGIN] == len(loose.kept)


def test_cai_sl_datasets_load_and_carry_trl_columns(tmp_path: Path) -> None:
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from charter.generators.model_files import resolve_model

    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from charter.cli import main; main()",
            "run",
            "experiment=cai_sl",
            "prompts.limit=2",
            "generator.sampling.max_new_tokens=12",
            "revise.verify=false",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())["revise"]
    sft, pairs = load_from_disk(str(run / "sft_dataset")), load_from_disk(str(run / "dataset"))
    assert len(sft) == len(pairs) == summary["pairs"] == 2 - sum(summary["degenerate"].values())
    assert len(sft) > 0
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m-instruct")))
    row = sft[0]
    assert is_conversational(row) and len(row["revision_chain"]) == 1
    rendered = apply_chat_template(
        {"prompt": row["prompt"], "completion": row["completion"]}, tokenizer
    )
    assert (
        rendered["completion"].strip() and row["completion"][0]["content"] in rendered["completion"]
    )
    pair = pairs[0]
    rendered = apply_chat_template(
        {k: pair[k] for k in ("prompt", "chosen", "rejected")}, tokenizer
    )
    assert rendered["chosen"] and rendered["rejected"]
    assert pair["chosen"][0]["content"] == row["completion"][0]["content"]

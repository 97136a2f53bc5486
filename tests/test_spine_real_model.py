"""The spine through the real SmolLM2 model: what a user of `charter run` relies on.

These load the real weights (converted once into CHARTER_CACHE_DIR), so they are marked slow.
They check plumbing a user depends on (both orders scored, labels flip with the input order,
the dataset drops into TRL), never that a 135M model agrees with people.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from charter.generators.transformers_engine import TransformersEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.protocol import Comparison
from tests.fixtures import principle

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "human_prefs"


def charter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def judge() -> PairwiseLogprobJudge:
    return PairwiseLogprobJudge(TransformersEngine("smollm2-135m-instruct", batch_size=8))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smoke")
    result = charter("run", "experiment=smoke", f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


def comparison(a: str, b: str) -> Comparison:
    return Comparison(
        prompt_id="p",
        messages=[{"role": "user", "content": "How do I boil an egg?"}],
        candidate_a="a",
        response_a=a,
        candidate_b="b",
        response_b=b,
        principle=principle("helpful"),
    )


def test_both_orders_are_scored_and_the_label_flips_with_the_input_order(judge) -> None:
    good = "Put the egg in boiling water for 8 minutes, then cool it in cold water."
    bad = "Eggs are a food."
    forward, backward = judge.judge([comparison(good, bad), comparison(bad, good)])
    for j in (forward, backward):
        assert set(j.raw["logprobs_a_first"]) == {"A", "B"}
        assert set(j.raw["logprobs_b_first"]) == {"A", "B"}
        assert 0.0 < j.p_first_order < 1.0 and 0.0 < j.p_swapped < 1.0
    # swapping which response is called a swaps the two orders, so the label flips exactly
    assert forward.p_a == pytest.approx(1.0 - backward.p_a, abs=1e-4)
    assert forward.p_first_order == pytest.approx(1.0 - backward.p_swapped, abs=1e-4)
    assert forward.swap_consistent == backward.swap_consistent


def test_run_publishes_a_dataset_trl_accepts(smoke_run: Path) -> None:
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from charter.generators.model_files import resolve_model

    dataset = load_from_disk(str(smoke_run / "dataset"))
    assert len(dataset) == 3
    row = dataset[0]
    assert is_conversational(row)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m-instruct")))
    rendered = apply_chat_template({k: row[k] for k in ("prompt", "chosen", "rejected")}, tokenizer)
    assert set(rendered) == {"prompt", "chosen", "rejected"}
    assert rendered["chosen"] and rendered["rejected"]
    judgments = [json.loads(line) for line in (smoke_run / "judgments.jsonl").open()]
    assert len(judgments) == 3  # 3 prompts x 1 pair of 2 samples
    assert all(j["judge_model"] == "smollm2-135m-instruct" for j in judgments)
    pairs = [json.loads(line) for line in (smoke_run / "pairs.jsonl").open()]
    for pair in pairs:
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
        assert 0.5 <= pair["p_chosen"] <= 1.0


def test_prompt_longer_than_the_context_is_rejected_not_fatal(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    long_text = "Please summarise this. " + "The cat sat on the mat. " * 200
    prompts.write_text(
        json.dumps({"id": "short", "prompt": "Name a colour."})
        + "\n"
        + json.dumps({"id": "long", "prompt": long_text})
        + "\n"
    )
    run = tmp_path / "run"
    result = charter(
        "run",
        "experiment=smoke",
        f"prompts.path={prompts}",
        "generator.engine.max_context=512",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").open()]
    too_long = [r for r in rejects if r["stage"] == "generate"]
    assert len(too_long) == 1 and too_long[0]["source"].endswith(":2")
    assert "context of 512 tokens" in too_long[0]["reason"]
    assert [json.loads(line)["prompt_id"] for line in (run / "candidates.jsonl").open()] == [
        "short"
    ]


@pytest.mark.parametrize("name", ["hh_rlhf_harmless_dev.jsonl", "pandalm_dev.jsonl"])
def test_eval_judge_prints_the_report_and_writes_verdicts(tmp_path: Path, name: str) -> None:
    data = SHARED / name
    if not data.exists():
        pytest.skip(f"{data} not present (shared data sits beside the repo)")
    run = tmp_path / "eval"
    # 2 injection pairs, not the default 16: the injection bound has its own real-model test
    args = ("eval-judge", f"data={data}", "limit=4", "injection_pairs=2", f"hydra.run.dir={run}")
    result = charter(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == 4
    for key in (
        "agreement",
        "agreement_soft",
        "swap_consistency",
        "first_position_rate",
        "prefers_longer_rate",
        "length_baseline_agreement",
    ):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["seconds"] > 0
    verdicts = [json.loads(line) for line in (run / "verdicts.jsonl").open()]
    assert len(verdicts) == 4 and all(v["candidate_a"] == "chosen" for v in verdicts)

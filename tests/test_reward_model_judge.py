"""A reward model as a judge: sigma(r_a - r_b), symmetric by construction, and one clear line for
a folder that is not a reward model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForSequenceClassification

from charter.errors import InputError
from charter.judges.protocol import Comparison
from charter.judges.reward_model import RewardModelJudge, check_reward_model
from tests.cli import HUMAN_PREFS, charter, one_error_line
from tests.fixtures import principle
from tests.tiny_llama import tiny_llama  # noqa: F401  (the fixture)

DATA = HUMAN_PREFS


def seq_cls(source: Path, dest: Path, labels: int = 1) -> Path:
    """A sequence-classification copy of ``source`` (a fresh, seeded score head)."""
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(str(source), num_labels=labels)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return seq_cls(tiny_llama, tmp_path_factory.mktemp("rm") / "model")


def comparison(a: str, b: str) -> Comparison:
    return Comparison(
        prompt_id="p",
        messages=[{"role": "user", "content": "How do I boil an egg?"}],
        candidate_a="p/0",
        response_a=a,
        candidate_b="p/1",
        response_b=b,
        principle=principle("helpful"),
    )


def test_reward_difference_is_the_label_and_order_does_not_matter(
    tiny_reward_model: Path,
) -> None:
    judge = RewardModelJudge(str(tiny_reward_model))
    forward, backward = judge.judge(
        [
            comparison("Boil it 8 minutes.", "Eggs are oval."),
            comparison("Eggs are oval.", "Boil it 8 minutes."),
        ]
    )
    r_a, r_b = forward.raw["reward_a"], forward.raw["reward_b"]
    assert forward.p_a == pytest.approx(1 / (1 + math.exp(-(r_a - r_b))))
    assert forward.p_a + backward.p_a == pytest.approx(1.0, abs=1e-6)
    assert forward.p_first_order == forward.p_swapped == forward.p_a
    assert judge.prompt_tokens > 0


def test_folders_that_are_not_reward_models_are_refused(tiny_llama: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(InputError, match="no config.json"):
        check_reward_model(tmp_path / "missing")
    with pytest.raises(InputError, match="not a sequence-classification checkpoint"):
        check_reward_model(tiny_llama)  # a causal LM
    two = seq_cls(tiny_llama, tmp_path / "two-labels", labels=2)
    with pytest.raises(InputError, match="one output; this classifier has 2"):
        check_reward_model(two)
    with pytest.raises(InputError, match="judge.model=PATH"):
        RewardModelJudge(None)


@pytest.mark.skipif(
    not DATA.exists(), reason="needs ../shared/data/human_prefs beside the checkout"
)
def test_eval_judge_with_a_reward_model_and_a_bad_path(
    tiny_reward_model: Path,
    tiny_llama: Path,  # noqa: F811
    tmp_path: Path,  # noqa: F811
) -> None:
    data = DATA / "pandalm_dev.jsonl"
    result = charter(
        "eval-judge",
        f"data={data}",
        "judge=reward_model",
        f"judge.model={tiny_reward_model}",
        "limit=6",
        "injection_pairs=1",
        f"hydra.run.dir={tmp_path / 'ev'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 6 and metrics["swap_consistency"] == 1.0
    assert metrics["tokens_per_comparison"] > 0
    result = charter(
        "eval-judge",
        f"data={data}",
        "judge=reward_model",
        f"judge.model={tiny_llama}",
        cwd=tmp_path,
    )
    assert "not a sequence-classification checkpoint" in one_error_line(result)


@pytest.mark.slow
def test_smollm2_reward_model_as_the_cheap_tier_of_a_cascade(tmp_path: Path) -> None:
    """The real small model with a score head, as a cascade's first tier over the real run."""
    from tests.engine_fixtures import smollm2_dir

    model = seq_cls(smollm2_dir(), tmp_path / "smollm2-rm")
    run = tmp_path / "run"
    result = charter(
        "run",
        "experiment=smoke",
        "judge=cascade_reward_model",
        "judge.escalate_below=0.9",
        f"judge.tiers.cheap.model={model}",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    judgments = [json.loads(line) for line in (run / "judgments.jsonl").open()]
    assert judgments
    for j in judgments:
        first = j["raw"]["cascade"]["tiers"][0]
        assert first["judge_method"] == "reward_model" and first["swap_consistent"]
        assert first["unsure"] == (max(first["p_a"], 1 - first["p_a"]) < 0.9)

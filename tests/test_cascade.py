"""The judge cascade: unsure verdicts go up a tier, unreached tiers never load, the last tier's
doubts go to people first, and the cost of each tier is counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.generators.counting import TokenCountingEngine
from charter.generators.fake_engine import FakeEngine
from charter.judges.cascade import CascadeJudge
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.protocol import Comparison
from tests.cli import charter
from tests.fixtures import principle


def comparisons(n: int) -> list[Comparison]:
    return [
        Comparison(
            prompt_id=f"p{i}",
            messages=[{"role": "user", "content": f"question {i}"}],
            candidate_a=f"p{i}/0",
            response_a=f"first answer {i}",
            candidate_b=f"p{i}/1",
            response_b=f"second answer, longer {i}",
            principle=principle("helpful"),
        )
        for i in range(n)
    ]


def sure_of_a(chat: list[dict[str, str]], choice: str) -> float:
    """A judge certain that the response containing 'first' is better, in either order."""
    text = chat[-2]["content"]
    first_shown_as_a = text.index("first answer") < text.index("second answer")
    return 6.0 if (choice == "A") == first_shown_as_a else -6.0


def tier(engine: FakeEngine, built: list[str], name: str):
    def build() -> PairwiseLogprobJudge:
        built.append(name)
        return PairwiseLogprobJudge(TokenCountingEngine(engine))

    return build


def test_a_sure_first_tier_never_loads_the_second() -> None:
    built: list[str] = []
    cascade = CascadeJudge(
        {
            "cheap": tier(FakeEngine("cheap", score=sure_of_a), built, "cheap"),
            "strong": tier(FakeEngine("strong"), built, "strong"),
        },
        escalate_below=0.9,
    )
    out = cascade.judge(comparisons(5))
    assert built == ["cheap"]
    assert all(j.p_a > 0.99 and j.raw["cascade"]["decided_by"] == "cheap" for j in out)
    assert not any(j.raw["cascade"]["needs_human"] for j in out)
    summary = cascade.summary()
    assert summary["tiers"]["strong"]["comparisons"] == 0
    assert summary["tiers"]["strong"]["loaded"] is False
    assert summary["tiers"]["cheap"]["prompt_tokens"] > 0
    assert summary["last_tier_only_estimate"]["seconds"] is None


def test_a_position_biased_tier_escalates_everything() -> None:
    built: list[str] = []
    cascade = CascadeJudge(
        {
            # says "A" whatever it is shown: every verdict is swap-inconsistent
            "cheap": tier(FakeEngine("cheap", bias=8.0), built, "cheap"),
            "strong": tier(FakeEngine("strong", score=sure_of_a), built, "strong"),
        },
        escalate_below=0.6,
    )
    for chunk in (comparisons(3), comparisons(4)):  # the stage calls once per chunk
        out = cascade.judge(chunk)
        for j in out:
            tiers = j.raw["cascade"]["tiers"]
            assert [t["tier"] for t in tiers] == ["cheap", "strong"]
            assert tiers[0]["unsure"] and not tiers[0]["swap_consistent"]
            assert j.judge_model == "strong" and j.p_a > 0.99
    assert built == ["cheap", "strong"]  # each tier built once, across chunks
    summary = cascade.summary()
    assert summary["tiers"]["cheap"]["comparisons"] == 7
    assert summary["tiers"]["cheap"]["escalation_rate"] == 1.0
    assert summary["tiers"]["strong"]["comparisons"] == 7
    estimate = summary["last_tier_only_estimate"]
    assert estimate["comparisons"] == 7 and estimate["prompt_tokens"] > 0


def test_what_the_last_tier_doubts_needs_a_human() -> None:
    cascade = CascadeJudge(
        {"only": lambda: PairwiseLogprobJudge(FakeEngine("only", bias=8.0))},
        escalate_below=0.6,
    )
    out = cascade.judge(comparisons(3))
    assert all(j.raw["cascade"]["needs_human"] for j in out)


def test_escalate_below_is_checked() -> None:
    with pytest.raises(ValueError, match="escalate_below"):
        CascadeJudge({"x": lambda: None}, escalate_below=0.3)  # type: ignore[dict-item,return-value]


def test_cascade_through_the_cli_sends_needs_human_pairs_first(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = charter(
        "run",
        "experiment=smoke",
        "engine@generator.engine=fake",
        "judge=cascade",
        "engine@judge.tiers.cheap.engine=fake",
        "engine@judge.tiers.strong.engine=fake",
        "+judge.tiers.strong.engine.bias=8.0",  # the strong tier is always unsure too
        "judge.escalate_below=0.55",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())["judge"]["cascade"]
    judgments = [json.loads(line) for line in (run / "judgments.jsonl").open()]
    flagged = {
        frozenset((j["candidate_a"], j["candidate_b"]))
        for j in judgments
        if j["raw"]["cascade"]["needs_human"]
    }
    assert summary["needs_human"] == len(flagged) > 0
    assert summary["tiers"]["strong"]["comparisons"] == summary["tiers"]["cheap"]["escalated"]
    assert "## Judge cascade" in (run / "README.md").read_text()
    result = charter("review", "export", str(run), "budget=10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    queue = [json.loads(line) for line in (run / "review" / "queue.jsonl").open()]
    pairs = {q["review_id"]: q for q in queue}
    first = [frozenset((q["a_id"], q["b_id"])) in flagged for q in pairs.values()]
    # the flagged pairs lead the queue, whatever their margins
    assert first == sorted(first, reverse=True) and any(first)
    assert queue[0]["reasons"][0].startswith("needs_human")


@pytest.mark.slow
def test_cascade_on_the_real_model(tmp_path: Path) -> None:
    """SmolLM2's pairwise verdicts are swap-inconsistent, so they go up to the pointwise tier."""
    run = tmp_path / "run"
    result = charter(
        "run",
        "experiment=smoke",
        "judge=cascade",
        "judge.tiers.strong._target_=charter.judges.pointwise.PointwiseScoreJudge",
        "~judge.tiers.strong.combine",
        "~judge.tiers.strong.use_examples",
        "judge.tiers.strong.template=pointwise",
        "+judge.tiers.strong.temperature=1.0",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    judgments = [json.loads(line) for line in (run / "judgments.jsonl").open()]
    assert judgments
    for j in judgments:
        tiers = j["raw"]["cascade"]["tiers"]
        assert tiers[0]["tier"] == "cheap"
        assert j["raw"]["cascade"]["decided_by"] == tiers[-1]["tier"]
        if tiers[0]["unsure"]:
            assert [t["tier"] for t in tiers] == ["cheap", "strong"]
            assert j["judge_method"] == "cascade:pointwise_expected_score"
    summary = json.loads((run / "summary.json").read_text())["judge"]["cascade"]
    assert summary["tiers"]["cheap"]["comparisons"] == len(judgments)
    assert summary["tiers"]["cheap"]["prompt_tokens"] > 0


def test_a_calibration_fitted_on_the_plain_judge_fits_the_same_tier() -> None:
    """`charter calibrate judge=pairwise judge.engine.model=M` is valid for a cascade tier on M:
    the tier's config is the plain judge's, so their fingerprints match."""
    from hydra import compose, initialize_config_module

    from charter.building import register_resolvers
    from charter.judge_building import judge_fingerprint

    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        plain = compose(
            "calibrate", ["judge.engine.model=/m/big.gguf", "judge.engine.batch_size=4"]
        )
        cascade = compose("run", ["judge=cascade", "judge.tiers.strong.engine.model=/m/big.gguf"])
        other = compose(
            "calibrate", ["judge.engine.model=/m/big.gguf", "judge.combine=probability"]
        )
    strong = judge_fingerprint(cascade.judge.tiers.strong)
    assert judge_fingerprint(plain.judge) == strong
    assert judge_fingerprint(cascade.judge.tiers.cheap) != strong
    assert judge_fingerprint(other.judge) != strong

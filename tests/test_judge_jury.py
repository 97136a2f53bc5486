"""Jury of judges: pooled soft labels, members kept, agreement; eval-judge's table and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from charter.building import EngineCache, register_resolvers
from charter.generators.fake_engine import FakeEngine
from charter.judge_building import build_judge
from charter.judge_eval.agreement import fleiss_kappa, jury_agreement
from charter.judges.jury import JuryJudge, pool_labels
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.pointwise import PointwiseScoreJudge
from charter.judges.protocol import Comparison
from charter.records import Judgment
from tests.fixtures import principle

GOOD = "Steep green tea for two to three minutes in water just below boiling."
BAD = "I don't know."


def comparison(a: str = GOOD, b: str = BAD, pid: str = "p") -> Comparison:
    return Comparison(
        prompt_id=pid,
        messages=[{"role": "user", "content": "How do I make green tea?"}],
        candidate_a="a",
        response_a=a,
        candidate_b="b",
        response_b=b,
        principle=principle("helpful"),
    )


class Fixed:
    """A member with a fixed opinion per call (p_first, p_swapped, p_a)."""

    method = "fixed"

    def __init__(self, *labels: tuple[float, float, float]) -> None:
        self.labels = labels
        self.model_id = "fixed"

    def judge(self, comparisons):
        return [
            Judgment(c.prompt_id, c.candidate_a, c.candidate_b, c.principle.id, *lab,
                     swap_consistent=True, judge_model="fixed", judge_method="fixed", raw={"k": i})
            for i, (c, lab) in enumerate(zip(comparisons, self.labels, strict=True))
        ]  # fmt: skip


def test_pool_labels_weighted_mean_and_log_odds() -> None:
    assert pool_labels([0.9, 0.3], [3, 1], "probability") == pytest.approx(0.75)
    assert pool_labels([0.9, 0.1], [1, 1], "log_odds") == pytest.approx(0.5)
    assert pool_labels([0.8, 0.8], [1, 2], "log_odds") == pytest.approx(0.8)
    with pytest.raises(ValueError, match="pool"):
        pool_labels([0.5], [1], "median")  # type: ignore[arg-type]


def test_jury_pools_members_and_keeps_each_label() -> None:
    jury = JuryJudge(
        FakeEngine(),
        members={"x": Fixed((0.9, 0.7, 0.8)), "y": Fixed((0.3, 0.1, 0.2))},
        weights={"x": 3.0},
    )
    (j,) = jury.judge([comparison()])
    assert j.p_a == pytest.approx((3 * 0.8 + 0.2) / 4)
    assert j.p_first_order == pytest.approx((3 * 0.9 + 0.3) / 4)
    assert j.raw["members"]["y"]["p_a"] == 0.2 and j.raw["members"]["x"]["weight"] == 3.0
    assert j.raw["members"]["x"]["raw"] == {"k": 0} and j.judge_method == "jury"


def test_jury_builds_partial_members_with_the_shared_engine() -> None:
    from functools import partial

    engine = FakeEngine()
    jury = JuryJudge(
        engine,
        members={"pairwise": partial(PairwiseLogprobJudge), "pointwise": PointwiseScoreJudge},
    )
    assert all(m.engine is engine for m in jury.members.values())  # type: ignore[attr-defined]
    (j,) = jury.judge([comparison()])
    assert set(j.raw["members"]) == {"pairwise", "pointwise"}
    assert j.p_a == pytest.approx((j.raw["members"]["pairwise"]["p_a"] + j.raw["members"][
        "pointwise"]["p_a"]) / 2)  # fmt: skip


def test_jury_refuses_bad_weights() -> None:
    with pytest.raises(ValueError, match="not members"):
        JuryJudge(FakeEngine(), members={"x": Fixed()}, weights={"z": 1.0})
    with pytest.raises(ValueError, match="positive"):
        JuryJudge(FakeEngine(), members={"x": Fixed()}, weights={"x": 0.0})
    with pytest.raises(ValueError, match="at least one"):
        JuryJudge(FakeEngine(), members={})


def test_the_jury_config_builds_one_jury_on_one_engine() -> None:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        cfg = compose("run", overrides=["judge=jury", "engine@judge.engine=fake"])
    OmegaConf.resolve(cfg)
    engine = FakeEngine()
    jury = build_judge(cfg.judge, "judge", EngineCache(), engine=engine)
    assert list(jury.members) == ["pairwise", "pointwise", "contrast"]
    assert all(m.engine is engine for m in jury.members.values())
    (j,) = jury.judge([comparison()])
    assert 0.0 < j.p_a < 1.0 and len(j.raw["members"]) == 3


def test_agreement_rate_and_fleiss_kappa() -> None:
    # two raters, four items: agree on 3 of 4
    rows = [[0, 0], [1, 1], [0, 1], [1, 1]]
    # observed 0.75; shares (3/8, 5/8) -> chance 0.53125; kappa = 0.21875 / 0.46875
    assert fleiss_kappa(rows) == pytest.approx(0.21875 / 0.46875)
    assert fleiss_kappa([[0, 0], [0, 0]]) is None  # one category only: no signal
    jury = JuryJudge(
        FakeEngine(),
        members={
            "x": Fixed((0.9, 0.9, 0.9), (0.2, 0.2, 0.2)),
            "y": Fixed((0.6, 0.6, 0.6), (0.7, 0.7, 0.7)),
        },
    )
    judgments = jury.judge([comparison(pid="1"), comparison(pid="2")])
    agreement = jury_agreement(judgments)
    assert agreement is not None and agreement.members == 2
    assert agreement.pairwise_agreement == 0.5
    assert jury_agreement(Fixed((0.9, 0.9, 0.9)).judge([comparison()])) is None


def test_eval_judge_table_has_the_new_judges_columns_and_plots(tmp_path: Path) -> None:
    data = tmp_path / "prefs.jsonl"
    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"question {i}"}],
            "chosen": "a fairly long and careful answer " * (1 + i % 2),
            "rejected": "short",
            "dimension": "helpfulness",
        }
        for i in range(3)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep = tmp_path / "cmp"
    result = subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", "eval-judge",
         f"data={data}", "judge=contrast,structured,jury", "engine@judge.engine=fake",
         "injection_pairs=1", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = {
        r["judge"].split("(")[0]: r for r in json.loads((sweep / "comparison.json").read_text())
    }
    assert set(table) == {"LikelihoodContrastJudge", "StructuredVerdictJudge", "JuryJudge"}
    # the fake engine writes no JSON: every structured verdict is an abstention, recorded as such
    assert table["StructuredVerdictJudge"]["abstention_rate"] == 1.0
    assert table["StructuredVerdictJudge"]["agreement"] == 0.5
    assert table["JuryJudge"]["jury_agreement"] is not None
    assert table["LikelihoodContrastJudge"]["jury_agreement"] is None
    markdown = (sweep / "comparison.md").read_text()
    assert "| abstained | jury agree | jury kappa |" in markdown
    for png in [sweep / "reliability.png", *(sweep / str(k) / "reliability.png" for k in range(3))]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_jury_through_the_real_model() -> None:
    from charter.generators.transformers_engine import TransformersEngine

    engine = TransformersEngine("smollm2-135m-instruct", batch_size=8)
    jury = JuryJudge(
        engine, members={"pairwise": PairwiseLogprobJudge, "pointwise": PointwiseScoreJudge}
    )
    (j,) = jury.judge([comparison()])
    members = j.raw["members"]
    assert set(members["pairwise"]["raw"]["logprobs_a_first"]) == {"A", "B"}
    assert 1.0 <= members["pointwise"]["raw"]["score_a"] <= 9.0
    assert j.p_a == pytest.approx((members["pairwise"]["p_a"] + members["pointwise"]["p_a"]) / 2)

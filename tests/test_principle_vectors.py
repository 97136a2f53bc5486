"""``principle_per=all``: every pair judged under every principle, one score vector per pair.

The plumbing runs on the fake engine (in this process, as tests/test_resume.py does, and once
through the CLI); one slow test goes through the real SmolLM2 judge. Every figure the run
publishes (the combined label, the dataset's score columns, the agreement matrix and the
decisiveness on the card and the page) is recomputed here from the per-principle scores and the
constitution's weights, without charter's own aggregation code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from charter.building import register_resolvers
from charter.commands.run import run_all
from charter.errors import InputError
from charter.exports import export_row, with_score_columns
from charter.judges.debias import combine_orders
from charter.judges.principles import aggregate
from charter.judges.protocol import Comparison
from charter.judges.stage import judge_candidates
from charter.pairs import PairSettings, make_pairs
from charter.records import Judgment
from tests.cli import charter
from tests.fixtures import candidate_set, constitution

REPO = Path(__file__).resolve().parents[1]
FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
# 6 prompts x 4 samples: 6 pairs per prompt, 36 pairs; chunks of at least 5 judge requests
SIZE = ["experiment=smoke", "prompts.limit=6", "generator.num_samples=4", "chunk_size=5"]
HARMLESS = REPO / "constitutions" / "harmless.yaml"


def config(*overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        return compose("run", overrides=[*SIZE, *FAKE, *overrides])


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights_of(path: Path) -> dict[str, float]:
    """Principle id -> weight, read from the constitution file itself."""
    data = yaml.safe_load(path.read_text())
    return {p["id"]: float(p.get("weight", 1.0)) for p in data["principles"]}


def log_odds_mean(scores: dict[str, float], weights: dict[str, float]) -> float:
    """The documented default: sigmoid of the weight-averaged log-odds."""
    total = sum(weights[k] for k in scores)
    x = sum(weights[k] * math.log(p / (1 - p)) for k, p in scores.items()) / total
    return 1 / (1 + math.exp(-x))


def side(p: float) -> int:
    return (p > 0.5) - (p < 0.5)


# --- the stage, with a judge whose opinion is known ------------------------------------------


class ScriptedJudge:
    """Prefers the longer response by an amount that depends on the principle (``lean``), and
    records every call it gets."""

    model_id = "scripted"
    method = "scripted"

    def __init__(self, lean: dict[str, float]) -> None:
        self.lean = lean
        self.calls: list[list[tuple[str, str, str, str]]] = []

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        self.calls.append(
            [(c.prompt_id, c.candidate_a, c.candidate_b, c.principle.id) for c in comparisons]
        )
        out = []
        for c in comparisons:
            signal = self.lean[c.principle.id] * (len(c.response_a) - len(c.response_b))
            combined = combine_orders(signal + 0.3, signal - 0.3)  # a position bias towards A
            out.append(
                Judgment(
                    prompt_id=c.prompt_id,
                    candidate_a=c.candidate_a,
                    candidate_b=c.candidate_b,
                    principle_id=c.principle.id,
                    p_first_order=combined.p_first_order,
                    p_swapped=combined.p_swapped,
                    p_a=combined.p_a,
                    swap_consistent=combined.swap_consistent,
                    judge_model=self.model_id,
                    judge_method=self.method,
                    raw={"lean": self.lean[c.principle.id], "template_sha256": "t"},
                )
            )
        return out


LEAN = {"long": 0.4, "short": -0.1, "flat": 0.0}


def test_every_pair_is_judged_under_every_principle_principle_by_principle() -> None:
    sets = [candidate_set(f"p{i}", "a", "bb", "cccc", "dddddddd") for i in range(3)]
    judge = ScriptedJudge(LEAN)
    judgments, rankings, rejects = judge_candidates(
        sets, judge, constitution(*LEAN), seed=0, chunk_size=1, principle_per="all"
    )
    k, p = 4, len(LEAN)
    # one call per prompt (chunks are cut between prompts), K(K-1)/2 x P requests each
    assert [len(call) for call in judge.calls] == [k * (k - 1) // 2 * p] * 3
    for call in judge.calls:
        assert len(set(call)) == len(call)
        # principle by principle: each principle's requests are one contiguous block
        blocks = [pid for i, (*_, pid) in enumerate(call) if i == 0 or call[i - 1][3] != pid]
        assert blocks == list(LEAN)
    assert len(judgments) == 3 * 6 and rejects == []
    assert {j.principle_id for j in judgments} == {"all"}
    assert [r.order[0] for r in rankings] == ["p0/3", "p1/3", "p2/3"]  # "long" outweighs


@pytest.mark.parametrize("how", ["log_odds", "mean"])
def test_the_label_is_the_documented_aggregation_of_the_principle_scores(how: str) -> None:
    weights = {"long": 1.0, "short": 3.0, "flat": 0.5}
    sets = [candidate_set("p", "a", "bbbbbb", "ccc")]
    judgments, _, _ = judge_candidates(
        sets,
        ScriptedJudge(LEAN),
        constitution(*weights, weights=tuple(weights.values())),
        seed=0,
        principle_per="all",
        principle_aggregation=how,  # type: ignore[arg-type]
    )
    for j in judgments:
        scores = j.raw["principle_scores"]
        assert list(scores) == list(weights)
        assert scores["flat"] == pytest.approx(0.5)
        per = j.raw["per_principle"]
        assert {pid: per[pid]["p_a"] for pid in per} == scores
        if how == "log_odds":
            expected = log_odds_mean(scores, weights)
            firsts = {pid: per[pid]["p_first_order"] for pid in per}
            assert j.p_first_order == pytest.approx(log_odds_mean(firsts, weights))
        else:
            expected = sum(weights[k] * v for k, v in scores.items()) / sum(weights.values())
        assert j.p_a == pytest.approx(expected)
        assert j.raw["principle_aggregation"] == how
        assert j.raw["template_sha256"] == "t"  # equal under every principle: kept on top
    # symmetric: the same pair the other way round gets 1 - p
    scores = judgments[0].raw["principle_scores"]
    turned = {k: 1 - v for k, v in scores.items()}
    assert aggregate(turned, weights, how) == pytest.approx(1 - judgments[0].p_a)  # type: ignore[arg-type]


def test_a_pair_too_long_under_one_principle_is_not_judged_under_any() -> None:
    from charter.generators.fake_engine import FakeEngine
    from charter.judges.pairwise import PairwiseLogprobJudge

    long_text = " ".join(["word"] * 800)
    sets = [candidate_set("p", long_text, long_text + " more", "short answer")]
    tiny = constitution("brief", "wordy")
    wordy = replace(tiny.principles[1], comparison=" ".join(["why"] * 600))
    both = replace(tiny, principles=(tiny.principles[0], wordy))
    judgments, _, rejects = judge_candidates(
        sets, PairwiseLogprobJudge(FakeEngine()), both, seed=0, principle_per="all"
    )
    # p/0 vs p/1 is ~1600 words of responses: it fits under "brief", not under "wordy"
    assert [(j.candidate_a, j.candidate_b) for j in judgments] == [("p/0", "p/2"), ("p/1", "p/2")]
    assert [r.source for r in rejects] == ["p/0 vs p/1"]
    assert "(under 1 of 2 principles)" in rejects[0].reason


def test_a_tournament_reads_the_combined_labels() -> None:
    sets = [candidate_set("p", "a", "bb", "cccc", "dddddddd", "eeeee")]
    judge = ScriptedJudge(LEAN)
    judgments, rankings, _ = judge_candidates(
        sets, judge, constitution(*LEAN), seed=0, principle_per="all", ranking="tournament"
    )
    assert rankings[0].order == ["p/3", "p/4", "p/2", "p/1", "p/0"]
    assert sum(len(call) for call in judge.calls) == len(judgments) * len(LEAN)
    assert {j.principle_id for j in judgments} == {"all"}


def test_a_principle_named_all_is_refused() -> None:
    sets = [candidate_set("p", "a", "bb")]
    with pytest.raises(InputError, match="rename that principle"):
        judge_candidates(
            sets, ScriptedJudge({"all": 1.0}), constitution("all"), seed=0, principle_per="all"
        )


def test_an_unknown_aggregation_stops_before_any_judging() -> None:
    judge = ScriptedJudge(LEAN)
    with pytest.raises(InputError, match="principle_aggregation must be one of log_odds, mean"):
        judge_candidates(
            [candidate_set("p", "a", "bb")],
            judge,
            constitution(*LEAN),
            seed=0,
            principle_per="all",
            principle_aggregation="min",  # type: ignore[arg-type]
        )
    assert judge.calls == []


def test_pairs_carry_the_scores_oriented_to_the_chosen_response() -> None:
    sets = [candidate_set("p", "a", "bbbbbb", "ccc")]
    judgments, rankings, _ = judge_candidates(
        sets, ScriptedJudge(LEAN), constitution(*LEAN), seed=0, principle_per="all"
    )
    settings = PairSettings(strategy="all_pairs_above_margin")
    made = make_pairs(sets, judgments, rankings, settings, constitution_sha256="0" * 64)
    by_key = {frozenset((j.candidate_a, j.candidate_b)): j for j in judgments}
    for pair in made.pairs:
        j = by_key[frozenset((pair.chosen_id, pair.rejected_id))]
        scores = j.raw["principle_scores"]
        flip = pair.chosen_id != j.candidate_a
        assert pair.principle_scores == {k: 1 - v if flip else v for k, v in scores.items()}
        assert pair.principle_ids == list(LEAN)
        assert pair.p_chosen == pytest.approx(
            log_odds_mean(pair.principle_scores, dict.fromkeys(LEAN, 1.0))
        )


def test_score_columns_in_every_export_format_and_turned_round_by_a_human_label() -> None:
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "x"}],
        "rejected": [{"role": "assistant", "content": "y"}],
        "prompt_id": "p",
        "chosen_id": "p/0",
        "rejected_id": "p/1",
        "margin": 0.2,
        "principle_scores": {"kind": 0.8, "brief": 0.3},
    }
    for fmt in ("trl", "jsonl", "openrlhf", "verl"):
        out = export_row(row, fmt)  # type: ignore[arg-type]
        assert out["score_kind"] == 0.8 and out["score_brief"] == 0.3, fmt
        assert "principle_scores" not in out
    # a reviewer swapped chosen and rejected: the judge's scores now read the other way
    reviewed = {**row, "chosen_id": "p/1", "rejected_id": "p/0", "judge_chosen_id": "p/0"}
    assert with_score_columns(reviewed)["score_kind"] == pytest.approx(0.2)
    plain = {k: v for k, v in row.items() if k != "principle_scores"}
    assert with_score_columns(plain) is plain


# --- a whole run on the fake engine ----------------------------------------------------------


@pytest.fixture(scope="module")
def all_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("all")
    run_all(config("principle_per=all", f"cache_dir={root / 'cache'}"), root / "run")
    from charter.commands.shared import write_run_report

    write_run_report(config("principle_per=all"), root / "run")
    return root / "run"


def test_a_run_sends_k_choose_2_times_p_comparisons_per_prompt(all_run: Path) -> None:
    weights = weights_of(HARMLESS)
    summary = json.loads((all_run / "summary.json").read_text())
    judgments = rows(all_run / "judgments.jsonl")
    assert len(judgments) == 6 * 6 == summary["judge"]["comparisons"]
    # every pair under every principle, in both orders, each a chat the engine scored
    assert summary["judge"]["cache"]["misses"] == 6 * 6 * len(weights) * 2
    assert summary["judge"]["principles"]["comparisons"] == 6 * 6 * len(weights)
    for j in judgments:
        assert j["principle_id"] == "all"
        assert list(j["raw"]["principle_scores"]) == list(weights)
        assert j["p_a"] == pytest.approx(log_odds_mean(j["raw"]["principle_scores"], weights))
    # the run's own plan ran the same stage code, so it counted the same requests
    plan = json.loads((all_run / "plan.json").read_text())
    assert plan["comparisons"] == 36
    assert plan["stages"]["judge"]["chats"] == 36 * len(weights) * 2
    assert {pid: c["comparisons"] for pid, c in plan["principles"].items()} == dict.fromkeys(
        sorted(weights), 36
    )
    assert summary["plan_error"]["judge"]["chats"] == 0
    assert summary["plan_error"]["comparisons"] == 0


def test_the_dataset_has_one_score_column_per_principle(all_run: Path) -> None:
    weights = weights_of(HARMLESS)
    pairs = rows(all_run / "pairs.jsonl")
    judgments = {
        frozenset((j["candidate_a"], j["candidate_b"])): j
        for j in rows(all_run / "judgments.jsonl")
    }
    table = pq.read_table(all_run / "pairs.parquet").to_pylist()
    assert len(table) == len(pairs) == 6
    for pair, published in zip(pairs, table, strict=True):
        j = judgments[frozenset((pair["chosen_id"], pair["rejected_id"]))]
        flip = pair["chosen_id"] != j["candidate_a"]
        expected = {pid: 1 - p if flip else p for pid, p in j["raw"]["principle_scores"].items()}
        assert pair["principle_scores"] == pytest.approx(expected)
        assert pair["p_chosen"] == pytest.approx(log_odds_mean(expected, weights))
        assert {k: v for k, v in published.items() if k.startswith("score_")} == pytest.approx(
            {f"score_{pid}": p for pid, p in expected.items()}
        )
        assert "principle_scores" not in published
        assert published["p_chosen"] == pair["p_chosen"]


def test_another_aggregation_rejudges_nothing_and_relabels(all_run: Path, tmp_path: Path) -> None:
    weights = weights_of(HARMLESS)
    cache = all_run.parent / "cache"
    run_all(
        config("principle_per=all", "principle_aggregation=mean", f"cache_dir={cache}"), tmp_path
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["judge"]["cache"] == {"hits": 36 * len(weights) * 2, "misses": 0}
    before = rows(all_run / "judgments.jsonl")
    after = rows(tmp_path / "judgments.jsonl")
    for old, new in zip(before, after, strict=True):
        scores = new["raw"]["principle_scores"]
        assert scores == old["raw"]["principle_scores"]
        mean = sum(weights[k] * p for k, p in scores.items()) / sum(weights.values())
        assert new["p_a"] == pytest.approx(mean) and new["raw"]["principle_aggregation"] == "mean"


def independent_figures(judgments: list[dict[str, Any]], weights: dict[str, float]) -> tuple:
    vectors = [j["raw"]["principle_scores"] for j in judgments]
    ids = list(weights)
    agree = {
        (a, b): sum(side(v[a]) == side(v[b]) for v in vectors) / len(vectors)
        for a in ids
        for b in ids
    }
    decisive = {}
    for pid in ids:
        rest = {k: w for k, w in weights.items() if k != pid}
        flips = sum(
            side(log_odds_mean(v, weights)) != side(log_odds_mean({k: v[k] for k in rest}, rest))
            for v in vectors
        )
        decisive[pid] = flips / len(vectors)
    return agree, decisive


class Cells(HTMLParser):
    """The agreement table's cells: (row principle, column) -> text."""

    def __init__(self) -> None:
        super().__init__()
        self.row = ""
        self.col = ""
        self.cells: dict[tuple[str, str], str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-principle"):
            self.row = str(a["data-principle"])
        if tag == "td":
            self.col = str(a.get("data-agree") or a.get("data-col") or "")

    def handle_data(self, data: str) -> None:
        if self.col and data.strip():
            self.cells.setdefault((self.row, self.col), data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.col = ""


def test_card_and_page_show_agreement_and_decisiveness(all_run: Path) -> None:
    weights = weights_of(HARMLESS)
    judgments = rows(all_run / "judgments.jsonl")
    agree, decisive = independent_figures(judgments, weights)
    assert 0 < min(agree.values()) < 1  # the fake judge's principles disagree, sometimes

    card = (all_run / "README.md").read_text()
    section = card[card.index("## Principles compared") : card.index("## Constitution")]
    lines = {
        m.group(1): m.group(2).split(" | ")
        for m in re.finditer(r"^\| \d+ \| `([a-z0-9-]+)` \| (.*) \|$", section, re.M)
    }
    assert list(lines) == list(weights)
    for pid in weights:
        weight, dec, _, *matrix = lines[pid]
        assert float(weight) == weights[pid]
        assert dec == f"{decisive[pid]:.2f}"
        assert matrix == [f"{agree[(pid, other)]:.2f}" for other in weights]

    page = Cells()
    page.feed((all_run / "report.html").read_text())
    for pid in weights:
        assert float(page.cells[(pid, "decisiveness")]) == pytest.approx(decisive[pid], abs=1e-4)
        for other in weights:
            assert float(page.cells[(pid, other)]) == pytest.approx(agree[(pid, other)], abs=1e-4)
    # the per-principle table: each principle's own comparisons beside the combined row
    assert page.cells[("all", "comparisons")] == "36"
    assert all(page.cells[(pid, "comparisons")] == "36" for pid in weights)


def test_a_principle_that_never_separates_is_named(tmp_path: Path) -> None:
    from charter.judges.principles import principle_agreement

    vectors = [{"a": 0.9, "b": 0.51, "c": 0.2}, {"a": 0.3, "b": 0.47, "c": 0.1}]
    found = principle_agreement(vectors, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert found.flat == ["b"]
    assert found.agreement["a"]["c"] == 0.5 and found.agreement["a"]["b"] == 1.0
    # leaving "a" out flips the first comparison (b and c: 0.51 vs 0.2 -> c wins)
    assert found.decisiveness == {"a": 0.5, "b": 0.0, "c": 0.0}


# --- what must not change --------------------------------------------------------------------

# sha256 of the smoke run's files (SIZE, principle_per=prompt) made before principle_per=all
# existed (charter at 99dbb50). An intended change to the fake engine, the smoke experiment, the
# harmless constitution or the pairwise judge's prompt changes them too: then make them anew.
BEFORE = {
    "judgments.jsonl": "ef910d62c73469a424a6ebd14fc6aec873e77960c1333d87c6c74da652527c22",
    "rankings.jsonl": "784b3a881fdf202090a2b1ce21d0c950ee3f9194ab423ade5005c1963a34579e",
    "pairs.jsonl": "f8c98eb7a9abdcb2c68828ce7a0cddb5de6753f07a61820f77915b50811d27fa",
}


def test_principle_per_prompt_writes_the_bytes_it_wrote_before(tmp_path: Path) -> None:
    run_all(config(f"cache_dir={tmp_path / 'cache'}"), tmp_path / "run")
    for name, digest in BEFORE.items():
        assert hashlib.sha256((tmp_path / "run" / name).read_bytes()).hexdigest() == digest, name
    assert "principle_scores" not in (tmp_path / "run" / "pairs.jsonl").read_text()
    assert "Principles compared" not in (tmp_path / "run" / "README.md").read_text()
    columns = pq.read_table(tmp_path / "run" / "pairs.parquet").column_names
    assert not [c for c in columns if c.startswith("score_")]


# --- through the CLI and through the real model ----------------------------------------------


def test_one_principle_under_all_warns_in_one_line_and_runs(tmp_path: Path) -> None:
    data = yaml.safe_load(HARMLESS.read_text())
    data["principles"] = data["principles"][:1]
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(data, sort_keys=False))
    run = tmp_path / "run"
    result = charter(
        "run",
        *SIZE,
        *FAKE,
        "principle_per=all",
        f"constitution.path={single}",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
        "report.enabled=false",
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "same as principle_per=prompt" in warnings[0], out
    pairs = rows(run / "pairs.jsonl")
    assert pairs and all(
        list(p["principle_scores"]) == [data["principles"][0]["id"]] for p in pairs
    )


@pytest.mark.slow
def test_real_judge_scores_every_principle(tmp_path: Path) -> None:
    # the real SmolLM2 (the smoke experiment's engines), converted once into the session's cache
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        cfg = compose(
            "run",
            overrides=[
                "experiment=smoke",
                "prompts.limit=2",
                "generator.num_samples=2",
                "principle_per=all",
            ],
        )
    run_all(cfg, tmp_path / "run")
    weights = weights_of(HARMLESS)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    judgments = rows(tmp_path / "run" / "judgments.jsonl")
    assert len(judgments) == 2  # 2 prompts, 2 samples: one pair each
    cache = summary["judge"]["cache"]
    assert cache["hits"] + cache["misses"] == 2 * len(weights) * 2  # both orders, every principle
    for j in judgments:
        scores = j["raw"]["principle_scores"]
        assert list(scores) == list(weights) and all(0 < p < 1 for p in scores.values())
        assert len(set(scores.values())) > 1  # a real judge reads the principle
        assert j["p_a"] == pytest.approx(log_odds_mean(scores, weights))
    columns = pq.read_table(tmp_path / "run" / "pairs.parquet").column_names
    assert {f"score_{pid}" for pid in weights} <= set(columns)

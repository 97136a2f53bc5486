"""``charter diff``: flipped, appeared and disappeared pairs, per principle, with soft labels."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from charter.cli import main
from charter.jsonl import write_jsonl_atomic
from charter.records import Judgment
from charter.run_diff import diff_runs, to_markdown


def judgment(a: str, b: str, p_a: float, principle: str, **raw: Any) -> dict[str, Any]:
    return asdict(
        Judgment(
            prompt_id=a.split("/")[0],
            candidate_a=a,
            candidate_b=b,
            principle_id=principle,
            p_first_order=p_a,
            p_swapped=p_a,
            p_a=p_a,
            swap_consistent=True,
            judge_model="fake",
            judge_method="pairwise_logprob",
            raw=raw,
        )
    )


def pair(chosen: str, rejected: str, p: float, principle: str) -> dict[str, Any]:
    return {
        "prompt_id": chosen.split("/")[0],
        "chosen_id": chosen,
        "rejected_id": rejected,
        "p_chosen": p,
        "margin": 2 * p - 1,
        "principle_ids": [principle],
        "constitution_sha256": "c" * 64,
    }


def write_run(path: Path, pairs: list[dict], judgments: list[dict]) -> Path:
    write_jsonl_atomic(path / "pairs.jsonl", pairs)
    write_jsonl_atomic(path / "judgments.jsonl", judgments)
    return path


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    before = write_run(
        tmp_path / "a",
        [
            pair("p1/0", "p1/1", 0.8, "honest"),  # flips
            pair("p2/0", "p2/1", 0.7, "kind"),  # unchanged
            pair("p3/0", "p3/1", 0.6, "kind"),  # disappears
            pair("p4/0", "p4/1", 0.6, "honest"),  # soft label moves
        ],
        [
            judgment("p1/0", "p1/1", 0.8, "honest"),
            judgment("p2/0", "p2/1", 0.7, "kind"),
            judgment("p3/0", "p3/1", 0.6, "kind"),
            judgment("p4/0", "p4/1", 0.6, "honest"),
        ],
    )
    after = write_run(
        tmp_path / "b",
        [
            pair("p1/1", "p1/0", 0.9, "honest"),
            pair("p2/0", "p2/1", 0.7, "kind"),
            pair("p4/0", "p4/1", 0.75, "honest"),
            pair("p5/2", "p5/0", 0.65, "kind"),  # appears
        ],
        [
            # stored the other way round: still the same comparison, p flipped to match
            judgment("p1/1", "p1/0", 0.9, "honest", critique="B is more honest"),
            judgment("p2/0", "p2/1", 0.7, "kind"),
            judgment("p3/0", "p3/1", 0.6, "kind"),
            judgment("p4/0", "p4/1", 0.75, "honest"),
            judgment("p5/0", "p5/2", 0.35, "kind"),
        ],
    )
    return before, after


def test_pairs_are_sorted_into_flipped_changed_appeared_and_disappeared(runs):
    diff = diff_runs(*runs)
    found = {(c.what, c.prompt_id) for c in diff.pairs}
    assert found == {
        ("flipped", "p1"),
        ("changed", "p4"),
        ("disappeared", "p3"),
        ("appeared", "p5"),
    }
    flipped = next(c for c in diff.pairs if c.what == "flipped")
    assert (flipped.before.chosen, flipped.before.p) == ("p1/0", 0.8)
    assert (flipped.after.chosen, flipped.after.p) == ("p1/1", 0.9)
    assert flipped.after.critique == {"critique": "B is more honest"}
    assert flipped.before.critique is None  # the pairwise judge keeps none; absence is fine


def test_judgments_compare_the_same_comparison_whichever_way_it_was_stored(runs):
    diff = diff_runs(*runs)
    by_prompt = {c.prompt_id: c for c in diff.judgments}
    assert set(by_prompt) == {"p1", "p4", "p5"}  # p3's judgment is still there, unchanged
    assert by_prompt["p1"].what == "flipped"
    assert by_prompt["p1"].before.p == pytest.approx(0.8)  # P(p1/0 better) in both runs
    assert by_prompt["p1"].after.p == pytest.approx(0.1)
    assert by_prompt["p4"].what == "changed" and by_prompt["p5"].what == "appeared"


def test_changes_are_grouped_per_principle(runs):
    grouped = diff_runs(*runs).by_principle()
    assert list(grouped) == ["honest", "kind"]
    assert {c.prompt_id for c in grouped["honest"]["pairs"]} == {"p1", "p4"}
    assert {c.prompt_id for c in grouped["kind"]["pairs"]} == {"p3", "p5"}


def test_identical_runs_have_no_differences(runs):
    diff = diff_runs(runs[0], runs[0])
    assert diff.pairs == [] and diff.judgments == []
    assert "No differences." in to_markdown(diff)


def test_cli_prints_markdown_and_writes_json(runs, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["diff", str(runs[0]), str(runs[1])])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "## principle `honest`" in out and "## principle `kind`" in out
    assert "| p1: p1/0 vs p1/1 | flipped | p1/0 > p1/1 (0.800) | p1/1 > p1/0 (0.900) |" in out
    assert "critique in B" in out
    report = json.loads((runs[1] / "diff.json").read_text())
    assert report["counts"]["pair_changes"] == {
        "flipped": 1,
        "changed": 1,
        "disappeared": 1,
        "appeared": 1,
    }
    assert report["principles"]["honest"]["pairs"][0]["after"]["p"] == 0.9


def test_cli_out_option_and_a_missing_run_is_one_line(runs, tmp_path, capsys):
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_:
        main(["diff", str(runs[0]), str(runs[1]), f"out={out}"])
    assert exit_.value.code == 0 and out.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["diff", str(runs[0]), str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl not found" in err and "Traceback" not in err

"""A random audit of a run's pairs and the label-accuracy estimate its human labels give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.review import ReviewSettings, build_queue
from tests.cli import charter


def pair(pid: str, p: float) -> dict[str, object]:
    return {
        "prompt_id": pid,
        "chosen_id": f"{pid}/0",
        "rejected_id": f"{pid}/1",
        "p_chosen": p,
        "margin": 2 * p - 1,
        "swap_consistent": True,
    }


def test_a_random_sample_is_seeded_and_not_the_least_sure() -> None:
    rows = [pair(f"p{i:02d}", 0.5 + i / 100) for i in range(40)]
    least_sure = build_queue(rows, ReviewSettings(budget=8))
    audit = build_queue(rows, ReviewSettings(budget=8, sample="random", seed=3))
    again = build_queue(rows, ReviewSettings(budget=8, sample="random", seed=3))
    other = build_queue(rows, ReviewSettings(budget=8, sample="random", seed=4))
    assert [q.review_id for q in audit] == [q.review_id for q in again]
    assert [q.review_id for q in audit] != [q.review_id for q in other]
    assert {q.selection for q in audit} == {"random"}
    assert {q.selection for q in least_sure} == {"uncertainty"}
    assert [q.prompt_id for q in least_sure] == [f"p{i:02d}" for i in range(8)]
    assert [q.prompt_id for q in audit] != [q.prompt_id for q in least_sure]
    assert len({q.review_id for q in audit}) == 8


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 prompts judged by the fake engine: enough pairs for an audit."""
    root = tmp_path_factory.mktemp("audit")
    run = root / "run"
    result = charter(
        "run",
        "engine@generator.engine=fake",
        "engine@judge.engine=fake",
        "generator.num_samples=2",
        f"hydra.run.dir={run}",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return run


def label(run: Path, agree_with_judge: list[bool]) -> Path:
    """Label the exported queue: agree with the judge's pick where asked, else pick the other."""
    queue = [json.loads(line) for line in (run / "review" / "queue.jsonl").open()]
    path = run / "labels.jsonl"
    with path.open("w") as fh:
        for q, agree in zip(queue, agree_with_judge, strict=False):
            other = "b" if q["judge_choice"] == "a" else "a"
            answer = q["judge_choice"] if agree else other
            fh.write(json.dumps({"review_id": q["review_id"], "human_label": answer}) + "\n")
    return path


def test_a_random_audit_gives_an_estimate_in_report_and_card(quickstart_run: Path) -> None:
    run = quickstart_run
    result = charter("review", "export", str(run), "budget=12", "sample=random", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    assert "random audit" in result.stdout + result.stderr
    answers = [True] * 9 + [False] * 3
    result = charter("review", "import", str(run), str(label(run, answers)), cwd=run.parent)
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "reviewed" / "report.json").read_text())
    estimate = report["accuracy_estimate"]
    assert estimate["available"] and estimate["audited"] == 12
    audit = estimate["audit_only"]
    assert audit["estimate"] == pytest.approx(0.75)
    assert audit["low"] < 0.75 < audit["high"]
    assert estimate["ppi"]["low"] <= estimate["ppi"]["estimate"] <= estimate["ppi"]["high"]
    assert estimate["judge_probabilities"] == "raw"
    card = (run / "upload" / "README.md").read_text()
    assert "## Label accuracy" in card and "random audit of 12 pairs" in card


def test_labels_from_the_uncertainty_queue_give_no_estimate(quickstart_run: Path) -> None:
    run = quickstart_run
    result = charter("review", "export", str(run), "budget=6", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    result = charter("review", "import", str(run), str(label(run, [True] * 6)), cwd=run.parent)
    assert result.returncode == 0, result.stderr
    estimate = json.loads((run / "reviewed" / "report.json").read_text())["accuracy_estimate"]
    assert estimate["available"] is False
    assert "cannot give an unbiased estimate" in estimate["reason"]
    assert "No estimate" in (run / "upload" / "README.md").read_text()


def test_a_bad_sample_value_is_one_line(quickstart_run: Path) -> None:
    run = quickstart_run
    result = charter("review", "export", str(run), "sample=stratified", cwd=run.parent)
    assert result.returncode == 2
    assert "sample must be 'uncertainty' or 'random'" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

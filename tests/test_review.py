"""The human review queue: least-sure pairs out, human labels back in, agreement reported."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset

from charter.errors import InputError
from charter.review import ReviewSettings, build_queue, export_queue, review_id
from charter.review_labels import import_labels, read_labels
from tests.test_ray import make_real_local_run

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]


def charter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def pair(pid: str, margin: float, consistent: bool = True, **extra) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"q {pid}"}],
        "chosen": [{"role": "assistant", "content": f"good {pid}"}],
        "rejected": [{"role": "assistant", "content": f"bad {pid}"}],
        "prompt_id": pid,
        "chosen_id": f"{pid}/0",
        "rejected_id": f"{pid}/1",
        "p_chosen": (1 + margin) / 2,
        "margin": margin,
        "swap_consistent": consistent,
        "judge_model": "judge",
        **extra,
    }


def test_queue_ranks_by_the_documented_uncertainty_score() -> None:
    rows = [
        pair("sure", 0.9),
        pair("close", 0.05),
        pair("flipped", 0.6, consistent=False),
        pair("jury", 0.8, jury=[0.9, 0.3, 0.2]),  # 2 of 3 jurors prefer the rejected
    ]
    queue = build_queue(rows, ReviewSettings(budget=3))
    # scores: jury 0.2 + 2*(2/3) = 1.53; flipped 0.4 + 1 = 1.4; close 0.95; sure 0.1 (left out)
    assert [q.prompt_id for q in queue] == ["jury", "flipped", "close"]
    assert queue[0].uncertainty == pytest.approx(0.2 + 2 * 2 / 3, abs=1e-6)
    assert "swap-inconsistent" in queue[1].reasons
    # the judge's pick is shown first for some pairs and second for others (no anchoring)
    many = build_queue([pair(f"p{i}", 0.5) for i in range(20)], ReviewSettings(budget=20))
    assert {q.judge_choice for q in many} == {"a", "b"}


def test_jury_votes_come_from_the_judgment_of_the_same_two_candidates(tmp_path: Path) -> None:
    from charter.review import with_jury_votes

    judgments = tmp_path / "judgments.jsonl"
    members = {"x": {"p_a": 0.2}, "y": {"p_a": 0.9}}  # p_a: P(candidate_a better)
    row = {"candidate_a": "p/1", "candidate_b": "p/0", "raw": {"members": members}}
    judgments.write_text(json.dumps(row) + "\n")
    (voted,) = with_jury_votes([pair("p", 0.4)], judgments)  # chosen p/0, rejected p/1
    assert voted["jury"] == pytest.approx([0.8, 0.1])
    queue = build_queue([voted], ReviewSettings())
    assert "jury split 0.50" in queue[0].reasons


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review_run")
    args = ["run", "experiment=smoke", *FAKE, "prompts.limit=12", "generator.num_samples=3"]
    result = charter(*args, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.fixture
def run(fake_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fake_run, tmp_path / "run"))


def queue_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "review" / "queue.jsonl").open()]


def test_round_trip_human_labels_win_and_agreement_is_reported(run: Path) -> None:
    result = charter("review", "export", str(run), "budget=4", cwd=run.parent)
    assert result.returncode == 0, result.stderr
    assert "4 of 12 pairs sent to people, 8 kept" in result.stdout + result.stderr
    to_label = [json.loads(line) for line in (run / "review" / "to_label.jsonl").open()]
    queue = {q["review_id"]: q for q in queue_rows(run)}
    assert [r["review_id"] for r in to_label] == list(queue)
    assert all(r["human_label"] == "" and "judge" not in json.dumps(r) for r in to_label)
    # agree, agree, disagree, tie
    answers = []
    for k, row in enumerate(to_label):
        judge = queue[row["review_id"]]["judge_choice"]
        other = "b" if judge == "a" else "a"
        answers.append({**row, "human_label": [judge, judge, other, "tie"][k]})
    labelled = run.parent / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(a) + "\n" for a in answers))

    result = charter("review", "import", str(run), str(labelled), cwd=run.parent)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[0])
    assert report["judge_human_agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["pairs_sent_to_humans"] == 4 and report["pairs_kept_with_judge_label"] == 8
    assert report["ties_dropped"] == 1 and report["judge_flipped_by_humans"] == 1

    original = {review_id(r): r for r in map(json.loads, (run / "pairs.jsonl").open())}
    merged = {r["review_id"]: r for r in map(json.loads, (run / "reviewed/pairs.jsonl").open())}
    assert len(merged) == 11  # the tie is dropped, and kept with its reason
    rejects = [json.loads(line) for line in (run / "reviewed/rejects.jsonl").open()]
    assert [r["source"] for r in rejects] == [answers[3]["review_id"]]
    flipped = merged[answers[2]["review_id"]]
    before = original[answers[2]["review_id"]]
    assert flipped["chosen"] == before["rejected"] and flipped["rejected"] == before["chosen"]
    assert flipped["judge_chosen_id"] == before["chosen_id"] and flipped["p_chosen"] == 1.0
    assert flipped["judge_p_chosen"] == before["p_chosen"] and flipped["label_source"] == "human"
    kept = merged[answers[0]["review_id"]]
    assert kept["chosen_id"] == original[answers[0]["review_id"]]["chosen_id"]
    assert sum(r["label_source"] == "human" for r in merged.values()) == 3
    untouched = [r for rid, r in merged.items() if rid not in queue]
    assert all(r["label_source"] == "judge" for r in untouched) and len(untouched) == 8
    assert all(r["p_chosen"] == original[r["review_id"]]["p_chosen"] for r in untouched)

    # republished: the upload folder now carries the reviewed rows
    upload = run / "upload"
    splits = [
        load_dataset("parquet", data_files=str(p), split="train") for p in upload.glob("data/*")
    ]
    assert sum(len(s) for s in splits) == 11
    assert all("label_source" in s.column_names for s in splits)
    assert "3 of 11 pairs carry a human label" in (upload / "README.md").read_text()


def test_csv_and_argilla_labels_import(run: Path) -> None:
    dest, queue, _ = export_queue(run, ReviewSettings(budget=3, format="csv"))
    with dest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["review_id"] for r in rows] == [q.review_id for q in queue]
    rows[0]["human_label"] = queue[0].judge_choice
    with dest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _, report = import_labels(run, dest)
    assert report["labelled"] == 1 and report["judge_human_agreement"] == 1.0

    folder, queue, _ = export_queue(run, ReviewSettings(budget=3, format="argilla"))
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["questions"][0]["labels"] == ["a", "b", "tie"]
    records = [json.loads(line) for line in (folder / "records.jsonl").open()]
    assert {"id", "prompt", "response_a", "response_b", "judge_suggestion"} <= set(records[0])
    # what Argilla's records.to_list(flatten=True) gives back after two annotators answered
    back = [
        {"id": r["id"], "preference.responses": [other, other]}
        for r in records
        for other in ["b" if r["judge_suggestion"] == "a" else "a"]
    ]
    labelled = run.parent / "argilla_out.jsonl"
    labelled.write_text("".join(json.dumps(b) + "\n" for b in back))
    _, report = import_labels(run, labelled)
    assert report["labelled"] == 3 and report["judge_human_agreement"] == 0.0


def test_bad_label_files_name_file_line_and_field(run: Path) -> None:
    export_queue(run, ReviewSettings(budget=2))
    queue = {q["review_id"]: q for q in queue_rows(run)}
    from charter.review import QueueItem

    items = {rid: QueueItem(**q) for rid, q in queue.items()}
    first = next(iter(queue))
    bad = run.parent / "bad.jsonl"
    bad.write_text(json.dumps({"review_id": first, "human_label": "maybe"}) + "\n")
    with pytest.raises(InputError) as err:
        read_labels(bad, items)
    assert str(err.value).startswith(f"{bad}:1 [human_label]")
    bad.write_text(
        json.dumps({"review_id": first, "human_label": "a"})
        + "\n"
        + json.dumps({"review_id": "nope", "human_label": "a"})
        + "\n"
    )
    with pytest.raises(InputError) as err:
        read_labels(bad, items)
    assert str(err.value).startswith(f"{bad}:2 [review_id]")
    result = charter("review", "import", str(run), str(bad), cwd=run.parent)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}:2 [review_id]" in result.stdout + result.stderr


@pytest.mark.slow
def test_review_and_publish_a_real_model_run(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The loop on SmolLM2 output: review export, labels back, agreement, publish dry run."""
    run = Path(shutil.copytree(make_real_local_run(tmp_path_factory), tmp_path / "run"))
    result = charter("review", "export", str(run), "budget=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    to_label = [json.loads(line) for line in (run / "review" / "to_label.jsonl").open()]
    assert len(to_label) == 1 and to_label[0]["response_a"] != to_label[0]["response_b"]
    labelled = tmp_path / "labels.jsonl"
    labelled.write_text("".join(json.dumps({**r, "human_label": "a"}) + "\n" for r in to_label))
    result = charter("review", "import", str(run), str(labelled), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[0])
    assert report["labelled"] == 1 and report["pairs_in_run"] == 2
    assert report["pairs_sent_to_humans"] == 1 and report["pairs_kept_with_judge_label"] == 1
    merged = [json.loads(line) for line in (run / "reviewed/pairs.jsonl").open()]
    assert [r["label_source"] for r in merged].count("human") == 1
    result = charter("publish", str(run), "repo_id=org/real", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = load_dataset("parquet", data_files=str(run / "upload/data/*.parquet"), split="train")
    assert len(rows) == 2 and rows[0]["judge_model"] == "smollm2-135m-instruct"

"""SIGKILL during the commands around the pipeline: a critique/revision run and a review import.

As for ``charter run`` (``test_run_faults.py``), a killed command rerun the same way must leave
the same bytes an undisturbed one does.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.faults.test_run_faults import FAKE, start, wait

REVISE = ["run", "experiment=cai_sl", *FAKE, "prompts.limit=6", "chunk_size=2", "report=false"]
REVISE_OUTPUTS = ("revisions.jsonl", "judgments.jsonl", "pairs.jsonl", "sft.jsonl", "README.md")


@pytest.mark.parametrize("fault", ["kill:generate:3", "kill:replace:revisions.jsonl"])
def test_a_killed_revise_run_resumes_to_identical_outputs(tmp_path: Path, fault: str) -> None:
    clean, run = tmp_path / "clean", tmp_path / "run"
    code, out = wait(
        start([*REVISE, f"cache_dir={tmp_path / 'c1'}", f"hydra.run.dir={clean}"], tmp_path)
    )
    assert code == 0, out
    args = [*REVISE, f"cache_dir={tmp_path / 'c2'}", f"hydra.run.dir={run}"]
    code, out = wait(start(args, tmp_path, fault))
    assert code == -signal.SIGKILL, out
    code, out = wait(start(["run", f"run_dir={run}"], tmp_path))
    assert code == 0, out
    for name in REVISE_OUTPUTS:
        assert (run / name).read_bytes() == (clean / name).read_bytes(), name


def test_a_killed_review_import_reruns_to_identical_outputs(tmp_path: Path) -> None:
    base = tmp_path / "base"
    args = [
        "run",
        "experiment=smoke",
        *FAKE,
        "prompts.limit=6",
        "generator.num_samples=4",
        "pairs=all_pairs_above_margin",
        f"cache_dir={tmp_path / 'c'}",
        "report=false",
    ]
    code, out = wait(start([*args, f"hydra.run.dir={base}"], tmp_path))
    assert code == 0, out
    code, out = wait(start(["review", "export", str(base), "budget=4"], tmp_path))
    assert code == 0, out
    rows = [json.loads(line) for line in (base / "review" / "to_label.jsonl").open()]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps({**r, "human_label": "a"}) + "\n" for r in rows))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    shutil.copytree(base, clean)
    shutil.copytree(base, killed)
    code, out = wait(start(["review", "import", str(clean), str(labelled)], tmp_path))
    assert code == 0, out
    # killed between its files: the merged pairs written, their rejects about to be renamed
    fault = "kill:replace:reviewed/rejects.jsonl"
    code, out = wait(start(["review", "import", str(killed), str(labelled)], tmp_path, fault))
    assert code == -signal.SIGKILL, out
    assert (killed / "reviewed" / "pairs.jsonl").exists()
    assert not (killed / "reviewed" / "report.json").exists()
    code, out = wait(start(["review", "import", str(killed), str(labelled)], tmp_path))
    assert code == 0, out
    for path in sorted((clean / "reviewed").rglob("*")):
        if path.is_file():
            other = killed / "reviewed" / path.relative_to(clean / "reviewed")
            assert other.read_bytes() == path.read_bytes(), path.name
    leftovers = [p.name for p in killed.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []

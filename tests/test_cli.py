"""The command line, end to end, with the fake engine (seconds) and through Hydra for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from charter.cli import main, with_run_overrides

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]


def charter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake_run")
    # The judge's strong position bias makes every comparison swap-inconsistent (used below).
    biased = "+judge.engine.bias=6.0"
    result = charter(
        "run", "experiment=smoke", *FAKE, biased, f"hydra.run.dir={root / 'run'}", cwd=root
    )
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_run_writes_every_output_and_a_valid_dataset(fake_run: Path) -> None:
    for name in (
        "candidates.jsonl",
        "judgments.jsonl",
        "rankings.jsonl",
        "pairs.jsonl",
        "rejects.jsonl",
        "pairs.parquet",
        "README.md",
        "summary.json",
        ".hydra/config.yaml",
    ):
        assert (fake_run / name).exists(), name
    dataset = load_from_disk(str(fake_run / "dataset"))
    assert {"prompt", "chosen", "rejected", "p_chosen", "margin"} <= set(dataset.column_names)
    assert len(dataset) == 3  # smoke: 3 prompts, best vs worst
    card = (fake_run / "README.md").read_text()
    assert card.startswith("---\n") and "constitution sha256" in card


def test_stage_command_reuses_the_runs_config_and_applies_new_overrides(fake_run: Path) -> None:
    new = ["pairs=all_pairs_above_margin", "pairs.min_margin=0.0"]
    result = charter("pairs", f"run_dir={fake_run}", *new, cwd=fake_run.parent)
    assert result.returncode == 0, result.stderr
    summary = json.loads((fake_run / "summary.json").read_text())
    # the biased fake judge is never swap-consistent, and this strategy drops inconsistent pairs
    assert summary["pairs"]["pairs"] == 0
    assert summary["pairs"]["dropped"] == {"swap-inconsistent": 3}
    rejects = [json.loads(line) for line in (fake_run / "rejects.jsonl").read_text().splitlines()]
    assert sum(r["stage"] == "pairs" for r in rejects) == 3


def test_overrides_of_a_run_are_replayed_before_new_ones(tmp_path: Path) -> None:
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text("- experiment=smoke\n- judge.combine=probability\n")
    args = with_run_overrides([f"run_dir={tmp_path}", "judge.combine=log_odds"])
    assert args == [
        "experiment=smoke",
        f"run_dir={tmp_path}",
        "judge.combine=log_odds",
        f"hydra.run.dir={tmp_path}",
    ]


def test_stage_command_without_run_dir_is_one_clear_line(tmp_path: Path) -> None:
    result = charter("judge", cwd=tmp_path)
    assert result.returncode == 2
    assert "run_dir=" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_missing_prompts_file_names_the_file(tmp_path: Path) -> None:
    result = charter("run", "experiment=smoke", *FAKE, "prompts.path=nowhere.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_malformed_prompt_rows_are_rejected_with_file_and_line(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"id": "a", "prompt": "Say hi."}\n'
        "{not json\n"
        '{"id": "c", "prompt": "   "}\n'
        '{"id": "d", "question": "wrong field"}\n'
        '{"id": "e", "prompt": "Say bye."}\n'
    )
    run = tmp_path / "run"
    result = charter(
        "run",
        "experiment=smoke",
        *FAKE,
        f"prompts.path={prompts}",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    sources = {r["source"]: r for r in rejects}
    assert set(sources) == {f"{prompts}:2", f"{prompts}:3", f"{prompts}:4"}
    assert sources[f"{prompts}:4"]["field"] == "prompt"
    kept = [json.loads(line)["prompt_id"] for line in (run / "candidates.jsonl").open()]
    assert kept == ["a", "e"]


def test_constitution_typo_stops_the_run_naming_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nversion: '1'\ndescription: d\nprinciples:\n"
        "  - id: x\n    comparision: Which?\n    critique_request: c\n    revision_request: r\n"
    )
    result = charter("run", "experiment=smoke", *FAKE, f"constitution.path={bad}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}:5 [principles[0].comparison]" in result.stderr
    assert "2 problems" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/*/*/candidates.jsonl"))  # stopped before sampling


def test_validate_reports_every_problem_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\nversion: '1'\nprinciples: []\n")
    result = charter("validate", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 3  # name pattern, missing description, empty principles
    good = charter(
        "validate", "constitutions/harmless.yaml", "constitutions/helpful.yaml", cwd=tmp_path
    )
    assert good.returncode == 0, good.stdout
    assert good.stdout.count(": ok (") == 2


def test_unknown_model_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    result = charter(
        "run", "experiment=smoke", "generator.engine.model=no-such-model", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "Traceback" not in result.stderr


def test_a_judge_model_that_is_not_there_is_refused_before_any_generation(tmp_path: Path) -> None:
    # the policy (SmolLM2) is fine; only the judge, used minutes later, names a missing file
    run = tmp_path / "run"
    result = charter(
        "train",
        "experiment=loop_signal",
        f"judge.engine.model={tmp_path / 'missing.gguf'}",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "[judge.engine.model]" in line and "missing.gguf" in line and "\n" not in line
    assert not (run / "data" / "candidates.jsonl").exists()


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "generate", "judge", "pairs", "validate", "eval-judge"):
        assert f"  {command}" in out


def test_multirun_sweeps_over_constitutions(tmp_path: Path) -> None:
    result = charter(
        "run",
        "-m",
        "experiment=smoke",
        *FAKE,
        "constitution=harmless,helpful",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    hashes = {
        json.loads((tmp_path / "sweep" / str(i) / "pairs.jsonl").open().readline())[
            "constitution_sha256"
        ]
        for i in (0, 1)
    }
    assert len(hashes) == 2


def test_eval_judge_compares_judges_in_one_table(tmp_path: Path) -> None:
    data = tmp_path / "prefs.jsonl"
    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"question {i}"}],
            "chosen": "a fairly long and careful answer " * (1 + i % 2),
            "rejected": "short",
            "dimension": "helpfulness",
        }
        for i in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep = tmp_path / "cmp"
    result = charter(
        "eval-judge",
        f"data={data}",
        "judge=pairwise,pointwise",
        "engine@judge.engine=fake",
        "injection_pairs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    table = json.loads((sweep / "comparison.json").read_text())
    assert [row["judge"].split("(")[0] for row in table] == [
        "PairwiseLogprobJudge",
        "PointwiseScoreJudge",
    ]
    for row in table:
        assert row["n"] == 4 and row["length_baseline_agreement"] == 1.0
        assert row["injection_flip_rate"] is not None and 0.0 <= row["ece"] <= 0.5
    assert "| judge |" in (sweep / "comparison.md").read_text()
    injected = (sweep / "0" / "injection_verdicts.jsonl").read_text().splitlines()
    assert len(injected) == 2 * 6  # 2 pairs x 6 attacks

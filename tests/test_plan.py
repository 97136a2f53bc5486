"""``charter plan`` and budgets: the plan predicts a run's requests and cached calls exactly, an
edit to one principle shows as new calls for that principle only, and a budget stops a run
before it passes the limit, resumably, with the same outputs as an unlimited run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.cli import charter, one_error_line

REPO = Path(__file__).resolve().parents[1]
FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
SIZE = ["experiment=smoke", "prompts.limit=6", "generator.num_samples=4", "chunk_size=6"]


def plan_of(out: Path) -> dict:
    return json.loads(next(out.glob("outputs/plan/*/plan.json")).read_text())


def test_plan_predicts_requests_and_cache_exactly(tmp_path: Path) -> None:
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = charter("plan", *SIZE, *FAKE, cache, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    before = plan_of(tmp_path)
    # 6 prompts x 4 samples: 6 chats asking for 4 samples each; 6 x 6 comparisons in 2 orders
    assert before["prompts_kept"] == 6
    assert before["stages"]["generate"]["chats"] == 6
    assert before["stages"]["generate"]["new_units"] == 24
    assert before["stages"]["generate"]["cached"] == 0
    assert before["comparisons"] <= 36

    run_dir = tmp_path / "run"
    ran = charter("run", *SIZE, *FAKE, cache, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    # the run planned itself first; with nothing cached, its plan is exact
    assert summary["plan_error"]["generate"] == {"chats": 0, "cached": 0, "seconds_ratio": None}
    assert summary["plan_error"]["judge"]["chats"] == 0
    assert summary["plan_error"]["comparisons"] == 0
    assert summary["judge"]["comparisons"] == before["comparisons"]
    assert summary["judge"]["cache"]["misses"] == before["stages"]["judge"]["chats"]

    shutil.rmtree(tmp_path / "outputs")
    again = charter("plan", *SIZE, *FAKE, cache, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    after = plan_of(tmp_path)
    for stage in ("generate", "judge"):
        assert after["stages"][stage]["cached"] == after["stages"][stage]["chats"] > 0
        assert after["stages"][stage]["new_units"] == 0
        assert after["stages"][stage]["seconds"] == 0
    # throughput was recorded beside the cache, so a new seed's plan has a time estimate
    assert (tmp_path / "cache" / "throughput.jsonl").exists()
    shutil.rmtree(tmp_path / "outputs")
    other = charter("plan", *SIZE, *FAKE, cache, "seed=1", "plan.probe=false", cwd=tmp_path)
    assert other.returncode == 0, other.stdout + other.stderr
    seeded = plan_of(tmp_path)
    assert seeded["stages"]["generate"]["seconds"] is not None
    assert "earlier runs, same engine" in seeded["stages"]["generate"]["seconds_source"]


def test_one_principle_edit_shows_only_that_principle_as_new(tmp_path: Path) -> None:
    cache = f"cache_dir={tmp_path / 'cache'}"
    ran = charter("run", *SIZE, *FAKE, cache, "report=false", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    text = yaml.safe_load((REPO / "constitutions" / "harmless.yaml").read_text())
    edited = text["principles"][0]["id"]
    text["principles"][0]["comparison"] += " Prefer the response that explains its refusal."
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    shutil.rmtree(tmp_path / "outputs")
    planned = charter("plan", *SIZE, *FAKE, cache, f"constitution.path={path}", cwd=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = plan_of(tmp_path)
    assert plan["stages"]["generate"]["cached"] == plan["stages"]["generate"]["chats"]
    principles = plan["principles"]
    assert edited in principles, "the smoke prompts should draw the edited principle"
    for pid, count in principles.items():
        new = count["chats"] - count["cached"]
        assert new == (count["chats"] if pid == edited else 0), (pid, count)
    assert (
        plan["stages"]["judge"]["chats"] - plan["stages"]["judge"]["cached"]
        == (principles[edited]["chats"])
    )


def test_budget_stops_cleanly_and_resumes_to_the_unlimited_result(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    ok = charter(
        "run",
        *SIZE,
        *FAKE,
        f"cache_dir={tmp_path / 'c1'}",
        f"hydra.run.dir={clean}",
        "report=false",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    run_dir = tmp_path / "limited"
    cache = f"cache_dir={tmp_path / 'c2'}"
    args = ["run", *SIZE, *FAKE, cache, f"hydra.run.dir={run_dir}"]
    stopped = charter(*args, "budget.max_tokens=900", cwd=tmp_path)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 3, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.startswith("stopped by budget")]
    assert len(lines) == 1 and "budget.max_tokens=900" in lines[0], out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["budget_stop"]["tokens"] <= 900
    assert not (run_dir / "pairs.jsonl").exists()
    assert "stopped by budget" in (run_dir / "report.html").read_text()  # what exists, shown

    resumed = charter("run", f"run_dir={run_dir}", "budget.max_tokens=null", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for name in ("candidates.jsonl", "judgments.jsonl", "pairs.jsonl"):
        assert (run_dir / name).read_bytes() == (clean / name).read_bytes(), name


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("budget.max_seconds=-1", "budget.max_seconds"),
        ("budget.max_tokens=lots", "budget.max_tokens"),
        ("budget.max_cost=0", "budget.max_cost"),
        ("+budget.max_dollars=3", "budget.max_dollars"),
    ],
)
def test_a_budget_that_is_not_a_positive_number_is_one_line(
    tmp_path: Path, override: str, key: str
) -> None:
    result = charter("run", *SIZE, *FAKE, f"cache_dir={tmp_path}", override, cwd=tmp_path)
    assert key in one_error_line(result)
    assert not list(tmp_path.glob("outputs/*/*/candidates.jsonl"))


def test_report_of_a_missing_run_is_one_line(tmp_path: Path) -> None:
    result = charter("report", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert "nowhere" in one_error_line(result)
    bad = charter("report", str(tmp_path), "max_pairs=-3", cwd=tmp_path)
    assert "max_pairs" in one_error_line(bad)


@pytest.mark.slow
def test_plan_matches_a_real_model_run(tmp_path: Path) -> None:
    """The plan computes the real engine's cache keys without loading it: its request counts
    match the run exactly, and after the run every planned call is cached."""
    size = ["experiment=smoke", "prompts.limit=3", "generator.num_samples=2"]
    cache = f"cache_dir={tmp_path / 'cache'}"
    run_dir = tmp_path / "run"
    ran = charter("run", *size, cache, f"hydra.run.dir={run_dir}", "report=false", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["plan_error"]["generate"]["chats"] == 0
    assert summary["plan_error"]["generate"]["cached"] == 0
    assert summary["plan_error"]["judge"]["chats"] == 0
    assert summary["plan_error"]["comparisons"] == 0
    planned = charter("plan", *size, cache, "plan.probe=false", cwd=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = plan_of(tmp_path)
    for stage in ("generate", "judge"):
        assert plan["stages"][stage]["chats"] == plan["stages"][stage]["cached"] > 0, stage


def test_cost_is_planned_from_price_per_mtok_and_max_cost_stops_the_run(tmp_path: Path) -> None:
    """An OpenAI-compatible engine's prices give the plan's cost, and ``budget.max_cost`` stops
    a run on a (scripted, local) server before it would pass the limit."""
    from tests.faults.openai_server import FaultScript, openai_run_args, serve

    prices = [
        f"{role}.engine.price_per_mtok={{input: 1000, output: 4000}}"
        for role in ("generator", "judge")
    ]
    script = FaultScript()
    script.top_logprobs = [("A", -0.4), ("B", -1.2)]
    for base_url in serve(script):
        args = [*openai_run_args(base_url, tmp_path, "report=false"), *prices]
        planned = charter("plan", *args[1:], "plan.probe=false", cwd=tmp_path)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        plan = json.loads((tmp_path / "run" / "plan.json").read_text())  # its hydra.run.dir
        gen = plan["stages"]["generate"]
        # rough token counts (no tokenizer): input at 1000 and at most max_new_tokens per
        # sample of output at 4000 per million
        want = (gen["new_prompt_tokens"] * 1000 + gen["max_new_output_tokens"] * 4000) / 1e6
        assert gen["cost"] == pytest.approx(want, rel=1e-6) and want > 0
        assert plan["cost"] > gen["cost"]  # the judge's calls cost too

        limit = gen["cost"] / 2
        stopped = charter(*args, f"budget.max_cost={limit}", "chunk_size=1", cwd=tmp_path)
        out = stopped.stdout + stopped.stderr
        assert stopped.returncode == 3, out
        assert "budget.max_cost" in out and "Traceback" not in out
        spent = json.loads((tmp_path / "run" / "summary.json").read_text())["budget_stop"]
        assert 0 < spent["cost"] <= limit

"""Stages that stream window by window: the same bytes as one window, flat memory's
preconditions (lazy reading, cuts at engine-call boundaries), and bad rows at scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.constitution import load_constitution
from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.generators.stage import generate_candidates
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.stage import judge_candidates, judge_parts
from charter.prompts import load_prompts, prompt_windows
from charter.records import PromptRecord
from charter.streaming import in_step, judge_windows
from tests.cli import SMALL_FAKE_RUN, charter
from tests.engine_fixtures import SelfBatching

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("candidates.jsonl", "judgments.jsonl", "rankings.jsonl", "pairs.jsonl", "rejects.jsonl")


class CallLog(FakeEngine):
    """A fake engine that remembers every call's chats."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list] = []

    def choice_logprobs(self, chats, choices):
        self.calls.append(list(chats))
        return super().choice_logprobs(chats, choices)


def _sets(n: int, k: int = 4):
    prompts = [
        PromptRecord(f"p{i}", [{"role": "user", "content": f"question {i}"}], f"x:{i}")
        for i in range(n)
    ]
    sampling = SamplingSettings(max_new_tokens=12)
    return generate_candidates(prompts, FakeEngine(), sampling, k)[0]


@pytest.mark.parametrize("ranking", ["all_pairs", "knockout"])
def test_windows_give_the_whole_runs_rows_and_all_pairs_the_same_engine_calls(ranking):
    constitution = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    sets = _sets(23)
    whole_engine, windowed_engine = CallLog(), CallLog()
    whole = judge_candidates(
        sets,
        PairwiseLogprobJudge(whole_engine),
        constitution,
        seed=1,
        chunk_size=7,
        ranking=ranking,
    )
    judge = PairwiseLogprobJudge(windowed_engine)
    parts = [
        judge_parts(w, judge, constitution, seed=1, chunk_size=7, ranking=ranking)
        for w in judge_windows(
            sets, window=3, chunk_size=7, at_call_boundaries=ranking == "all_pairs"
        )
    ]
    assert len(parts) > 3
    assert [j for p in parts for j in p[0]] == whole[0]
    assert [r for p in parts for r in p[1]] == whole[1]
    rejects = [r for p in parts for r in p[2]] + [r for p in parts for r in p[3]]
    assert rejects == whole[2]
    if ranking == "all_pairs":
        assert windowed_engine.calls == whole_engine.calls  # the very same calls


def test_in_step_pairs_each_prompt_with_its_rows_and_refuses_a_reordered_file():
    constitution = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    sets = _sets(5)
    judgments, rankings, _ = judge_candidates(
        sets, PairwiseLogprobJudge(FakeEngine()), constitution, seed=0, ranking="tournament"
    )
    rows = list(in_step(sets, judgments, rankings))
    assert [r.candidates.prompt_id for r in rows] == [cs.prompt_id for cs in sets]
    for r in rows:
        assert r.judgments and all(j.prompt_id == r.candidates.prompt_id for j in r.judgments)
        assert r.ranking.prompt_id == r.candidates.prompt_id
    assert sum(len(r.judgments) for r in rows) == len(judgments)
    with pytest.raises(ValueError, match="out of the order"):
        list(in_step(sets, judgments[::-1], rankings))


def test_a_malformed_row_deep_in_a_big_file_is_a_reject_and_no_row_is_lost(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"id": f"p{i}", "prompt": f"q {i}"}) for i in range(9000)]
    lines[8500] = '{"id": "broken", "prompt": '  # cut off mid-row
    lines[8700] = json.dumps({"id": "p5", "prompt": "a repeated id"})
    path.write_text("\n".join(lines) + "\n")
    windows = list(prompt_windows(path, size=1000))
    prompts = [p for w in windows for p in w.prompts]
    rejects = [r for w in windows for r in w.rejects]
    assert len(windows) == 9 and max(len(w.prompts) for w in windows) == 1000
    assert len(prompts) == 8998 and len(rejects) == 2
    assert [r.source for r in rejects] == [f"{path}:8501", f"{path}:8701"]
    assert "duplicate id 'p5'" in rejects[1].reason
    assert (prompts, rejects) == load_prompts(path)


def test_a_mapping_typo_stops_before_the_first_window_is_used(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "text": "q"}) + "\n" for i in range(50)))
    with pytest.raises(InputError, match="no row has a 'prompt'"):
        next(prompt_windows(path, size=10))


def test_a_run_in_windows_writes_the_bytes_of_a_run_in_one(tmp_path):
    """Through the CLI, under all_pairs and knockout: window 2 (many windows, with identical
    responses and tournament rounds cut across windows) against one window."""
    for ranking in ("all_pairs", "knockout"):
        runs = {}
        for window in (2, 1000):
            run = tmp_path / f"{ranking}-{window}"
            result = charter(
                "run",
                *SMALL_FAKE_RUN,
                f"ranking={ranking}",
                f"stream_window={window}",
                f"cache_dir={tmp_path / f'cache-{window}'}",
                f"hydra.run.dir={run}",
                cwd=tmp_path,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            runs[window] = run
        for name in (*OUTPUTS, "README.md"):
            assert (runs[2] / name).read_bytes() == (runs[1000] / name).read_bytes(), name
        assert (runs[2] / "pairs.parquet").stat().st_size > 0


def test_an_engine_that_batches_for_itself_gets_one_call_per_window(tmp_path):
    """vLLM and servers get no chunk limit, so without windows a stage would hold the whole
    run: each window is one call instead, and the outputs are those of one window."""
    from hydra import compose, initialize_config_module

    from charter.building import register_resolvers
    from charter.commands.run import run_all

    register_resolvers()
    outputs = {}
    for window in (4, 1000):
        SelfBatching.calls.clear()
        overrides = [
            "experiment=smoke",
            "prompts.limit=10",
            "engine@generator.engine=fake",
            "engine@judge.engine=fake",
            "generator.engine._target_=tests.engine_fixtures.SelfBatching",
            "judge.engine._target_=tests.engine_fixtures.SelfBatching",
            "report.enabled=false",
            "plan.before_run=false",
            f"stream_window={window}",
            f"cache_dir={tmp_path / f'cache-{window}'}",
        ]
        with initialize_config_module("charter.conf", version_base="1.3"):
            cfg = compose("run", overrides=overrides)
        run = tmp_path / f"run-{window}"
        run.mkdir()
        run_all(cfg, run)
        outputs[window] = {name: (run / name).read_bytes() for name in OUTPUTS}
        if window == 4:  # prompts 4 + 4 + 2: three generate calls, three judge calls
            assert SelfBatching.calls == [4, 4, 2, 4 * 2, 4 * 2, 2 * 2], SelfBatching.calls
        else:
            assert SelfBatching.calls == [10, 10 * 2]
    assert outputs[4] == outputs[1000]

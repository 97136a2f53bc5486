"""Reruns pay only for what changed; a killed run resumes to the bytes an unkilled run writes.

Most tests use the fake engine, counting the calls that reach it. The kill tests run the CLI in
a child process through a small driver that patches the fake engine (or ``os.replace``) to
SIGKILL its own process at a chosen point, so every kill lands at a known place; one kill is sent
from outside while the judge is working.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from charter.building import register_resolvers
from charter.call_cache import CACHE_FILE, CallCache
from charter.commands.run import run_all
from charter.generators.fake_engine import FakeEngine
from charter.run_diff import diff_runs

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
# 6 prompts x 4 samples: 36 comparisons in 6 judge chunks (a prompt's 6 comparisons are never
# split across calls), 2 generate chunks
SIZE = ["experiment=smoke", "prompts.limit=6", "generator.num_samples=4", "chunk_size=5"]
OUTPUTS = ("candidates.jsonl", "judgments.jsonl", "rankings.jsonl", "pairs.jsonl", "rejects.jsonl")
REPO = Path(__file__).resolve().parents[1]

DRIVER = """
import os, signal, time
from charter.commands import pairs_stage
from charter.generators.fake_engine import FakeEngine

where, _, arg = os.environ.get("KILL_AT", "").partition(":")
hold = os.environ.get("HOLD_AT", "")
slow = float(os.environ.get("SLOW", "0"))
counts = {}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def patch(name):
    original = getattr(FakeEngine, name)
    def call(self, *args, **kwargs):
        if hold == f"{name}:{counts.get(name, 0) + 1}":
            time.sleep(3600)  # this call never returns: the process waits to be killed
        time.sleep(slow)
        out = original(self, *args, **kwargs)
        counts[name] = counts.get(name, 0) + 1
        if where == name and counts[name] == int(arg):
            die()  # the call is done but not yet stored in the cache
        return out
    setattr(FakeEngine, name, call)

patch("generate")
patch("choice_logprobs")
if where == "replace":
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith(arg):
            die()  # the complete temp file is written but not yet moved into place
        real_replace(src, dst)
    os.replace = replace
if where == "publish":
    real_publish = pairs_stage.publish_dataset_from
    def publish(*args):
        real_publish(*args)
        die()  # pairs.jsonl and the dataset are written; the card and the mark are not
    pairs_stage.publish_dataset_from = publish

from charter.cli import main
main()
"""


def charter_args(run: Path | None, cache: Path, *extra: str) -> list[str]:
    where = [f"hydra.run.dir={run}"] if run else []
    return ["run", *SIZE, *FAKE, f"cache_dir={cache}", *where, *extra]


def driven(
    args: list[str], cwd: Path, kill_at: str = "", slow: float = 0.0, hold_at: str = ""
) -> subprocess.Popen[str]:
    env = {**os.environ, "KILL_AT": kill_at, "HOLD_AT": hold_at, "SLOW": str(slow)}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> int:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, -9), err
    return proc.returncode


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run with a cache of its own."""
    root = tmp_path_factory.mktemp("baseline")
    assert finish(driven(charter_args(root / "run", root / "cache"), root)) == 0
    return root / "run"


def assert_same_outputs(run: Path, baseline: Path) -> None:
    for name in (*OUTPUTS, "README.md"):
        assert (run / name).read_bytes() == (baseline / name).read_bytes(), name
    leftovers = [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []


# --- in process, counting the calls that reach the fake engine -------------------------------


def config(*overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        return compose("run", overrides=[*SIZE, *FAKE, *overrides])


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"generate": 0, "choice_logprobs": 0}
    for name in calls:
        original = getattr(FakeEngine, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(FakeEngine, name, counted)
    return calls


def test_second_identical_run_makes_no_model_calls(tmp_path, model_calls):
    cfg = config(f"cache_dir={tmp_path / 'cache'}")
    run_all(cfg, tmp_path / "a")
    assert model_calls == {"generate": 2, "choice_logprobs": 6}
    first = summary(tmp_path / "a")
    assert first["judge"]["cache"] == {"hits": 0, "misses": 2 * first["judge"]["comparisons"]}
    run_all(cfg, tmp_path / "b")
    assert model_calls == {"generate": 2, "choice_logprobs": 6}  # not one more
    second = summary(tmp_path / "b")
    assert second["generate"]["cache"] == {"hits": 6, "misses": 0}
    assert second["judge"]["cache"] == {"hits": 72, "misses": 0}
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_editing_one_principle_recomputes_only_the_comparisons_that_drew_it(tmp_path):
    constitution = tmp_path / "harmless.yaml"
    shutil.copy(REPO / "constitutions" / "harmless.yaml", constitution)
    cache = f"cache_dir={tmp_path / 'cache'}"
    run_all(config(cache, f"constitution.path={constitution}"), tmp_path / "before")
    judgments = [json.loads(line) for line in (tmp_path / "before" / "judgments.jsonl").open()]
    drawn = {j["principle_id"] for j in judgments}
    edited = sorted(drawn, key=lambda pid: sum(j["principle_id"] == pid for j in judgments))[-1]
    data = yaml.safe_load(constitution.read_text())
    for p in data["principles"]:
        if p["id"] == edited:
            p["comparison"] = "Which response is more careful? " + p["comparison"]
    constitution.write_text(yaml.safe_dump(data, sort_keys=False))

    run_all(config(cache, f"constitution.path={constitution}"), tmp_path / "after")
    after = summary(tmp_path / "after")
    n_edited = sum(j["principle_id"] == edited for j in judgments)
    assert 0 < n_edited < len(judgments)
    assert after["generate"]["cache"]["misses"] == 0
    assert after["judge"]["cache"] == {
        "hits": 2 * (len(judgments) - n_edited),
        "misses": 2 * n_edited,  # both orders of each comparison that drew the edited principle
    }
    diff = diff_runs(tmp_path / "before", tmp_path / "after")
    assert {c.principle for c in diff.judgments} == {edited}
    assert len(diff.judgments) == n_edited  # the fake judge's scores move with any prompt change


def test_a_parsing_change_reuses_every_model_call(tmp_path, model_calls):
    cache = f"cache_dir={tmp_path / 'cache'}"
    run_all(config(cache), tmp_path / "log_odds")
    calls = dict(model_calls)
    run_all(config(cache, "judge.combine=probability"), tmp_path / "probability")
    assert model_calls == calls
    assert summary(tmp_path / "probability")["judge"]["cache"]["misses"] == 0


def test_rerun_in_place_skips_complete_stages_and_redoes_changed_ones(tmp_path, model_calls):
    cache = f"cache_dir={tmp_path / 'cache'}"
    run_all(config(cache), tmp_path / "run")
    pairs = (tmp_path / "run" / "pairs.jsonl").read_bytes()
    marks = summary(tmp_path / "run")["stages"]
    calls = dict(model_calls)
    run_all(config(cache, "call_cache=false"), tmp_path / "run")  # nothing left to do
    assert model_calls == calls
    assert (tmp_path / "run" / "pairs.jsonl").read_bytes() == pairs
    run_all(config(cache, "pairs=all_pairs_above_margin"), tmp_path / "run")
    assert model_calls == calls
    after = summary(tmp_path / "run")["stages"]
    assert after["generate"] == marks["generate"] and after["judge"] == marks["judge"]
    assert after["pairs"] != marks["pairs"]
    assert (tmp_path / "run" / "pairs.jsonl").read_bytes() != pairs


def test_call_cache_off_calls_the_model_every_time(tmp_path, model_calls):
    cfg = config(f"cache_dir={tmp_path / 'cache'}", "call_cache=false")
    run_all(cfg, tmp_path / "a")
    run_all(cfg, tmp_path / "b")
    assert model_calls == {"generate": 4, "choice_logprobs": 12}
    assert summary(tmp_path / "b")["judge"]["cache"] is None
    assert not (tmp_path / "cache").exists()


# --- SIGKILL, in a child process -------------------------------------------------------------


def test_run_killed_at_several_points_resumes_to_identical_outputs(tmp_path, baseline):
    run, cache = tmp_path / "run", tmp_path / "cache"
    # every call committed as it returns, so what each kill leaves in the cache is known
    args = charter_args(run, cache, "call_cache_commit_s=0")
    # during generate, after its second call returned but before it was stored
    assert finish(driven(args, tmp_path, "generate:2")) == -9
    assert not (run / "candidates.jsonl").exists()
    # during judge, the same way, at its third chunk
    assert finish(driven(args, tmp_path, "choice_logprobs:3")) == -9
    assert set(summary(run)["stages"]) == {"generate"}
    # from outside, once two more judge chunks are in the cache; the process's third judge call
    # (the fifth chunk) never returns, so the judge cannot finish first however slowly we poll
    entries = CallCache(cache / CACHE_FILE).summary().entries
    proc = driven(args, tmp_path, hold_at="choice_logprobs:3")
    try:
        deadline = time.monotonic() + 120
        while CallCache(cache / CACHE_FILE).summary().entries < entries + 20:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.kill()
    assert finish(proc) == -9
    assert set(summary(run)["stages"]) == {"generate"}
    # with judgments.jsonl complete in its temp file, before the rename
    assert finish(driven(args, tmp_path, "replace:judgments.jsonl")) == -9
    assert list(run.glob(".judgments.jsonl.*.tmp")) and not (run / "judgments.jsonl").exists()
    # after pairs.jsonl and the dataset are published, before the card and the mark
    assert finish(driven(args, tmp_path, "publish")) == -9
    assert (run / "pairs.jsonl").exists() and set(summary(run)["stages"]) == {"generate", "judge"}

    # the documented way back in: the run's own saved overrides, nothing else
    assert finish(driven(["run", f"run_dir={run}"], tmp_path)) == 0
    assert_same_outputs(run, baseline)
    assert summary(run)["pairs"] == summary(baseline)["pairs"]


def test_killed_run_rerun_by_the_same_command_in_a_new_directory(tmp_path, baseline):
    # outputs/smoke/<time>, as a user would; every call committed as it returns
    args = charter_args(None, tmp_path / "cache", "call_cache_commit_s=0")
    assert finish(driven(args, tmp_path, "choice_logprobs:2")) == -9
    time.sleep(1.1)  # a new second, so a new run directory
    assert finish(driven(args, tmp_path)) == 0
    runs = sorted(p.parent for p in tmp_path.glob("outputs/smoke/*/pairs.jsonl"))
    assert len(runs) == 1
    assert_same_outputs(runs[0], baseline)
    rerun = summary(runs[0])
    assert rerun["generate"]["cache"] == {"hits": 6, "misses": 0}
    assert rerun["judge"]["cache"] == {"hits": 12, "misses": 60}  # one chunk (a prompt) was kept


def test_a_run_killed_with_calls_waiting_to_be_committed_resumes_to_identical_outputs(
    tmp_path, baseline
):
    """The default groups commits a second apart: a kill loses the calls still waiting, which
    the resumed run makes again, to the same bytes."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = charter_args(run, cache, "call_cache_commit_s=30")  # nothing commits before the kill
    assert finish(driven(args, tmp_path, "choice_logprobs:4")) == -9
    # the generate stage's 6 calls were committed at its end; none of the judge's had been
    assert CallCache(cache / CACHE_FILE).summary().entries == 6
    assert finish(driven(["run", f"run_dir={run}"], tmp_path)) == 0
    assert_same_outputs(run, baseline)
    assert summary(run)["judge"]["cache"] == {"hits": 0, "misses": 72}


def test_two_runs_sharing_a_cache_at_once_both_finish_and_agree(tmp_path, baseline):
    cache = tmp_path / "cache"
    procs = [driven(charter_args(tmp_path / r, cache), tmp_path, slow=0.05) for r in "ab"]
    assert [finish(p) for p in procs] == [0, 0]
    for r in "ab":
        assert_same_outputs(tmp_path / r, baseline)
    base = summary(baseline)
    stored = base["generate"]["cache"]["misses"] + base["judge"]["cache"]["misses"]
    assert CallCache(cache / CACHE_FILE).summary().entries == stored


# --- the real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_second_run_makes_no_model_calls(tmp_path):
    models = os.environ["CHARTER_CACHE_DIR"]  # where SmolLM2 is already converted
    args = [
        "run",
        "experiment=smoke",
        f"cache_dir={tmp_path / 'cache'}",
        f"generator.engine.cache_dir={models}",
        f"judge.engine.cache_dir={models}",
    ]
    for run in ("first", "second"):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from charter.cli import main; main()",
                *args,
                f"hydra.run.dir={tmp_path / run}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
    first, second = summary(tmp_path / "first"), summary(tmp_path / "second")
    assert first["judge"]["cache"]["misses"] == 2 * first["judge"]["comparisons"] > 0
    assert second["generate"]["cache"] == {"hits": 3, "misses": 0}
    assert second["judge"]["cache"]["misses"] == 0
    for name in OUTPUTS:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()

"""The Ray executor on a local 2-CPU cluster: same bytes as the local executor, and a replica
killed mid-stage is restarted and its shards rerun, with no row repeated or lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from charter.building import EngineCache, build, register_resolvers
from charter.executors.local import LocalExecutor
from charter.executors.sharding import shard_ranges
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.generators.stage import generate_candidates
from charter.records import PromptRecord

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
OUTPUTS = ("candidates.jsonl", "judgments.jsonl", "rankings.jsonl", "pairs.jsonl")


def prompts(n: int) -> list[PromptRecord]:
    return [
        PromptRecord(f"p{i}", [{"role": "user", "content": f"question {i}"}], f"mem:{i}")
        for i in range(n)
    ]


def test_shards_cover_every_chat_once_in_order() -> None:
    assert shard_ranges(7, 3, 2) == [(0, 3), (3, 6), (6, 7)]
    assert shard_ranges(7, None, 2) == [(0, 4), (4, 7)]
    assert shard_ranges(0, None, 2) == []
    assert shard_ranges(1, None, 4) == [(0, 1)]


def test_local_executor_with_shards_returns_what_the_engine_returns() -> None:
    node = compose_run("executor.shard_size=2").generator.engine
    engine = LocalExecutor(shard_size=2).engine(node, "generator.engine", build, lambda e, n: "fp")
    sampling = SamplingSettings(max_new_tokens=8, seed=3)
    chats = [p.messages for p in prompts(5)]
    assert engine.generate(chats, sampling, n=2) == FakeEngine().generate(chats, sampling, n=2)
    assert engine.choice_logprobs(chats, ["A", "B"]) == FakeEngine().choice_logprobs(
        chats, ["A", "B"]
    )


def compose_run(*overrides: str):
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        return compose("run", overrides=["experiment=smoke", *FAKE, *overrides])


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray", reason="needs Ray: pip install 'charter[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_a_replica_killed_mid_stage_is_restarted_without_lost_or_repeated_rows(ray_cluster):
    cfg = compose_run("executor=ray", "executor.num_replicas=2", "executor.shard_size=1")
    engine = EngineCache().get(cfg.generator.engine, "generator.engine")
    actors = engine.runner.actors
    pid_before = ray_cluster.get(actors[0].describe.remote())["pid"]
    killed = []

    def kill_first_replica_once(done: int) -> None:
        if not killed:  # after the first chunk: the next chunks' shards meet a dead replica
            os.kill(pid_before, signal.SIGKILL)
            killed.append(done)

    sampling = SamplingSettings(max_new_tokens=16, seed=7)
    rows = prompts(8)
    sets, _ = generate_candidates(
        rows, engine, sampling, 3, chunk_size=2, on_progress=kill_first_replica_once
    )
    expected, _ = generate_candidates(rows, FakeEngine(), sampling, 3, chunk_size=2)
    assert killed and sets == expected  # every prompt once, in order, same samples
    pid_after = ray_cluster.get(actors[0].describe.remote())["pid"]
    assert pid_after != pid_before  # Ray restarted the replica and reran its shards


def charter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count on both executors
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


REAL = ["run", "experiment=smoke", "prompts.limit=2", "call_cache=false", "executor.shard_size=1"]
"""2 prompts x 2 samples with SmolLM2; every call computed (no cache), one chat per shard."""


_REAL_RUNS: list[Path] = []


def make_real_local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-model run on the local executor, made once per session and shared with
    tests/test_review.py (a fixture imported into another module would run again)."""
    if not _REAL_RUNS:
        root = tmp_path_factory.mktemp("real_local_run")
        result = charter(*REAL, f"hydra.run.dir={root / 'run'}", cwd=root)
        assert result.returncode == 0, result.stderr
        _REAL_RUNS.append(root / "run")
    return _REAL_RUNS[0]


@pytest.fixture(scope="session")
def real_local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_local_run(tmp_path_factory)


@pytest.mark.slow
def test_ray_run_with_the_real_model_is_byte_identical_to_the_local_run(
    real_local_run: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray", reason="needs Ray: pip install 'charter[ray]'")
    ray_run = charter(
        *REAL,
        "executor=ray",
        "executor.num_replicas=2",
        "executor.num_cpus=2",
        f"hydra.run.dir={tmp_path / 'ray'}",
        cwd=tmp_path,
    )
    assert ray_run.returncode == 0, ray_run.stderr
    for name in OUTPUTS:
        assert (tmp_path / "ray" / name).read_bytes() == (real_local_run / name).read_bytes()
    assert (tmp_path / "ray" / "pairs.jsonl").read_text().count("\n") == 2

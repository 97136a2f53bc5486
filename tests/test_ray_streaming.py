"""``executor=ray executor.streaming=true`` on a local 2-CPU Ray: each streamed chunk is what the
local stage functions compute for it, with the fake engine and with the real SmolLM2."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from charter.building import (
    EngineCache,
    build,
    open_call_cache,
    register_resolvers,
    resolve_path,
)
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.generators.stage import generate_candidates
from charter.judge_building import build_judge
from charter.judges.stage import judge_candidates, judge_parts
from charter.pairs import make_pairs
from charter.records import CandidateSet, PromptRecord
from tests.fixtures import candidate_set

RAY = ["executor=ray", "executor.num_replicas=2", "executor.num_cpus=2", "executor.streaming=true"]
FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]


def compose_run(*overrides: str):
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        return compose("run", overrides=["experiment=smoke", *overrides])


def prompts(n: int, long: int | None = None) -> list[PromptRecord]:
    """``n`` short prompts; prompt ``long`` (if given) too long for the fake engine's context."""
    return [
        PromptRecord(
            f"p{i}",
            [{"role": "user", "content": "word " * 2100 if i == long else f"question {i}"}],
            f"mem:{i}",
        )
        for i in range(n)
    ]


def local_generate(cfg, windows: list[list[PromptRecord]]):
    """What the local path computes per window (no call cache: computed here, apart from Ray)."""
    engine = EngineCache().get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    n = cfg.generator.num_samples
    return [generate_candidates(w, engine, sampling, n, chunk_size=32) for w in windows]


def local_judge(cfg, windows: list[list[CandidateSet]], judge_stage=judge_parts):
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    judge = build_judge(cfg.judge, "judge", EngineCache(), constitution_sha256=constitution.sha256)
    return [
        judge_stage(
            w,
            judge,
            constitution,
            seed=cfg.seed,
            chunk_size=32,
            principle_per=cfg.principle_per,
            ranking=cfg.ranking,
        )
        for w in windows
    ]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="needs Ray: pip install 'charter[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_streamed_windows_equal_the_local_stages_and_fill_the_call_cache(
    ray_cluster, tmp_path
) -> None:
    from charter.executors.ray_streaming import stream_generate, stream_judge_windows

    settings = [*FAKE, "generator.num_samples=3", "ranking=tournament", f"cache_dir={tmp_path}"]
    cfg = compose_run(*settings, *RAY)
    rows = prompts(7, long=4)  # chunks of 3, 3, 1; prompt 4 is rejected as too long
    counts: list[dict[str, int]] = []
    generated = list(stream_generate(cfg, iter(rows), 3, on_cache=counts.append))
    sets = [s for chunk_sets, _ in generated for s in chunk_sets]
    sets.append(candidate_set("dup", "same", "same", "other"))  # one pair not compared
    windows = [sets[:2], sets[2:3], sets[3:]]  # cut by the caller, unevenly
    judged = list(stream_judge_windows(cfg, iter(windows), on_cache=counts.append))

    local_cfg = compose_run(*settings)
    assert generated == local_generate(local_cfg, [rows[:3], rows[3:6], rows[6:]])
    assert [r.row for _, too_long in generated for r in too_long] == [{"prompt_id": "p4"}]
    assert judged == local_judge(local_cfg, windows)
    assert [len(identical) for _, _, identical, _ in judged] == [0, 0, 1]
    assert len(counts) == 6 and all(c["misses"] for c in counts)  # a fresh cache: computed

    # the replicas stored their calls in the driver's cache, under the local path's keys
    engine = EngineCache(open_call_cache(local_cfg)).get(local_cfg.generator.engine, "g")
    sampling = build(local_cfg.generator.sampling, "generator.sampling")
    generate_candidates(rows, engine, sampling, 3)
    assert (engine.stats.hits, engine.stats.misses) == (6, 0)


def test_a_user_error_in_a_replica_is_raised_as_itself(ray_cluster) -> None:
    from charter.executors.ray_streaming import stream_judge

    cfg = compose_run(*FAKE, *RAY, "principle_per=every")
    with pytest.raises(InputError, match="principle_per must be") as caught:
        list(stream_judge(cfg, [candidate_set("p0", "yes", "no")], 2))
    assert caught.value.field == "principle_per"


def test_no_input_starts_nothing() -> None:
    from charter.executors.ray_streaming import stream_generate

    cfg = compose_run(*RAY, "generator.engine.model=no-such-model")  # never built
    assert list(stream_generate(cfg, [], 4)) == []


@pytest.mark.slow
def test_streamed_real_model_run_gives_the_local_pairs(ray_cluster) -> None:
    torch = pytest.importorskip("torch")
    from charter.executors.ray_streaming import stream_generate, stream_judge

    # one torch thread on both sides: a replica has one CPU, and a thread count can move the
    # last bits of a logit
    real = ["call_cache=false", "generator.sampling.max_new_tokens=8"]
    real += ["generator.engine.num_threads=1", "judge.engine.num_threads=1"]
    threads = torch.get_num_threads()
    try:
        cfg = compose_run(*real, *RAY)
        rows = prompts(3)
        generated = list(stream_generate(cfg, rows, 2))
        sets = [s for chunk_sets, _ in generated for s in chunk_sets]
        judged = list(stream_judge(cfg, sets, 2))
        local_cfg = compose_run(*real)
        expected_generated = local_generate(local_cfg, [rows[:2], rows[2:]])
        expected_judged = local_judge(local_cfg, [sets[:2], sets[2:]], judge_candidates)
    finally:
        torch.set_num_threads(threads)
    assert generated == expected_generated
    assert judged == expected_judged

    def pairs(judged):
        judgments = [j for chunk, _, _ in judged for j in chunk]
        rankings = [r for _, chunk, _ in judged for r in chunk]
        settings = build(cfg.pairs, "pairs")
        return make_pairs(sets, judgments, rankings, settings, constitution_sha256="c").pairs

    assert pairs(judged) and pairs(judged) == pairs(expected_judged)


def test_a_replica_computes_its_chunks_with_fewer_collections(monkeypatch) -> None:
    """A Ray Data replica is not under the CLI's GC pacing, so it paces its own chunks (and puts
    the thresholds back between them); called here without Ray, with the fake engine."""
    import gc
    import json

    import numpy as np
    from omegaconf import OmegaConf

    from charter.executors.ray_streaming import StageWorker
    from charter.gc_pacing import YOUNGEST
    from charter.records import to_row

    cfg = compose_run(*FAKE)
    worker = StageWorker("generate", OmegaConf.to_container(cfg, resolve=True), None, None)
    seen: list[int] = []
    generate = worker.engine.generate

    def noted(*args, **kwargs):
        seen.append(gc.get_threshold()[0])
        return generate(*args, **kwargs)

    monkeypatch.setattr(worker.engine, "generate", noted)
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, as in a fresh worker process
    try:
        chunk = json.dumps([to_row(p) for p in prompts(2)])
        out = worker({"index": np.array([0]), "chunk": np.array([chunk], dtype=object)})
        assert seen and set(seen) == {YOUNGEST}
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)
    assert len(json.loads(out["chunk"][0])["sets"]) == 2

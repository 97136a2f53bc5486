"""Ray Data streaming (``executor=ray executor.streaming=true``) against the local executor.

The same prompts (synthetic, one line each) go through generate then judge (all pairs, both
orders) with the fake engine, the call cache off, in chunks of ``--chunk-size``: locally, chunk
after chunk in this process, and streamed through a local Ray with ``--replicas`` actors. The
fake engine costs almost nothing, so this measures the overhead of the streaming path itself
(JSON rows, Ray Data's tasks, actor start-up), the worst case for Ray; with a real model each
chunk's compute dwarfs it. Ray's own start (``ray.init``) is timed once, apart; each stream
starts its own actor pool, which is in the stage's seconds (and in "first chunk").

    .venv/bin/python -m bench ray_streaming
    .venv/bin/python -m bench.ray_streaming [--prompts 2000] [--samples 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator

from hydra import compose, initialize_config_module

from charter.building import EngineCache, build, register_resolvers
from charter.commands.shared import run_constitution
from charter.generators.stage import generate_candidates
from charter.judge_building import build_judge
from charter.judges.stage import judge_candidates
from charter.records import PromptRecord


def synthetic_prompts(n: int) -> list[PromptRecord]:
    return [
        PromptRecord(f"p{i}", [{"role": "user", "content": f"How do I do task {i}?"}], f"b:{i}")
        for i in range(n)
    ]


def _chunks(items: list, size: int) -> Iterator[list]:
    return (items[i : i + size] for i in range(0, len(items), size))


def local_stages(cfg, prompts, chunk_size):
    """The local path, chunk by chunk: (sets per chunk, judgments per chunk)."""
    engines = EngineCache()
    engine = engines.get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")

    def generate() -> Iterator:
        for chunk in _chunks(prompts, chunk_size):
            yield generate_candidates(
                chunk, engine, sampling, cfg.generator.num_samples, chunk_size=cfg.chunk_size
            )

    def judge(sets) -> Iterator:
        constitution = run_constitution(cfg)
        judge = build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)
        for chunk in _chunks(sets, chunk_size):
            yield judge_candidates(
                chunk, judge, constitution, seed=cfg.seed, chunk_size=cfg.chunk_size
            )

    return generate, judge


def ray_stages(cfg, prompts, chunk_size):
    from charter.executors.ray_streaming import stream_generate, stream_judge

    return (
        lambda: stream_generate(cfg, prompts, chunk_size),
        lambda sets: stream_judge(cfg, sets, chunk_size),
    )


def timed(chunks: Callable[[], Iterator]) -> tuple[list, float, float]:
    """All chunks, total seconds, seconds to the first chunk."""
    start = time.perf_counter()
    out, first = [], None
    for chunk in chunks():
        first = time.perf_counter() - start if first is None else first
        out.append(chunk)
    return out, time.perf_counter() - start, first or 0.0


def run_once(stages, prompts, chunk_size) -> dict:
    generate, judge = stages(prompts, chunk_size)
    generated, gen_s, gen_first = timed(generate)
    sets = [s for chunk, _ in generated for s in chunk]
    judged, judge_s, judge_first = timed(lambda: judge(sets))
    judgments = [j for chunk, _, _ in judged for j in chunk]
    return {
        "sets": sets,
        "judgments": judgments,
        "generate_s": gen_s,
        "judge_s": judge_s,
        "first_s": gen_first + judge_first,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import ray

    register_resolvers()
    overrides = [
        "engine@generator.engine=fake",
        "engine@judge.engine=fake",
        f"generator.num_samples={args.samples}",
        f"chunk_size={args.chunk_size}",
        "call_cache=false",
    ]
    streaming = [
        "executor=ray",
        f"executor.num_replicas={args.replicas}",
        f"executor.num_cpus={os.cpu_count()}",
        "executor.streaming=true",
    ]
    with initialize_config_module("charter.conf", version_base="1.3"):
        local_cfg = compose("run", overrides=overrides)
        ray_cfg = compose("run", overrides=[*overrides, *streaming])
    prompts = synthetic_prompts(args.prompts)

    start = time.perf_counter()
    build(ray_cfg.executor, "executor").init_ray()
    ray_start = time.perf_counter() - start

    runs = {
        "local": lambda p, c: local_stages(local_cfg, p, c),
        "ray streaming": lambda p, c: ray_stages(ray_cfg, p, c),
    }
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for rep in range(args.repeats):
        names = list(runs) if rep % 2 == 0 else list(runs)[::-1]  # alternate who goes first
        for name in names:
            results[name].append(run_once(runs[name], prompts, args.chunk_size))
    ray.shutdown()

    local, streamed = results["local"][0], results["ray streaming"][0]
    same = local["sets"] == streamed["sets"] and local["judgments"] == streamed["judgments"]
    n = len(local["judgments"])
    print(
        f"fake engine; {args.prompts} prompts x K={args.samples}, all pairs in both orders "
        f"({n} comparisons); chunks of {args.chunk_size}; {args.replicas} Ray replicas on "
        f"{os.cpu_count()} CPUs; median of {args.repeats}; same outputs: {same}"
    )
    print(f"Ray start (ray.init, once, not in the rows): {ray_start:.1f} s")
    print("comp/s: comparisons per second over both stages; 'after first': the same, less the")
    print("wait for each stage's first chunk (Ray's includes its actor pool's start)")
    print("executor | generate s | judge s | first chunks s | comp/s | ratio | after first | ratio")
    local_rate = local_steady = None
    for name, runs_of in results.items():
        gen = statistics.median(r["generate_s"] for r in runs_of)
        jud = statistics.median(r["judge_s"] for r in runs_of)
        first = statistics.median(r["first_s"] for r in runs_of)
        rate = n / statistics.median(r["generate_s"] + r["judge_s"] for r in runs_of)
        steady = n / statistics.median(
            r["generate_s"] + r["judge_s"] - r["first_s"] for r in runs_of
        )
        local_rate, local_steady = local_rate or rate, local_steady or steady
        print(
            f"{name} | {gen:.2f} | {jud:.2f} | {first:.2f} | {rate:,.0f} | "
            f"{rate / local_rate:.2f} | {steady:,.0f} | {steady / local_steady:.2f}"
        )


if __name__ == "__main__":
    main()

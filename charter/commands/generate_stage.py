"""``charter generate``: sample K candidates per prompt into a run's ``candidates.jsonl``,
prompt window by prompt window."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from charter import run_files, run_state
from charter.building import EngineCache, build, call_stats, resolve_path
from charter.commands.shared import cache_counts, record_throughput, run_engines, stage_chunk_size
from charter.commands.stage_settings import on_ray_data, stage_fingerprint, stream_window
from charter.generators.stage import generate_candidates
from charter.progress import stage_progress
from charter.prompts import PromptFields, prompt_windows
from charter.records import PromptRecord, Reject


def run_generate(cfg: DictConfig, run_dir: Path, engines: EngineCache | None = None) -> None:
    """Read prompts window by window, sample K candidates each, append them to
    candidates.jsonl, and write the rejects (see :mod:`charter.streaming`)."""
    engines = engines or run_engines(cfg)
    done = stage_fingerprint(cfg, "generate", run_dir)
    run_state.clear_done(run_dir, "generate")
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    path = resolve_path(cfg.prompts.path)
    streaming = on_ray_data(cfg)
    engine = None if streaming else engines.get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    chunk = cfg.chunk_size if streaming else stage_chunk_size(cfg, engine)
    # whole chunks per window, so the engine gets the calls a single window would give it; an
    # engine that batches for itself (vLLM, a server) gets each window in one call; on Ray Data
    # a window is one chunk, the unit handed to a replica
    if streaming:
        window = chunk
    elif chunk == sys.maxsize:
        window = stream_window(cfg)
    else:
        window = -(-stream_window(cfg) // chunk) * chunk
    read_rejects: list[Reject] = []
    too_long: list[Reject] = []
    counts: Counter[str] = Counter()
    ray_cache: Counter[str] = Counter()
    before = call_stats(engine)
    start = time.perf_counter()
    with (
        stage_progress("generate (prompts)", prompt_count(path, cfg.prompts.limit)) as advance,
        run_files.appending(run_dir, run_files.CANDIDATES) as out,
    ):
        parts = prompt_windows(path, fields, limit=cfg.prompts.limit, size=window)

        def prompts_of() -> Iterator[list[PromptRecord]]:
            for part in parts:
                read_rejects.extend(part.rejects)
                counts["prompts"] += len(part.prompts)
                yield part.prompts

        if streaming:
            from charter.executors.ray_streaming import stream_generate_windows

            results = stream_generate_windows(cfg, prompts_of(), on_cache=ray_cache.update)
        else:
            results = (
                generate_candidates(
                    prompts,
                    engine,
                    sampling,
                    cfg.generator.num_samples,
                    chunk_size=chunk,
                    on_progress=advance,
                )
                for prompts in prompts_of()
            )
        for sets, skipped in results:
            too_long.extend(skipped)
            out.add(run_files.CANDIDATES, sets)
            counts["sets"] += len(sets)
            counts["candidates"] += sum(len(cs.candidates) for cs in sets)
            counts["tokens"] += sum(c.num_tokens for cs in sets for c in cs.candidates)
            if streaming:
                advance(len(sets) + len(skipped))
    engines.commit()  # the stage's calls are durable before it is marked done (and timed)
    seconds = time.perf_counter() - start
    cache = (
        dict(ray_cache)
        if streaming and cfg.call_cache
        else cache_counts(before, call_stats(engine))
    )
    if cache and not streaming:
        samples = cache["misses"] * cfg.generator.num_samples
        record_throughput(cfg, engine, "generate", samples, seconds)
    run_files.replace_rejects(run_dir, "generate", [*read_rejects, *too_long])
    tokens = counts["tokens"]
    run_state.update_summary(
        run_dir,
        "generate",
        {
            "prompts_read": counts["prompts"] + len(read_rejects),
            "prompts_rejected": len(read_rejects) + len(too_long),
            "candidate_sets": counts["sets"],
            "candidates": counts["candidates"],
            "generated_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
            "cache": cache,
        },
        done=done,
    )


def prompt_count(path: Path, limit: int | None) -> int | None:
    """Rows of a JSONL prompts file (an upper bound on its prompts, for the progress bar), at
    most ``limit``; None for other formats, whose bar then counts without a total."""
    if path.suffix.lower() not in (".jsonl", ".json") or not path.is_file():
        return limit
    with path.open("rb") as fh:
        rows = sum(1 for line in fh if line.strip())
    return min(rows, limit) if limit is not None else rows

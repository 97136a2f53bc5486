"""The generate and judge stages as Ray Data streams (``executor=ray executor.streaming=true``).

For a prompt set larger than one machine's memory. The driver cuts its input into chunks of
``chunk_size`` records and feeds them, a few chunks ahead of what it has received, into a Ray
Data dataset; ``map_batches`` runs them on an actor pool (``executor.num_replicas`` actors, each
building the engine or judge once from the resolved config), and the results stream back to the
driver in input order. At most ``4 * num_replicas`` chunks are in flight (sent, not yet
received), so the driver's memory does not grow with the input.

- **A row is a whole chunk** (its records as JSON text, from :func:`~charter.records.to_row`), so
  each chunk is computed by one call of :func:`~charter.generators.stage.generate_candidates` or
  :func:`~charter.judges.stage.judge_parts` on one actor, exactly as the local path computes
  the same chunk, whatever blocks and batches Ray Data forms.
- **Reading** goes through Ray Data: a datasource whose one read task pulls the driver's chunks
  from a bounded :class:`ray.util.queue.Queue`, so the input may be a lazy iterator (a file read
  a chunk at a time) and is never materialised. The read task and the queue take no CPU, so
  the replicas may hold every CPU of the cluster.
- **Writing** is the driver's: it appends each chunk's rows to the run's JSONL as they arrive.
  Ray Data's ``write_json`` writes one file per block, in whatever order blocks finish, which
  would lose the one-file, input-order layout that resume, the stage marks and byte-identical
  reruns rely on.
- **The call cache** stays a single SQLite file on the driver's machine, served by one actor
  pinned to the driver's node, which every replica asks before calling its model. SQLite's WAL
  mode is safe for processes of one machine but not over a network filesystem, and a cluster's
  replicas may run on other nodes; with one process writing, keys and stored values are the
  same as a local run's, and a resumed run finds every call a replica made.

Not carried over from the local path: the budget meter (``budget.*`` is enforced in the driver's
process, between engine calls) and per-engine throughput records.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from charter.building import EngineCache, build, call_stats, open_call_cache
from charter.call_cache import CallCache
from charter.commands.shared import cache_counts, run_constitution, stage_chunk_size
from charter.commands.stage_settings import principle_aggregation
from charter.constitution import Constitution
from charter.errors import InputError
from charter.executors.ray_executor import PASSED_ENV, RayExecutor
from charter.gc_pacing import fewer_collections
from charter.generators.stage import generate_candidates
from charter.judges.stage import Ranking, judge_parts
from charter.records import CandidateSet, Judgment, PromptRecord, Reject, from_row, to_row

CHUNKS_AHEAD_PER_REPLICA = 4
"""Chunks sent ahead of the last one received, per replica: enough to keep every replica busy
while the driver writes, few enough to bound the driver's memory."""

CacheCounts = Callable[[dict[str, int]], None]


def stream_generate(
    cfg: DictConfig,
    prompts: Iterable[PromptRecord],
    chunk_size: int,
    *,
    on_cache: CacheCounts | None = None,
) -> Iterator[tuple[list[CandidateSet], list[Reject]]]:
    """Chunks of prompts -> per chunk (candidate sets, too-long rejects), in input order.

    Args:
        cfg: the run config (``generator``, ``executor``, ``chunk_size``, ``call_cache``).
        prompts: read lazily, ``chunk_size`` at a time.
        chunk_size: prompts per chunk; each chunk gives what ``generate_candidates`` gives for it
            (with ``chunk_size=stage_chunk_size(cfg, engine)`` inside the chunk).
        on_cache: called per chunk with its call-cache ``hits`` and ``misses`` (chats).
    """
    return stream_generate_windows(cfg, _chunks(prompts, chunk_size), on_cache=on_cache)


def stream_generate_windows(
    cfg: DictConfig,
    windows: Iterable[Sequence[PromptRecord]],
    *,
    on_cache: CacheCounts | None = None,
) -> Iterator[tuple[list[CandidateSet], list[Reject]]]:
    """:func:`stream_generate` over windows the caller has cut (of any sizes, in order)."""
    rows = (json.dumps([to_row(p) for p in w], ensure_ascii=False) for w in windows)
    for out in _stream(cfg, "generate", rows, None, on_cache):
        yield (
            [CandidateSet.from_dict(r) for r in out["sets"]],
            [from_row(Reject, r) for r in out["too_long"]],
        )


def stream_judge(
    cfg: DictConfig,
    sets: Iterable[CandidateSet],
    chunk_size: int,
    *,
    on_cache: CacheCounts | None = None,
) -> Iterator[tuple[list[Judgment], list[Ranking], list[Reject]]]:
    """Chunks of candidate sets -> per chunk (judgments, rankings, rejects), in input order:
    what ``judge_candidates`` gives for each chunk.

    A prompt's judgments depend only on its set and the seed, so the chunks' results joined
    are the whole stage's result (rejects aside: each chunk lists its identical pairs, then its
    too-long comparisons; :func:`stream_judge_windows` keeps the two apart).

    Args:
        cfg: the run config (``judge``, ``constitution``, ``seed``, ``principle_per``,
            ``principle_aggregation``, ``ranking``, ``executor``, ``chunk_size``,
            ``call_cache``).
        sets: read lazily, ``chunk_size`` at a time.
        chunk_size: candidate sets per chunk.
        on_cache: called per chunk with its call-cache ``hits`` and ``misses`` (chats).
    """
    for judgments, rankings, identical, too_long in stream_judge_windows(
        cfg, _chunks(sets, chunk_size), on_cache=on_cache
    ):
        yield judgments, rankings, [*identical, *too_long]


def stream_judge_windows(
    cfg: DictConfig,
    windows: Iterable[Sequence[CandidateSet]],
    *,
    on_cache: CacheCounts | None = None,
) -> Iterator[tuple[list[Judgment], list[Ranking], list[Reject], list[Reject]]]:
    """Windows the caller has cut (e.g. :func:`charter.streaming.judge_windows`) -> per window
    what :func:`~charter.judges.stage.judge_parts` gives: judgments, rankings, the pairs not
    compared (identical responses) and the comparisons too long for the judge."""
    constitution = run_constitution(cfg)  # checked here, shipped to the replicas as an object
    rows = (json.dumps([to_row(s) for s in w], ensure_ascii=False) for w in windows)
    for out in _stream(cfg, "judge", rows, constitution, on_cache):
        yield (
            [from_row(Judgment, r) for r in out["judgments"]],
            [from_row(Ranking, r) for r in out["rankings"]],
            [from_row(Reject, r) for r in out["identical"]],
            [from_row(Reject, r) for r in out["too_long"]],
        )


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if size < 1:
        raise InputError(f"chunk_size must be at least 1, got {size}", field="chunk_size")
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class StageWorker:
    """One replica: builds the stage's engine (or judge) once, then computes whole chunks.

    Runs inside a Ray Data actor. The config arrives resolved, as plain data; engines are built
    here by the local executor (with the run's ``shard_size``), behind the driver's call cache.
    """

    def __init__(
        self,
        stage: str,
        settings: dict[str, Any],
        cache: Any,
        constitution: Constitution | None,
    ) -> None:
        cfg = OmegaConf.create(settings)
        local = {"_target_": "charter.executors.local.LocalExecutor"}
        cfg.executor = {**local, "shard_size": cfg.executor.get("shard_size")}
        self.stage = stage
        self.cfg = cfg
        # a user error (a bad model name) goes back to the driver as a row, to be raised there
        # as itself: a replica that died would be restarted and fail again first
        self.input_error: dict[str, Any] | None = None
        try:
            self._build(stage, cfg, cache, constitution)
        except InputError as exc:
            self.input_error = _error_row(exc)

    def _build(
        self, stage: str, cfg: DictConfig, cache: Any, constitution: Constitution | None
    ) -> None:
        from charter.judge_building import build_judge

        engines = EngineCache(_CacheOnDriverNode(cache) if cache is not None else None)
        if stage == "generate":
            self.engine = engines.get(cfg.generator.engine, "generator.engine")
            self.sampling = build(cfg.generator.sampling, "generator.sampling")
        else:
            assert constitution is not None
            self.constitution = constitution
            self.judge = build_judge(
                cfg.judge, "judge", engines, constitution_sha256=constitution.sha256
            )
            self.engine = getattr(self.judge, "engine", None)
        self.inner_chunk_size = stage_chunk_size(cfg, self.engine)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # a worker is not under the CLI: its chunks' rows churn the young generation likewise
        with fewer_collections():
            outs = [self.compute(json.loads(chunk)) for chunk in batch["chunk"]]
        return {"index": batch["index"], "chunk": np.array(outs, dtype=object)}

    def compute(self, rows: list[dict[str, Any]]) -> str:
        """One chunk's records in, the stage's rows for it out (JSON text)."""
        if self.input_error is not None:
            return json.dumps({"input_error": self.input_error})
        try:
            return self._compute(rows)
        except InputError as exc:
            return json.dumps({"input_error": _error_row(exc)})

    def _compute(self, rows: list[dict[str, Any]]) -> str:
        cfg = self.cfg
        before = call_stats(self.engine)
        out: dict[str, list[Any]]
        if self.stage == "generate":
            prompts = [from_row(PromptRecord, r) for r in rows]
            sets, too_long = generate_candidates(
                prompts,
                self.engine,
                self.sampling,
                cfg.generator.num_samples,
                chunk_size=self.inner_chunk_size,
            )
            out = {"sets": sets, "too_long": too_long}
        else:
            aggregation = principle_aggregation(cfg)
            judgments, rankings, identical, too_long = judge_parts(
                [CandidateSet.from_dict(r) for r in rows],
                self.judge,
                self.constitution,
                seed=cfg.seed,
                chunk_size=self.inner_chunk_size,
                principle_per=cfg.principle_per,
                principle_aggregation=aggregation,  # type: ignore[arg-type]
                ranking=cfg.ranking,
            )
            out = {
                "judgments": judgments,
                "rankings": rankings,
                "identical": identical,
                "too_long": too_long,
            }
        encoded: dict[str, Any] = {k: [to_row(r) for r in v] for k, v in out.items()}
        counts = cache_counts(before, call_stats(self.engine))
        if counts is not None:
            encoded["cache"] = counts
        return json.dumps(encoded, ensure_ascii=False)


def _error_row(exc: InputError) -> dict[str, Any]:
    return {"message": exc.message, "file": exc.file, "line": exc.line, "field": exc.field}


class _CacheOnDriverNode:
    """The two :class:`~charter.call_cache.CallCache` methods a cached engine uses, answered by
    the cache actor on the driver's node."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.get_many.remote(keys))

    def put_encoded(self, items: list[tuple[str, str]], kind: str, model: str) -> None:
        import ray

        ray.get(self.actor.put_encoded.remote(items, kind, model))


def _queue_source(queue: Any) -> Any:
    """A Ray Data datasource of one read task that yields the driver's chunks from ``queue``
    (``(index, chunk)`` items) as one-row blocks, until a None."""
    import pyarrow as pa
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class DriverChunks(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            def read() -> Iterator[pa.Table]:
                while (item := queue.get(block=True)) is not None:
                    yield pa.table({"index": [item[0]], "chunk": [item[1]]})

            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read, meta)]

    return DriverChunks()


def _stream(
    cfg: DictConfig,
    stage: str,
    chunks: Iterator[str],
    constitution: Constitution | None,
    on_cache: CacheCounts | None,
) -> Iterator[dict[str, Any]]:
    """Run ``chunks`` (JSON text) through ``stage`` on a Ray Data actor pool; yield each chunk's
    decoded output, in order."""
    first = next(chunks, None)
    if first is None:
        return  # nothing to do: no Ray, no model
    executor = build(cfg.executor, "executor")
    if not isinstance(executor, RayExecutor):
        raise InputError("streaming needs executor=ray", field="executor")
    ray = executor.init_ray()
    from ray.util.queue import Queue

    window = CHUNKS_AHEAD_PER_REPLICA * executor.num_replicas
    queue = Queue(maxsize=window + 1, actor_options={"num_cpus": 0})
    cache, batches = None, None
    pending = itertools.chain([first], chunks)
    sent = received = 0

    def send_next() -> bool:
        """Queue the next chunk (or, at the end, the None that ends the read); False at the end."""
        nonlocal sent
        chunk = next(pending, None)
        queue.put(None if chunk is None else (sent, chunk))
        sent += chunk is not None
        return chunk is not None

    try:
        cache = _cache_on_driver_node(ray, cfg)
        ds = _dataset(ray, executor, queue, stage, cfg, cache, constitution)
        batches = iter(ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0))
        more = True
        while more and sent < window:
            more = send_next()
        for batch in batches:
            index = int(batch["index"][0])
            if index != received:  # preserve_order failed: never write rows out of order
                raise RuntimeError(f"Ray Data returned chunk {index}, expected {received}")
            received += 1
            if more:
                more = send_next()
            out = json.loads(batch["chunk"][0])
            if "input_error" in out:
                error = out["input_error"]
                raise InputError(error.pop("message"), **error)
            if on_cache is not None and "cache" in out:
                on_cache(out["cache"])
            yield out
        if received != sent:
            raise RuntimeError(f"Ray Data returned {received} chunks of {sent}")
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops the dataset's execution when the caller stops early
        queue.shutdown(force=True)
        if cache is not None:
            ray.kill(cache)


def _cache_on_driver_node(ray: Any, cfg: DictConfig) -> Any:
    """The run's call cache as an actor on this node (None when ``call_cache`` is false)."""
    calls = open_call_cache(cfg)  # here: a damaged file is moved aside before the actor opens it
    if calls is None:
        return None
    calls.close()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return (
        ray.remote(CallCache)
        .options(num_cpus=0, scheduling_strategy=here)
        .remote(
            calls.path,
            commit_every_s=0.0,  # Ray may end the actor without running its finalizers
        )
    )


def _dataset(
    ray: Any,
    executor: RayExecutor,
    queue: Any,
    stage: str,
    cfg: DictConfig,
    cache: Any,
    constitution: Constitution | None,
) -> Any:
    """The queue's chunks, read by Ray Data and mapped by :class:`StageWorker` actors, in order."""
    from ray.data import ActorPoolStrategy

    # charter shows its own progress: no Ray Data bars, nor the lines that say they are off
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # the one read task is counted as one input, fewer than the actors; it streams many
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    ds = ray.data.read_datasource(_queue_source(queue), num_cpus=0, override_num_blocks=1)
    ds = ds.map_batches(
        StageWorker,
        fn_constructor_kwargs={
            "stage": stage,
            "settings": OmegaConf.to_container(cfg, resolve=True),
            "cache": cache,
            "constitution": constitution,
        },
        batch_size=1,  # one row = one whole chunk of chunk_size records
        batch_format="numpy",
        compute=ActorPoolStrategy(size=executor.num_replicas),
        num_cpus=executor.num_cpus_per_replica,
        num_gpus=executor.num_gpus_per_replica or None,
        runtime_env={"env_vars": env} if env else None,
    )
    ctx = ds.context  # this dataset's own copy
    ctx.execution_options.preserve_order = True
    ctx.target_max_block_size = 1  # pass each chunk on at once, never wait to fill a block
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ds

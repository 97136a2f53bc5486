"""What the Hydra commands share: the run's constitution, engines and budget, resolved config
slices, stage chunking, cache counts, and writing a dataset folder."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter.budget import Budget, Ledger, SpendMeter
from charter.building import EngineCache, engine_fingerprint, open_call_cache, resolve_path
from charter.cached_engine import CallStats
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.jsonl import atomic_dir


def run_constitution(cfg: DictConfig):
    return load_constitution(resolve_path(cfg.constitution.path))


def run_engines(cfg: DictConfig, ledger: Ledger | None = None) -> EngineCache:
    """The run's engines, behind the call cache; with a ``ledger``, each engine is metered
    against the run's budget (its rate seeded from earlier runs' throughput records)."""
    if ledger is None:
        return EngineCache(open_call_cache(cfg))
    from charter import throughput
    from charter.planning import throughput_dir

    def meter(engine: Any, node: DictConfig) -> SpendMeter:
        fingerprint = engine_fingerprint(engine, node)
        for kind in ("generate", "choice_logprobs"):
            found = throughput.rate(throughput_dir(cfg), kind, engine.model_id, fingerprint)
            if found is not None:
                ledger.seconds_per_unit.setdefault(kind, found.seconds_per_unit)
        return SpendMeter(engine, ledger)

    return EngineCache(open_call_cache(cfg), wrap=meter)


def run_budget(cfg: DictConfig) -> Budget:
    """``budget.*`` of a run config, checked (each a positive number or null)."""
    node = cfg.get("budget")
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(values, dict)
    unknown = set(values) - {"max_seconds", "max_tokens", "max_cost"}
    if unknown:
        key = sorted(unknown)[0]
        raise InputError(f"unknown budget key {key!r}", field=f"budget.{key}")
    return Budget(**values)


def resolved(*nodes: Any) -> list[Any]:
    return [
        OmegaConf.to_container(n, resolve=True) if isinstance(n, DictConfig) else n for n in nodes
    ]


def stage_chunk_size(cfg: DictConfig, engine: Any) -> int:
    """``cfg.chunk_size``, or no limit for an engine that schedules its own batches (vLLM, an
    OpenAI-compatible server): its throughput comes from seeing many requests at once, and
    chunks would leave it idle at each chunk's tail. The stages then send it one call per
    window of ``stream_window`` prompts (thousands of requests), so memory stays flat."""
    inner = engine
    while True:  # the call cache, token counter and budget meter wrap the real engine
        if isinstance(inner, SpendMeter):  # a budget stops only between calls: keep them small
            return cfg.chunk_size
        if not hasattr(inner, "inner"):
            break
        inner = inner.inner
    return sys.maxsize if getattr(inner, "schedules_own_batches", False) else cfg.chunk_size


def cache_counts(before: CallStats | None, after: CallStats | None) -> dict[str, int] | None:
    """This stage's cache hits and misses (chats), or None when the call cache is off."""
    if before is None or after is None:
        return None
    return {"hits": after.hits - before.hits, "misses": after.misses - before.misses}


def publish_dataset(
    run_dir: Path, rows: list[dict[str, Any]], folder: str = "dataset", name: str = "pairs.parquet"
) -> None:
    """Write rows as a ``datasets`` dir (``folder``) and as a Parquet file (``name``)."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()

    dataset = Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": []})
    _write_dataset(run_dir, dataset, folder, name)


def _write_dataset(run_dir: Path, dataset: Any, folder: str, name: str) -> None:
    """``dataset`` as a ``save_to_disk`` folder and a Parquet file, each all or nothing."""
    with atomic_dir(run_dir / folder) as tmp:
        dataset.save_to_disk(str(tmp))
    parquet = run_dir / name
    tmp_parquet = parquet.with_suffix(".parquet.tmp")
    dataset.to_parquet(str(tmp_parquet))
    tmp_parquet.replace(parquet)


def publish_dataset_from(
    run_dir: Path,
    name: str,
    transform: Callable[[dict[str, Any]], dict[str, Any]],
    folder: str = "dataset",
    parquet_name: str = "pairs.parquet",
) -> None:
    """:func:`publish_dataset` of the rows of ``run_dir/name`` (each passed through
    ``transform``), streamed: ``datasets`` builds its Arrow file batch by batch in a temp
    folder of the run (removed after; a killed run's is removed as a leftover), so memory does
    not grow with the row count."""
    import shutil
    import tempfile

    from datasets import Dataset, disable_progress_bars

    from charter.jsonl import read_jsonl

    path = run_dir / name
    if next(read_jsonl(path), None) is None:
        publish_dataset(run_dir, [], folder, parquet_name)
        return
    disable_progress_bars()

    def rows() -> Iterator[dict[str, Any]]:
        for _, row in read_jsonl(path):
            yield transform(row)

    scratch = tempfile.mkdtemp(dir=run_dir, prefix=".arrow-", suffix=".tmp")
    try:
        _write_dataset(
            run_dir, Dataset.from_generator(rows, cache_dir=scratch), folder, parquet_name
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def record_throughput(cfg: DictConfig, engine: Any, kind: str, units: int, seconds: float) -> None:
    """Append a stage's throughput beside the call cache for ``charter plan`` (needs the cache's
    engine fingerprint, so nothing is recorded with ``call_cache=false``)."""
    from charter import throughput
    from charter.cached_engine import CachedEngine
    from charter.planning import throughput_dir

    if not isinstance(engine, CachedEngine):
        return
    rec = throughput.Record(
        kind, engine.model_id, engine.model_fingerprint, units, seconds, throughput.now()
    )
    throughput.record(throughput_dir(cfg), rec)


def write_run_report(cfg: DictConfig, run_dir: Path) -> None:
    """``report.html`` at the end of a command (``report.enabled``); a report that cannot be
    made is a warning, since the run's own outputs are complete."""
    from charter.progress import console

    node = cfg.get("report")
    if node is None or not node.enabled:
        return
    from charter.report import write_report

    try:
        path = write_report(run_dir, max_pairs=int(node.max_pairs))
    except InputError as exc:
        console.print(f"warning: no report: {exc}", markup=False, soft_wrap=True)
        return
    console.print(f"report: {path}", soft_wrap=True, highlight=False)

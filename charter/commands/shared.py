"""What the Hydra commands share: the run's constitution and engines, resolved config slices,
stage chunking, cache counts, and writing a dataset folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter.building import EngineCache, open_call_cache, resolve_path
from charter.call_cache import CallStats
from charter.constitution import load_constitution
from charter.jsonl import atomic_dir


def run_constitution(cfg: DictConfig):
    return load_constitution(resolve_path(cfg.constitution.path))


def run_engines(cfg: DictConfig) -> EngineCache:
    return EngineCache(open_call_cache(cfg))


def resolved(*nodes: Any) -> list[Any]:
    return [
        OmegaConf.to_container(n, resolve=True) if isinstance(n, DictConfig) else n for n in nodes
    ]


def stage_chunk_size(cfg: DictConfig, engine: Any) -> int:
    """``cfg.chunk_size``, or the whole stage in one call for an engine that schedules its own
    batches (vLLM, an OpenAI-compatible server): its throughput comes from seeing every request
    at once, and chunks would leave it idle at each chunk's tail."""
    inner = engine
    while hasattr(inner, "inner"):  # the call cache and token counter wrap the real engine
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
    with atomic_dir(run_dir / folder) as tmp:
        dataset.save_to_disk(str(tmp))
    parquet = run_dir / name
    tmp_parquet = parquet.with_suffix(".parquet.tmp")
    dataset.to_parquet(str(tmp_parquet))
    tmp_parquet.replace(parquet)

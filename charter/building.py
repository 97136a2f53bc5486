"""Turn composed configs into objects: the only place that calls ``hydra.utils.instantiate``.

Classes never see a DictConfig. Errors raised while building (a bad model name, a bad value)
come back as :class:`~charter.errors.InputError` naming the config key, instead of Hydra's
"Error in call to target" wrapper.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from charter.cached_engine import CachedEngine, CallStats
from charter.call_cache import CACHE_FILE, CallCache
from charter.errors import InputError
from charter.generators.model_files import default_cache_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def package_data(name: str) -> str:
    """Absolute path of a file in ``charter/data`` (the ``${charter_data:NAME}`` resolver)."""
    return str(resources.files("charter") / "data" / name)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("charter_data"):
        OmegaConf.register_new_resolver("charter_data", package_data)


def resolve_path(path: str) -> Path:
    """A user path as given, else relative to the charter checkout (for bundled data)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    bundled = PROJECT_ROOT / p
    return bundled if bundled.exists() else p


def _input_error_in(exc: BaseException) -> InputError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``node`` (found at config ``key``), surfacing user errors plainly.

    A value where a mapping of settings belongs (``key=5``) is refused: instantiating it would
    hand the caller the value instead of an object.
    """
    if not isinstance(node, DictConfig):
        raise InputError(f"must be a mapping of settings, not a value; got {node!r}", field=key)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        inner = _input_error_in(exc)
        if inner is not None:
            raise inner from None
        cause = exc.__cause__ or exc
        lines = [line.strip() for line in str(cause).splitlines()]
        reason = " ".join(line for line in lines if line and not line.startswith("full_key:"))
        raise InputError(f"{type(cause).__name__}: {reason}", field=key) from None


THROUGHPUT_ONLY = frozenset(
    {
        "batch_size",
        "num_threads",
        "cache_dir",
        "share_prefixes",
        "gpu_memory_utilization",
        "kv_cache_memory_gb",
        "enable_prefix_caching",
        "enforce_eager",
        "enable_chunked_prefill",
        "max_concurrency",
        "timeout_s",
        "max_retries",
        "backoff_s",
        "api_key_env",
        "price_per_mtok",
    }
)
"""Engine config keys (of any backend) that change speed, memory or where files live, not what
a call returns, beyond last-bit float noise; changing them keeps the cache's entries valid."""


_NUMERIC_LIBRARIES = ("torch", "transformers", "vllm")


def _code_identity(cls: type) -> dict[str, Any]:
    """The engine's class, the source of its module and of the charter modules it imports, and
    the installed numeric libraries' versions.

    A changed engine (a sampling fix, a new scoring helper) or a new torch can change outputs
    without changing the model, so either one starts fresh cache entries rather than serving
    stale ones.
    """
    module = sys.modules[cls.__module__]
    names = {cls.__module__}
    for value in vars(module).values():
        name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.startswith("charter."):
            names.add(name)
    sources = {}
    for name in sorted(names):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            sources[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    versions = {}
    for lib in _NUMERIC_LIBRARIES:  # installed versions: the same whatever is imported yet
        with suppress(importlib.metadata.PackageNotFoundError):
            versions[lib] = importlib.metadata.version(lib)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "sources": sources,
        "versions": versions,
    }


def engine_fingerprint(engine: Any, node: DictConfig) -> str:
    """What identifies an engine's results beyond its name, for the call cache's keys.

    The weights fingerprint (``weights_sha256`` where the engine has one, else its ``model_id``),
    every config key that can change an output (dtype, device, system prompt, context cap; batch
    size, threads and the model folder are left out), and the engine's code identity.
    """
    weights = getattr(engine, "weights_sha256", engine.model_id)
    return fingerprint_of(type(engine), weights, node)


def fingerprint_of(cls: type, weights: str, node: DictConfig) -> str:
    """:func:`engine_fingerprint` from its parts, so ``charter plan`` can compute the cache keys
    of a run without loading the model."""
    settings = OmegaConf.to_container(node, resolve=True)
    assert isinstance(settings, dict)
    material = {
        "weights": weights,
        "settings": {k: v for k, v in settings.items() if k not in THROUGHPUT_ONLY},
        "code": _code_identity(cls),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def open_call_cache(cfg: DictConfig) -> CallCache | None:
    """The run's call cache, ``<cache_dir>/calls.sqlite``; None when ``call_cache`` is false.

    ``cache_dir: null`` means :func:`~charter.generators.model_files.default_cache_dir`
    (``$CHARTER_CACHE_DIR``, else ``~/.cache/charter``).
    """
    if not cfg.get("call_cache", True):
        return None
    root = Path(cfg.cache_dir).expanduser() if cfg.get("cache_dir") else default_cache_dir()
    path = root / CACHE_FILE
    every = float(cfg.get("call_cache_commit_s", 1.0))
    try:
        return CallCache(path, commit_every_s=every)
    except sqlite3.DatabaseError as exc:
        if "not a database" not in str(exc) and "malformed" not in str(exc):
            raise
        # the cache only saves time: keep the damaged file for a look, start an empty one
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                side.replace(Path(f"{aside}{suffix}"))
        from charter.progress import console

        console.print(
            f"warning: the call cache {path} was damaged ({exc}); moved it to {aside} and "
            "started an empty one",
            markup=False,
            soft_wrap=True,
        )
        return CallCache(path, commit_every_s=every)


class EngineCache:
    """Load each distinct engine config once, so generator and judge can share one model.

    With a ``calls`` cache, every engine is wrapped in a
    :class:`~charter.cached_engine.CachedEngine`, so its calls are looked up before they are made.
    Where the engine runs is the config's ``executor`` (``charter/executors``): in this process,
    or as Ray replicas behind an Engine-protocol object; the cache stays in this process, outside.

    Args:
        calls: the call cache, or None for none.
        wrap: applied to each built engine before the cache wraps it, so it sees only the calls
            that reach a model (the run's budget meter).
    """

    def __init__(
        self,
        calls: CallCache | None = None,
        wrap: Callable[[Any, DictConfig], Any] | None = None,
    ) -> None:
        self.calls = calls
        self.wrap = wrap
        self._engines: dict[str, Any] = {}
        self._executor: Any = None

    def _executor_for(self, node: DictConfig) -> Any:
        # Read from the engine node's root config, so the commands need not pass it along;
        # configs without an ``executor`` (eval-judge) run locally.
        root = node._get_root()
        spec = root.get("executor") if isinstance(root, DictConfig) else None
        if self._executor is None and spec is not None:
            self._executor = build(spec, "executor")
        return self._executor

    def get(self, node: DictConfig, key: str) -> Any:
        fingerprint = OmegaConf.to_yaml(node, resolve=True)
        if fingerprint not in self._engines:
            executor = self._executor_for(node)
            if executor is None:
                engine = build(node, key)
            else:
                engine = executor.engine(node, key, build, engine_fingerprint)
            # a sharded engine carries its wrapped engine's fingerprint: same cache keys
            known = getattr(engine, "engine_fingerprint", None) or engine_fingerprint(engine, node)
            if self.wrap is not None:
                engine = self.wrap(engine, node)
            if self.calls is not None:
                engine = CachedEngine(engine, self.calls, known)
            self._engines[fingerprint] = engine
        return self._engines[fingerprint]

    def commit(self) -> None:
        """Commit the call cache's waiting results (a stage's end: see
        :class:`~charter.call_cache.CallCache`)."""
        if self.calls is not None:
            self.calls.flush()


def call_stats(engine: Any) -> CallStats | None:
    """A copy of an engine's cache counters (None when it is not cached), to diff around a stage."""
    stats = getattr(engine, "stats", None)
    return CallStats(**vars(stats)) if isinstance(stats, CallStats) else None

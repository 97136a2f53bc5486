"""A content-addressed cache of engine calls, so a rerun pays only for what changed.

Every chat sent to :meth:`generate` or :meth:`choice_logprobs` is keyed by a sha256 of what
determines its result: the model (name and a fingerprint of its weights and settings), the
sampling settings and seed (or the choices), ``n``, and the full chat. The judge's chat holds the
rendered template and principle text and the order of the two responses, so editing one principle
changes exactly the keys of the comparisons that drew it. Parsing happens after the cache, so
fixing how outputs are combined or parsed reuses every stored call.

The store is one SQLite file in WAL mode: concurrent runs read and write it safely, and each
engine call is committed as soon as it returns, so a killed run loses at most its in-flight call.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from charter.generators.engine import Engine, SamplingSettings
from charter.records import Chat, Completion

CACHE_FILE = "calls.sqlite"
KEY_VERSION = 1
"""Bumped when what a value holds changes, so old entries are never misread."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_model ON calls (model);
CREATE INDEX IF NOT EXISTS calls_created_at ON calls (created_at);
"""
_BATCH = 500  # keys per SELECT, well under SQLite's bound-variable limit


@dataclass(frozen=True)
class ModelEntries:
    """What the cache holds for one model."""

    model: str
    entries: int
    bytes: int
    oldest: float
    newest: float


@dataclass(frozen=True)
class CacheSummary:
    """``charter cache stats``: totals, then one row per model (most entries first)."""

    path: str
    entries: int
    file_bytes: int
    models: list[ModelEntries]


class CallCache:
    """Engine results in one SQLite file, shared by every run that points at it.

    A connection is opened per operation (cheap next to a model call), so the object holds no
    handle: it survives forks and never needs closing.

    Args:
        path: the SQLite file; its folder is created.
        timeout_s: how long a writer waits for another process's write to finish.
    """

    def __init__(self, path: Path | str, timeout_s: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
            yield db
        finally:
            db.close()

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values of those ``keys`` that are present, decoded from JSON."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._db() as db:
            for start in range(0, len(unique), _BATCH):
                batch = unique[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", batch)
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: Sequence[tuple[str, Any]], *, kind: str, model: str) -> None:
        """Store ``(key, value)`` pairs in one transaction; a key already there is kept.

        A key present twice can only come from two runs computing the same call, whose results
        are the same, so the first one written wins.
        """
        now = time.time()
        rows = [(k, kind, model, json.dumps(v, ensure_ascii=False), now) for k, v in items]
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock up front: waits, never deadlocks
            db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")

    def summary(self) -> CacheSummary:
        """Entry counts, stored bytes and age range, in total and per model."""
        with self._db() as db:
            rows = db.execute(
                "SELECT model, COUNT(*), SUM(LENGTH(value) + LENGTH(key)), MIN(created_at), "
                "MAX(created_at) FROM calls GROUP BY model ORDER BY COUNT(*) DESC, model"
            ).fetchall()
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return CacheSummary(
            path=str(self.path),
            entries=sum(r[1] for r in rows),
            file_bytes=sum(f.stat().st_size for f in files if f.exists()),
            models=[ModelEntries(*r) for r in rows],
        )

    def prune(self, *, older_than_days: float | None = None, model: str | None = None) -> int:
        """Delete entries created more than ``older_than_days`` ago and/or of ``model``.

        Both filters given means both must hold. Returns the number of entries deleted; the file
        shrinks when no other process is using it (VACUUM), else on a later prune.

        Raises:
            ValueError: neither filter is given (wiping the cache is ``rm``, not a prune).
        """
        if older_than_days is None and model is None:
            raise ValueError("prune needs older_than_days and/or model")
        where, args = [], []
        if older_than_days is not None:
            where.append("created_at < ?")
            args.append(time.time() - older_than_days * 86400)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            deleted = db.execute(f"DELETE FROM calls WHERE {' AND '.join(where)}", args).rowcount
            db.execute("COMMIT")
            if deleted:
                # another run may hold the file open; then the space is reused, not returned
                with suppress(sqlite3.OperationalError):
                    db.execute("VACUUM")
        return deleted


@dataclass
class CallStats:
    """Chats answered from the cache (``hits``) and sent to the model (``misses``).

    ``calls`` counts calls that reached the inner engine (at most one per outer call).
    """

    hits: int = 0
    misses: int = 0
    calls: int = 0


def call_key(kind: str, model_id: str, model_fingerprint: str, settings: Any, chat: Chat) -> str:
    """sha256 of the canonical JSON of everything that determines one chat's result."""
    material = {
        "v": KEY_VERSION,
        "kind": kind,
        "model_id": model_id,
        "model": model_fingerprint,
        "settings": settings,
        "chat": chat,
    }
    canonical = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CachedEngine:
    """An :class:`~charter.generators.engine.Engine` that asks ``engine`` only for new chats.

    Each call looks up every chat, sends the misses (deduplicated, in their original order) to the
    inner engine in one batched call, stores the results, and returns all results in input order.

    Args:
        engine: the engine that does the work.
        cache: where results are kept.
        model_fingerprint: identifies the model beyond its name: its weights and every setting
            that changes results (see :func:`charter.building.engine_fingerprint`).
    """

    def __init__(self, engine: Engine, cache: CallCache, model_fingerprint: str) -> None:
        self.inner = engine
        self.cache = cache
        self.model_fingerprint = model_fingerprint
        self.model_id = engine.model_id
        self.context_length = engine.context_length
        self.stats = CallStats()

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Not cached: tokenizing is cheap next to a lookup."""
        return self.inner.count_tokens(chats)

    @property
    def supports_json_schema(self) -> bool:
        """Whatever the inner engine says: the cache must not hide constrained decoding."""
        return bool(getattr(self.inner, "supports_json_schema", False))

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        """:meth:`Engine.generate`, through the cache (each chat's ``n`` samples are one entry).

        A ``json_schema`` is passed on and is part of the key; without one, keys are as before.
        """
        settings: dict[str, Any] = {"sampling": asdict(sampling), "n": n}
        schema = {} if json_schema is None else {"json_schema": json_schema}
        settings.update(schema)
        values = self._through(
            "generate",
            chats,
            settings,
            lambda misses: [
                [asdict(c) for c in completions]
                for completions in self.inner.generate(misses, sampling, n, **schema)
            ],
        )
        return [[Completion(**c) for c in value] for value in values]

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """:meth:`Engine.choice_logprobs`, through the cache."""
        choices = list(choices)
        return self._through(
            "choice_logprobs",
            chats,
            {"choices": choices},
            lambda misses: self.inner.choice_logprobs(misses, choices),
        )

    def _through(
        self,
        kind: str,
        chats: Sequence[Chat],
        settings: dict[str, Any],
        compute: Callable[[list[Chat]], list[Any]],
    ) -> list[Any]:
        keys = [call_key(kind, self.model_id, self.model_fingerprint, settings, c) for c in chats]
        found = self.cache.get_many(keys)
        todo = {k: chat for k, chat in zip(keys, chats, strict=True) if k not in found}
        if todo:
            results = compute(list(todo.values()))
            fresh = list(zip(todo, results, strict=True))
            self.cache.put_many(fresh, kind=kind, model=self.model_id)
            # read back through JSON, so a first run returns exactly what a rerun will
            found.update((k, json.loads(json.dumps(v))) for k, v in fresh)
            self.stats.calls += 1
        self.stats.misses += len(todo)
        self.stats.hits += len(chats) - len(todo)
        return [found[k] for k in keys]

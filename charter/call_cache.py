"""A content-addressed cache of engine calls, so a rerun pays only for what changed.

Every chat sent to :meth:`generate` or :meth:`choice_logprobs` is keyed by a sha256 of what
determines its result: the model (name and a fingerprint of its weights and settings), the
sampling settings and seed (or the choices), ``n``, and the full chat. The judge's chat holds the
rendered template and principle text and the order of the two responses, so editing one principle
changes exactly the keys of the comparisons that drew it. Parsing happens after the cache, so
fixing how outputs are combined or parsed reuses every stored call.

The store is one SQLite file in WAL mode: concurrent runs read and write it safely. Finished
calls are committed in groups, at most ``commit_every_s`` (1 s) apart, and at the end of the
process: a commit writes every index page its random keys touch, which cost ~1.5 ms per call of
a few dozen chats and was the largest part of charter's overhead on a fast engine. A killed run
therefore loses its in-flight call and at most the last second of finished ones (a call slower
than that is committed as soon as it returns, as before); ``commit_every_s=0`` commits every call.

A group is committed by a thread of its own while the stage goes on, as one SQL statement that
reads the rows from a JSON array: SQLite releases the GIL for the whole statement, so on a
machine with a second core the insert costs the stage almost nothing (it was ~5 us of every
cached chat's ~20). Row by row (``executemany``) the thread would need the GIL back between
rows and, with the stage's thread busy, wait a switch interval (5 ms) for each.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from charter.jsonl import json_line

CACHE_FILE = "calls.sqlite"

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
Row = tuple[str, str, str, str, float]
"""A stored call: key, kind, model, value (JSON text), created_at."""


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

    One connection per process and thread is opened on first use and kept: opening and closing
    per operation cost ~2 ms (each close checkpoints the WAL), which at tens of thousands of
    cached calls a second was most of the pipeline's overhead. The handle is keyed by process id,
    so a forked child (a Ray worker, a test's subprocess) opens its own instead of sharing the
    parent's, and it is closed when the object is garbage-collected.

    Stored values wait in memory until the next commit (see the module docstring); lookups see
    them at once, other processes after the commit. A commit that fails in the background
    (disk full, another writer holding the file past ``timeout_s``) keeps its rows waiting and
    is raised by the next store or :meth:`flush`, in the caller's thread.

    Args:
        path: the SQLite file; its folder is created.
        timeout_s: how long a writer waits for another process's write to finish.
        commit_every_s: the longest a finished call waits to be committed (0: none waits).
    """

    def __init__(
        self, path: Path | str, timeout_s: float = 60.0, commit_every_s: float = 1.0
    ) -> None:
        self.path = Path(path).expanduser()
        self.timeout_s = timeout_s
        self.commit_every_s = commit_every_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start()
        with self._db() as db:
            _switch_to_wal(db, time.monotonic() + timeout_s)
            db.executescript(_SCHEMA)

    def _start(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pending: dict[str, Row] = {}  # waiting for the next commit
        self._writing: dict[str, Row] = {}  # being committed by the background thread
        self._committer: threading.Thread | None = None
        self._failure: BaseException | None = None  # the last background commit's, unraised
        self._writer: tuple[int, sqlite3.Connection] | None = None
        self._last_commit = time.monotonic()
        # at exit (or when this object is collected) the waiting rows are committed on a handle
        # of their own: the finalizer must not hold the object. A background commit still
        # running is a thread the interpreter joins first (it is not a daemon).
        weakref.finalize(self, _commit_left, self.path, self.timeout_s, self._pending)

    def __getstate__(self) -> dict[str, Any]:
        # never a live handle, nor rows this process has yet to commit
        return {"path": self.path, "timeout_s": self.timeout_s, "every": self.commit_every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout_s = state["path"], state["timeout_s"]
        self.commit_every_s = state.get("every", 1.0)
        self._start()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        held = getattr(self._local, "db", None)
        if held is None or held[0] != os.getpid():
            held = self._local.db = (os.getpid(), _connect(self.path, self.timeout_s))
        db = held[1]
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # a failed write must not leave the kept handle mid-transaction
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's handle and the background commits' now (tests that delete the
        file; they reopen on next use)."""
        self.flush()
        for held in (getattr(self._local, "db", None), self._writer):
            if held is not None and held[0] == os.getpid():
                held[1].close()
        self._local.db = self._writer = None

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values of those ``keys`` that are present, decoded from JSON."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        if self._pending or self._writing:
            with self._lock:
                waiting = {
                    k: row[3]
                    for k in unique
                    if (row := self._pending.get(k) or self._writing.get(k)) is not None
                }
            found.update((k, json.loads(v)) for k, v in waiting.items())
            unique = [k for k in unique if k not in waiting]
        with self._db() as db:
            for start in range(0, len(unique), _BATCH):
                batch = unique[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", batch)
                found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: Sequence[tuple[str, Any]], *, kind: str, model: str) -> None:
        """Store ``(key, value)`` pairs, committed as :meth:`put_encoded` says; a key already
        there (or waiting) is kept.

        A key present twice can only come from two runs computing the same call, whose results
        are the same, so the first one written wins.
        """
        self.put_encoded([(k, json_line(v)) for k, v in items], kind, model)

    def put_encoded(self, items: Sequence[tuple[str, str]], kind: str, model: str) -> None:
        """:meth:`put_many` for values already encoded as JSON text. With ``commit_every_s``
        > 0, a background commit starts if the last one is that old (and done), else they
        wait for a later call's or :meth:`flush`; with 0 they are committed before this
        returns.

        Raises:
            sqlite3.Error: the last background commit failed (its rows still wait).
        """
        now = time.time()
        with self._lock:
            failure, self._failure = self._failure, None
            for k, text in items:
                # the first one written wins, as in the file
                if k not in self._pending and k not in self._writing:
                    self._pending[k] = (k, kind, model, text, now)
            due = time.monotonic() - self._last_commit >= self.commit_every_s
            if due and self.commit_every_s > 0 and failure is None:
                self._commit_in_background()
        if failure is not None:
            raise failure
        if due and self.commit_every_s <= 0:
            self.flush()

    def _commit_in_background(self) -> None:
        """Hand the waiting rows to a thread that commits them (the lock is held); nothing if
        the last one is still at it."""
        if not self._pending or (self._committer is not None and self._committer.is_alive()):
            return
        self._writing.update(self._pending)
        self._pending.clear()
        rows = list(self._writing.values())
        self._committer = threading.Thread(
            target=self._commit_rows, args=(rows,), name="charter-call-cache-commit"
        )
        self._committer.start()
        self._last_commit = time.monotonic()

    def _commit_rows(self, rows: list[Row]) -> None:
        """The background commit: on failure the rows go back to waiting, and the error is kept
        for the caller's thread."""
        try:
            _insert_as_json(self._writer_db(), rows)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread instead
            with self._lock:
                for k, row in self._writing.items():
                    self._pending.setdefault(k, row)
                self._writing.clear()
                self._failure = exc
            return
        with self._lock:
            self._writing.clear()

    def _writer_db(self) -> sqlite3.Connection:
        """The background commits' handle, kept like :meth:`_db`'s; one commit runs at a time,
        so it is never used by two threads at once."""
        if self._writer is None or self._writer[0] != os.getpid():
            db = _connect(self.path, self.timeout_s, check_same_thread=False)
            self._writer = (os.getpid(), db)
        return self._writer[1]

    def flush(self) -> None:
        """Wait for a background commit, then commit every stored value still waiting (a failed
        background commit's rows too), in one transaction."""
        if self._committer is not None:
            self._committer.join()
        with self._lock:
            self._failure = None  # its rows are retried here
            rows = list(self._pending.values())
            if rows:
                with self._db() as db:
                    _insert(db, rows)
                self._pending.clear()  # only once they are in: a failed write keeps them
            self._last_commit = time.monotonic()

    def summary(self) -> CacheSummary:
        """Entry counts, stored bytes and age range, in total and per model."""
        self.flush()
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
        self.flush()
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


def _connect(path: Path, timeout_s: float, check_same_thread: bool = True) -> sqlite3.Connection:
    db = sqlite3.connect(
        path, timeout=timeout_s, isolation_level=None, check_same_thread=check_same_thread
    )
    db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
    # checkpoint the WAL into the file every ~40 MB, not 4 MB: a run that stores tens of
    # thousands of calls a second then spends its time storing, not copying pages
    db.execute("PRAGMA wal_autocheckpoint=10000")
    # keys are hashes, so every stored call lands on a random page of the key index: with
    # SQLite's default 2 MB page cache a commit re-read most of them (11 us a row on a
    # 130k-entry cache), with 32 MB most stay here (7 us); memory is taken as pages are
    db.execute("PRAGMA cache_size=-32768")
    return db


def _insert(db: sqlite3.Connection, rows: Sequence[Row]) -> None:
    db.execute("BEGIN IMMEDIATE")  # take the write lock up front: waits, never deadlocks
    db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?)", sorted(rows))
    db.execute("COMMIT")


_AS_JSON = msgspec.json.Encoder().encode  # strings as json writes them; SQLite reads them back
_FROM_JSON = (
    "INSERT OR IGNORE INTO calls SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]')"
    " FROM json_each(?) ORDER BY json_extract(value, '$[0]')"
)


def _insert_as_json(db: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """:func:`_insert` as one statement over a JSON array of the rows: the GIL is released for
    all of it (see the module docstring). Row by row instead where that cannot work: a SQLite
    built without its JSON functions (before 3.38 they were optional), or a key, kind or model
    holding a NUL, where SQLite's JSON reader ends a string (never one charter makes: values
    are JSON text, NULs escaped)."""
    if any("\x00" in k or "\x00" in kind or "\x00" in model for k, kind, model, _, _ in rows):
        _insert(db, rows)
        return
    payload = _AS_JSON(rows).decode()
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(_FROM_JSON, (payload,))
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        if not _lacks_json(exc):  # a SQLite without them fails at once, at the statement's prepare
            raise
        _insert(db, rows)


def _lacks_json(exc: BaseException) -> bool:
    """Whether ``exc`` says this SQLite has no JSON functions."""
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and (
        "no such function: json" in text or "no such table: json" in text
    )


def _commit_left(path: Path, timeout_s: float, pending: dict[str, tuple]) -> None:
    """A cache's waiting rows, committed at exit on a handle of this call's own."""
    if not pending:
        return
    db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    try:
        _insert(db, list(pending.values()))
        pending.clear()
    finally:
        db.close()


def _switch_to_wal(db: sqlite3.Connection, deadline: float) -> None:
    """Put the file in WAL mode (persistent: readers never block the writer), waiting for peers.

    Switching the journal mode needs the file to itself, and SQLite answers "database is locked"
    at once, without its busy handler, when another process opens the same new file at the same
    moment: two runs started together on a fresh cache_dir then lost one of them. So the switch
    is retried until the writer's own timeout; once the file is in WAL mode it is a no-op.
    """
    pause = 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

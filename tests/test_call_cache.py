"""The call cache: only new chats reach the model, results are exact, and sharing is safe."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import pickle
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from charter import call_cache
from charter.cached_engine import CachedEngine
from charter.call_cache import CallCache, _switch_to_wal
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.generators.transformers_engine import TransformersEngine
from charter.records import Chat, Completion
from tests.engine_fixtures import build_tiny_llama

SAMPLING = SamplingSettings(max_new_tokens=8, temperature=0.8, seed=3)


def user(text: str) -> Chat:
    return [{"role": "user", "content": text}]


CHATS = [user("Hi"), user("How do I boil an egg?"), user("What is 2 + 2?")]


class RecordingEngine:
    """A FakeEngine that records every batch it is asked for."""

    def __init__(self, model_id: str = "fake") -> None:
        self.fake = FakeEngine(model_id)
        self.model_id = model_id
        self.context_length = self.fake.context_length
        self.batches: list[list[Chat]] = []

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return self.fake.count_tokens(chats)

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        self.batches.append(list(chats))
        return self.fake.generate(chats, sampling, n)

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        self.batches.append(list(chats))
        return self.fake.choice_logprobs(chats, choices)


def cached(tmp_path: Path, fingerprint: str = "w1") -> tuple[CachedEngine, RecordingEngine]:
    inner = RecordingEngine()
    return CachedEngine(inner, CallCache(tmp_path / "calls.sqlite"), fingerprint), inner


def test_only_misses_reach_the_engine_in_one_batch_and_results_are_unchanged(tmp_path):
    engine, inner = cached(tmp_path)
    first = engine.generate(CHATS[:2], SAMPLING, n=2)
    assert (engine.stats.hits, engine.stats.misses, engine.stats.calls) == (0, 2, 1)
    mixed = engine.generate(CHATS, SAMPLING, n=2)
    assert inner.batches[-1] == [CHATS[2]]  # the one new chat, alone
    assert (engine.stats.hits, engine.stats.misses, engine.stats.calls) == (2, 3, 2)
    assert mixed[:2] == first
    assert mixed == FakeEngine().generate(CHATS, SAMPLING, n=2)
    scores = engine.choice_logprobs(CHATS, ["A", "B"])
    again = engine.choice_logprobs(CHATS, ["A", "B"])
    assert scores == again == FakeEngine().choice_logprobs(CHATS, ["A", "B"])
    assert list(again[0]) == ["A", "B"]
    assert engine.stats.calls == 3  # the second scoring call never reached the engine


def test_a_repeated_chat_is_computed_once(tmp_path):
    engine, inner = cached(tmp_path)
    out = engine.choice_logprobs([CHATS[0], CHATS[1], CHATS[0]], ["A", "B"])
    assert inner.batches == [[CHATS[0], CHATS[1]]]
    assert out[0] == out[2]
    assert (engine.stats.hits, engine.stats.misses) == (1, 2)


@pytest.mark.parametrize(
    "change",
    ["seed", "temperature", "n", "fingerprint", "chat", "model"],
)
def test_anything_that_changes_the_result_changes_the_key(tmp_path, change):
    engine, _ = cached(tmp_path)
    engine.generate(CHATS[:1], SAMPLING, n=1)
    sampling, n, chats, fingerprint, model = SAMPLING, 1, CHATS[:1], "w1", "fake"
    if change == "seed":
        sampling = SamplingSettings(max_new_tokens=8, temperature=0.8, seed=4)
    elif change == "temperature":
        sampling = SamplingSettings(max_new_tokens=8, temperature=0.7, seed=3)
    elif change == "n":
        n = 2
    elif change == "fingerprint":
        fingerprint = "w2"
    elif change == "chat":
        chats = [user("Hi!")]
    else:
        model = "other"
    inner = RecordingEngine(model)
    other = CachedEngine(inner, engine.cache, fingerprint)
    other.generate(chats, sampling, n=n)
    assert other.stats.misses == 1
    # and nothing else: the same call again is a hit
    again = CachedEngine(RecordingEngine(), engine.cache, "w1")
    again.generate(CHATS[:1], SAMPLING, n=1)
    assert again.stats.hits == 1


def test_choices_are_part_of_the_key(tmp_path):
    engine, _ = cached(tmp_path)
    engine.choice_logprobs(CHATS, ["A", "B"])
    engine.choice_logprobs(CHATS, ["B", "A"])
    assert engine.stats.misses == 6


def test_results_outlive_the_process_that_stored_them(tmp_path):
    engine, _ = cached(tmp_path)
    expected = engine.choice_logprobs(CHATS, ["A", "B"])
    engine.cache.close()  # the run ends
    fresh, inner = cached(tmp_path)  # a new CallCache on the same file, like a new run
    assert fresh.choice_logprobs(CHATS, ["A", "B"]) == expected
    assert inner.batches == [] and fresh.stats.hits == 3


def test_stats_and_prune_by_model_and_by_age(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    cache.put_many([("k1", 1), ("k2", 2)], kind="generate", model="gen")
    cache.put_many([("k3", 3)], kind="choice_logprobs", model="judge")
    summary = cache.summary()
    assert summary.entries == 3 and summary.file_bytes > 0
    assert [(m.model, m.entries) for m in summary.models] == [("gen", 2), ("judge", 1)]
    assert cache.prune(model="judge") == 1
    assert cache.prune(older_than_days=1) == 0  # everything is seconds old
    time.sleep(0.05)
    assert cache.prune(older_than_days=0.01 / 86400) == 2
    assert cache.summary().entries == 0
    with pytest.raises(ValueError):
        cache.prune()


def _hammer(path: str, worker: int) -> None:
    cache = CallCache(path, timeout_s=30)
    for i in range(60):
        # half the keys are shared by both workers, as when two runs compute the same call
        key = f"shared-{i}" if i % 2 else f"own-{worker}-{i}"
        cache.put_many([(key, {"i": i})], kind="generate", model=f"m{worker}")
        assert cache.get_many([key])[key] == {"i": i}


def test_two_processes_write_one_cache_at_once(tmp_path):
    path = str(tmp_path / "calls.sqlite")
    CallCache(path)
    ctx = multiprocessing.get_context("fork")  # the workers touch only sqlite
    workers = [ctx.Process(target=_hammer, args=(path, w)) for w in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert CallCache(path).summary().entries == 30 + 2 * 30


def _open_when_told(path: str, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    CallCache(path, timeout_s=30).put_many([("k", 1)], kind="generate", model="m")


def test_processes_opening_a_new_cache_at_the_same_moment_all_get_it(tmp_path):
    # two runs started together on a fresh cache_dir: before the WAL switch was retried, about
    # one process in 40 here failed at once with "database is locked"
    ctx = multiprocessing.get_context("fork")
    for round_ in range(12):
        path = str(tmp_path / f"calls-{round_}.sqlite")
        start = ctx.Barrier(4)
        workers = [ctx.Process(target=_open_when_told, args=(path, start)) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert [w.exitcode for w in workers] == [0] * 4, f"round {round_}"


class _BusyThenFree:
    """A connection whose WAL switch is refused as locked ``busy`` times, then succeeds."""

    def __init__(self, busy: int, error: str = "database is locked") -> None:
        self.busy, self.error, self.calls = busy, error, 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.busy:
            raise sqlite3.OperationalError(self.error)


def test_the_wal_switch_waits_out_a_peer_but_not_past_the_timeout_or_other_errors():
    db = _BusyThenFree(busy=3)
    _switch_to_wal(db, deadline=time.monotonic() + 10)  # type: ignore[arg-type]
    assert db.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _switch_to_wal(_BusyThenFree(busy=10**6), deadline=time.monotonic() + 0.1)  # type: ignore[arg-type]
    other = _BusyThenFree(busy=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        _switch_to_wal(other, deadline=time.monotonic() + 10)  # type: ignore[arg-type]
    assert other.calls == 1


def test_transformers_results_through_the_cache_equal_uncached(tmp_path):
    """Seeds follow (seed, sample, prompt), so sending only the misses changes no sample.

    batch_size=1 takes padding out of the comparison: a random model's flat distributions let
    last-bit padding noise tip draws (the engine documents this), which is not the cache's doing.
    """
    model = TransformersEngine(str(build_tiny_llama(tmp_path / "tiny")), batch_size=1)
    uncached_text = model.generate(CHATS, SAMPLING, n=2)
    uncached_scores = model.choice_logprobs(CHATS, [" A", " B"])
    engine = CachedEngine(model, CallCache(tmp_path / "calls.sqlite"), model.weights_sha256)
    engine.generate(CHATS[1:2], SAMPLING, n=2)  # cache one chat first: the rest go as misses
    assert engine.generate(CHATS, SAMPLING, n=2) == uncached_text
    engine.choice_logprobs(CHATS[2:], [" A", " B"])
    through = engine.choice_logprobs(CHATS, [" A", " B"])
    for got, want in zip(through, uncached_scores, strict=True):
        assert got == want
    assert engine.stats.misses == 3 + 3 and engine.stats.hits == 1 + 1


def test_engines_that_batch_for_themselves_get_a_whole_stage_per_call(tmp_path) -> None:
    from omegaconf import OmegaConf

    from charter.commands.shared import stage_chunk_size
    from charter.generators.openai_engine import OpenAIEngine
    from charter.generators.vllm_engine import VLLMEngine

    class Served(FakeEngine):
        schedules_own_batches = True

    cfg = OmegaConf.create({"chunk_size": 32})
    cached = CachedEngine(Served(), CallCache(tmp_path / "calls.sqlite"), "fp")
    assert stage_chunk_size(cfg, cached) > 10**9  # seen through the cache wrapper
    assert stage_chunk_size(cfg, FakeEngine()) == 32  # transformers-like: progress-sized chunks
    assert VLLMEngine.schedules_own_batches and OpenAIEngine.schedules_own_batches


def test_fast_keys_are_the_canonical_json_keys_byte_for_byte():
    """Keys computed with the shared tail serialised once equal the definition's, so caches
    filled before the speed-up are still hit (unicode, quotes and nesting included)."""
    from charter.call_encoding import _slow_call_key, call_key

    every_code_point = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    chats = [
        user('héllo "quoted" \\ 你好'),
        [{"role": "system", "content": ""}, *user("x")],
        user(every_code_point),  # msgspec writes each as json does
        [{"role": "user", "content": "x", "weight": 0.5, "n": 1e-05}],  # not only strings
        [("role", "user")],  # not even a dict
    ]
    settings = [{"choices": ["A", "B"]}, {"sampling": {"seed": 3, "temperature": 0.7}, "n": 2}]
    for chat in chats:
        for s in settings:
            for kind in ("generate", "choice_logprobs"):
                assert call_key(kind, "m", "fp", s, chat) == _slow_call_key(
                    kind, "m", "fp", s, chat
                )


def test_a_kept_handle_survives_a_failed_write_and_a_fork(tmp_path):
    """The connection is kept between operations: a failed write leaves it usable, and a forked
    child opens its own handle rather than using the parent's (which SQLite forbids)."""
    cache = CallCache(tmp_path / "calls.sqlite", commit_every_s=0)
    cache.put_many([("k1", 1)], kind="generate", model="m")
    with pytest.raises(TypeError):
        cache.put_many([("k2", object())], kind="generate", model="m")
    cache.put_many([("k3", 3)], kind="generate", model="m")
    assert cache.get_many(["k1", "k2", "k3"]) == {"k1": 1, "k3": 3}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(_read_in_child, (cache,)) == {"k1": 1, "k3": 3}
    cache.put_many([("k4", 4)], kind="generate", model="m")  # the parent's handle still works
    assert cache.get_many(["k4", "k5"]) == {"k4": 4, "k5": 5}  # and the child's write landed


def _read_in_child(cache: CallCache) -> dict:
    cache.put_many([("k5", 5)], kind="generate", model="m")
    return cache.get_many(["k1", "k3"])


def test_finished_calls_wait_at_most_commit_every_s_and_are_seen_at_once_here(
    tmp_path, monkeypatch
):
    """Commits are grouped: a stored value is answered here at once, reaches the file (what
    other processes see) when the last commit is ``commit_every_s`` old (by a thread of its
    own), at flush, at close, or when the cache is let go; a failed commit keeps the values
    for the next one."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    path = tmp_path / "calls.sqlite"

    def in_file() -> int:
        with sqlite3.connect(path) as other:
            return other.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    cache = CallCache(path, commit_every_s=1.0)
    cache.put_many([("k1", 1)], kind="generate", model="m")
    clock[0] += 0.5
    cache.put_many([("k2", 2), ("k1", 99)], kind="generate", model="m")  # first one wins
    assert cache.get_many(["k1", "k2", "k3"]) == {"k1": 1, "k2": 2} and in_file() == 0
    clock[0] += 0.5  # the last commit (the cache's opening) is now 1 s old
    cache.put_many([("k3", 3)], kind="generate", model="m")
    assert cache._committer is not None
    cache._committer.join()  # the background commit
    assert in_file() == 3 and not cache._writing and not cache._pending
    cache.put_many([("k4", 4)], kind="generate", model="m")
    assert in_file() == 3
    cache.flush()
    assert in_file() == 4
    cache.put_many([("k5", 5)], kind="generate", model="m")
    with monkeypatch.context() as m:
        m.setattr(call_cache, "_insert", _disk_full)
        with pytest.raises(sqlite3.OperationalError):
            cache.flush()
    assert cache.get_many(["k5"]) == {"k5": 5}  # still waiting, still answered
    cache.put_many([("k6", 6)], kind="generate", model="m")
    del cache  # let go without a flush: its finalizer commits what waits
    assert in_file() == 6
    assert CallCache(path).get_many(["k5", "k6", "k1"]) == {"k5": 5, "k6": 6, "k1": 1}


def test_a_failed_background_commit_is_raised_by_the_next_store_and_loses_nothing(
    tmp_path, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path, commit_every_s=1.0)
    cache.put_many([("k1", 1)], kind="generate", model="m")
    clock[0] += 1.0
    with monkeypatch.context() as m:
        m.setattr(call_cache, "_insert_as_json", _disk_full)
        cache.put_many([("k2", 2)], kind="generate", model="m")  # hands k1, k2 to the thread
        cache._committer.join()
    assert cache.get_many(["k1", "k2"]) == {"k1": 1, "k2": 2}  # waiting again, answered
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        cache.put_many([("k3", 3)], kind="generate", model="m")
    assert cache.get_many(["k3"]) == {"k3": 3}  # the store that raised kept its value
    clock[0] += 1.0
    cache.put_many([("k4", 4)], kind="generate", model="m")  # the next commit takes them all
    cache._committer.join()
    with sqlite3.connect(path) as other:
        keys = [k for (k,) in other.execute("SELECT key FROM calls ORDER BY key")]
    assert keys == ["k1", "k2", "k3", "k4"]


def test_a_background_commit_stores_any_text_as_it_was(tmp_path, monkeypatch):
    """The background commit passes rows through JSON to SQLite: every value and key reads back
    as stored, a NUL, quotes, backslashes, line breaks and astral characters included (a key
    with a NUL, which SQLite's JSON reader would cut, is stored row by row)."""
    path = tmp_path / "calls.sqlite"
    texts = ["a\x00b", 'q"uo\\te', "line\nbreak\u2028", "emoji \U0001f600", "\x7f\x1f", ""]
    values = {
        f"k{i}-{t.replace(chr(0), '')}": {"text": t, "p": 0.1 + i} for i, t in enumerate(texts)
    }
    cache = CallCache(path, commit_every_s=1e-9)
    with monkeypatch.context() as m:
        m.setattr(call_cache, "_insert", _disk_full)  # so all of them go as JSON
        cache.put_many(list(values.items()), kind="generate", model="m\u00e9")
        cache._committer.join()
    cache.put_many([("nul\x00key", 1)], kind="generate", model="m\u00e9")
    cache._committer.join()
    assert not cache._pending and not cache._writing
    fresh = CallCache(path)
    assert fresh.get_many([*values, "nul\x00key"]) == {**values, "nul\x00key": 1}
    assert [(m.model, m.entries) for m in fresh.summary().models] == [("m\u00e9", 7)]
    cache.close()  # both handles, the background commits' too; they reopen on next use
    assert cache._writer is None
    cache.put_many([("after", 2)], kind="generate", model="m")
    cache._committer.join()
    assert CallCache(path).get_many(["after"]) == {"after": 2}


def _disk_full(*_args, **_kwargs):
    raise sqlite3.OperationalError("database or disk is full")


def test_a_cache_with_commit_every_s_zero_commits_every_call(tmp_path):
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path, commit_every_s=0)
    cache.put_many([("k1", 1)], kind="generate", model="m")
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT key FROM calls").fetchall() == [("k1",)]
    assert pickle.loads(pickle.dumps(cache)).commit_every_s == 0


def test_values_kept_without_a_json_read_back_are_the_ones_json_gives_back():
    """A first run returns what a rerun reads from the file: a judge's {choice: float} is kept
    as computed only because JSON gives it back unchanged; anything else is read back."""
    import json
    import math

    from charter.call_encoding import json_round_trips

    kept = {"A": -0.0, "B": math.inf, "C": -math.inf, "D": 1e-05, "E": -1.2345678901234567e-300}
    assert json_round_trips(kept) and json.loads(json.dumps(kept)) == kept
    assert json_round_trips({"A": math.nan}) and math.isnan(json.loads(json.dumps(math.nan)))
    for changed in ({1: 0.5}, {"A": 1}, [0.5], {"A": (0.5,)}, {"A": _Float(0.5)}):
        assert not json_round_trips(changed)


class _Float(float):
    pass


def test_a_sqlite_without_json_functions_commits_row_by_row(tmp_path, monkeypatch):
    """Before 3.38 SQLite's JSON functions were optional: a build without them gets the rows
    committed one by one (GIL and all), not a failed run."""
    missing = call_cache._FROM_JSON.replace("json_each(", "json_each_absent(")
    monkeypatch.setattr(call_cache, "_FROM_JSON", missing)
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path, commit_every_s=1e-9)
    cache.put_many([("k1", 1), ("k2", {"A": -0.5})], kind="generate", model="m")
    cache._committer.join()
    assert cache._failure is None and not cache._pending and not cache._writing
    assert CallCache(path).get_many(["k1", "k2"]) == {"k1": 1, "k2": {"A": -0.5}}
    # any other error is raised, as before
    monkeypatch.setattr(call_cache, "_FROM_JSON", missing.replace("INTO calls", "INTO calls_x"))
    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="no such table: calls_x"):
        call_cache._insert_as_json(db, [("k3", "generate", "m", "3", 0.0)])
    assert not db.in_transaction and CallCache(path).get_many(["k3"]) == {}

"""``charter`` in a child process with one fault injected, chosen by the ``FAULT`` variable.

- ``kill:generate:N`` / ``kill:choice_logprobs:N``: SIGKILL right after the engine's Nth call of
  that kind returned, before the cache stored it;
- ``kill:replace:NAME``: SIGKILL when the complete temp file of NAME is about to be renamed;
- ``kill:publish``: SIGKILL after the dataset folder is written, before the card and the mark;
- ``enospc:NAME``: the disk fills up while NAME's temp file is being written;
- ``cache-full:N``: SQLite reports a full disk on the call cache's Nth write;
- ``commit-full:N``: SQLite reports a full disk in the Nth commit made by the cache's background
  thread (pair it with a small ``call_cache_commit_s``, so that commits happen there), which the
  next store then finds;
- ``slow:S``: every engine call takes S seconds longer (for signals sent from outside).

``FAULT_ENGINE=transformers`` puts the engine faults on the real transformers engine instead of
the fake one.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import time

from charter.call_cache import CallCache
from charter.generators.fake_engine import FakeEngine

if os.environ.get("FAULT_ENGINE") == "transformers":
    from charter.generators.transformers_engine import TransformersEngine as FaultyEngine
else:
    FaultyEngine = FakeEngine

kind, _, arg = os.environ.get("FAULT", "").partition(":")
counts: dict[str, int] = {}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def patch_engine(name: str) -> None:
    original = getattr(FaultyEngine, name)

    def call(self, *args, **kwargs):
        if kind == "slow":
            time.sleep(float(arg))
        out = original(self, *args, **kwargs)
        counts[name] = counts.get(name, 0) + 1
        what, _, n = arg.partition(":")
        if kind == "kill" and what == name and counts[name] == int(n):
            die()
        return out

    setattr(FaultyEngine, name, call)


patch_engine("generate")
patch_engine("choice_logprobs")

if kind == "kill" and arg.startswith("replace:"):
    target = arg.split(":", 1)[1]
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(target):
            die()
        real_replace(src, dst)

    os.replace = replace

if kind == "kill" and arg == "publish":
    from charter.commands import pairs_stage

    real_publish = pairs_stage.publish_dataset_from

    def publish(*args):
        real_publish(*args)
        die()

    pairs_stage.publish_dataset_from = publish

if kind == "enospc":
    real_fsync = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(name).startswith(f".{arg}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        real_fsync(fd)

    os.fsync = fsync

if kind == "cache-full":
    real_put = CallCache.put_encoded  # every write goes through it (put_many too)

    def put_encoded(self, items, kind, model):
        counts["put"] = counts.get("put", 0) + 1
        if counts["put"] == int(arg):
            raise sqlite3.OperationalError("database or disk is full")
        return real_put(self, items, kind, model)

    CallCache.put_encoded = put_encoded

if kind == "commit-full":
    from charter import call_cache

    real_commit = call_cache._insert_as_json

    def insert_as_json(db, rows):
        counts["commit"] = counts.get("commit", 0) + 1
        if counts["commit"] == int(arg):
            raise sqlite3.OperationalError("database or disk is full")
        return real_commit(db, rows)

    call_cache._insert_as_json = insert_as_json
    real_put_encoded = CallCache.put_encoded

    def put_after_the_last_commit(self, items, kind, model):
        # each store waits for the last commit's thread, so commit N is made by store N and
        # found by store N + 1, however the two threads are scheduled
        if self._committer is not None:
            self._committer.join()
        return real_put_encoded(self, items, kind, model)

    CallCache.put_encoded = put_after_the_last_commit

from charter.cli import main  # noqa: E402

sys.argv = ["charter", *sys.argv[1:]]
main()

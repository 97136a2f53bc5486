"""``charter cache stats|prune``: look at and trim the model-call cache (plain argv)."""

from __future__ import annotations

import time
from pathlib import Path

from charter.call_cache import CACHE_FILE, CallCache
from charter.commands.plain_args import number, plain_args
from charter.generators.model_files import default_cache_dir
from charter.progress import console


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


CACHE_USAGE = (
    "usage: charter cache stats [cache_dir=DIR]\n"
    "       charter cache prune [older_than_days=N] [model=NAME] [cache_dir=DIR]"
)


def cache(args: list[str]) -> int:
    """``charter cache stats`` and ``charter cache prune older_than_days=N / model=NAME``."""
    positional, options = plain_args(args, {"cache_dir", "older_than_days", "model"})
    if positional not in (["stats"], ["prune"]):
        console.print(CACHE_USAGE, markup=False)
        return 2
    root = Path(options["cache_dir"]).expanduser() if "cache_dir" in options else None
    calls = CallCache((root or default_cache_dir()) / CACHE_FILE)
    if positional == ["prune"]:
        if "older_than_days" not in options and "model" not in options:
            console.print(f"charter cache prune: say what to delete\n{CACHE_USAGE}", markup=False)
            return 2
        days = number(options, "older_than_days")
        deleted = calls.prune(older_than_days=days, model=options.get("model"))
        print(f"deleted {deleted} entries from {calls.path}")
    s = calls.summary()
    print(f"{s.path}: {s.entries} entries, {_size(s.file_bytes)} on disk")
    for m in s.models:
        oldest, newest = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in (m.oldest, m.newest)
        )
        print(f"  {m.model}: {m.entries} entries, {_size(m.bytes)}, {oldest} .. {newest}")
    return 0

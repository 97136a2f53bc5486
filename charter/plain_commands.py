"""Commands that take plain argv rather than a Hydra config: ``diff`` and ``cache``.

Both look at files that already exist (two run directories, the call cache), so there is nothing
to compose; like ``validate``, they answer in under a second and exit 2 on a usage mistake.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from charter.call_cache import CACHE_FILE, CallCache
from charter.errors import InputError
from charter.generators.model_files import default_cache_dir
from charter.jsonl import write_text_atomic
from charter.progress import console
from charter.run_diff import diff_runs, to_markdown


def _plain_args(args: list[str], keys: set[str]) -> tuple[list[str], dict[str, str]]:
    """Split plain argv into positionals and ``key=value`` options, refusing unknown keys."""
    positional, options = [], {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            positional.append(arg)
        elif key in keys:
            options[key] = value
        else:
            raise InputError(f"unknown option {key!r}; expected one of {', '.join(sorted(keys))}")
    return positional, options


def _number(options: dict[str, str], key: str) -> float | None:
    if key not in options:
        return None
    try:
        return float(options[key])
    except ValueError:
        raise InputError(f"{key}={options[key]!r} is not a number", field=key) from None


def diff(args: list[str]) -> int:
    """``charter diff RUN_A RUN_B [out=FILE]``: Markdown to stdout, JSON to ``RUN_B/diff.json``."""
    positional, options = _plain_args(args, {"out", "max_rows"})
    if len(positional) != 2:
        console.print("usage: charter diff RUN_A RUN_B [out=FILE] [max_rows=50]", markup=False)
        return 2
    run_a, run_b = (Path(p) for p in positional)
    result = diff_runs(run_a, run_b)
    out = Path(options.get("out") or run_b / "diff.json")
    write_text_atomic(out, json.dumps(result.to_json(), indent=2) + "\n")
    print(to_markdown(result, max_rows=int(_number(options, "max_rows") or 50)), end="")
    console.print(f"JSON: {out}", soft_wrap=True)
    return 0


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
    positional, options = _plain_args(args, {"cache_dir", "older_than_days", "model"})
    if positional not in (["stats"], ["prune"]):
        console.print(CACHE_USAGE, markup=False)
        return 2
    root = Path(options["cache_dir"]).expanduser() if "cache_dir" in options else None
    calls = CallCache((root or default_cache_dir()) / CACHE_FILE)
    if positional == ["prune"]:
        if "older_than_days" not in options and "model" not in options:
            console.print(f"charter cache prune: say what to delete\n{CACHE_USAGE}", markup=False)
            return 2
        days = _number(options, "older_than_days")
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

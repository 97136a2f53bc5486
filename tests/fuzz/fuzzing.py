"""What the fuzz tests share: their Hypothesis budget, and a tally of how each bad input ended.

The house rule is that every input ends in one of three ways: success, rows rejected with a
reason, or one :class:`~charter.errors.InputError` (the CLI's single ``error:`` line, exit 2).
:func:`ending` checks that and counts it per target; anything else is a traceback, counted and
re-raised so Hypothesis shrinks it to the smallest input that fails.

Budgets: ``CHARTER_FUZZ=ci`` (the default) runs a fixed seed and a small example count, so the
suite is fast and repeatable; ``CHARTER_FUZZ=long`` (``python -m bench fuzz``) runs
:data:`LONG_SCALE` times the examples from a random seed.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings

from charter.errors import InputError

LONG_SCALE = 20
PROFILE = os.environ.get("CHARTER_FUZZ", "ci")
_COMMON = dict(
    deadline=None,
    database=None,  # no .hypothesis folder: a CI run is the same on every machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("long", derandomize=False, print_blob=True, **_COMMON)
settings.load_profile("long" if PROFILE == "long" else "ci")

OUTCOMES = ("tried", "success", "rejected", "clear_error", "traceback", "half_written")
TALLY: dict[str, Counter[str]] = defaultdict(Counter)
"""Per target, how the inputs ended (read by ``bench/fuzz.py`` after the run)."""


def examples(n: int) -> settings:
    """``n`` examples in CI, ``LONG_SCALE * n`` in the long run."""
    return settings(max_examples=n * (LONG_SCALE if PROFILE == "long" else 1))


@dataclass
class Ending:
    """How one input ended; the test sets ``rejects`` to the rows it got back rejected."""

    target: str
    rejects: int = 0
    error: InputError | None = None

    def check_files(self, folder: Path) -> None:
        """Count (and fail on) what the code left half-written under ``folder``."""
        bad = half_written(folder)
        TALLY[self.target]["half_written"] += len(bad)
        assert not bad, f"half-written files left behind: {bad}"


@contextmanager
def ending(target: str) -> Iterator[Ending]:
    """Run one input through the code under test and count how it ended.

    An :class:`InputError` is a clear error when its message and field are each one non-empty
    line; it is swallowed (``end.error`` holds it). Any other exception is counted as a
    traceback and re-raised.
    """
    end = Ending(target)
    tally = TALLY[target]
    tally["tried"] += 1
    try:
        yield end
    except InputError as exc:
        # the file is echoed as the user named it (the CLI folds a line break in a path)
        for part in (exc.message, exc.field or "x"):
            assert len(part.splitlines()) == 1, f"an error over several lines: {str(exc)!r}"
        end.error = exc
        tally["clear_error"] += 1
    except Exception:
        tally["traceback"] += 1
        raise
    else:
        tally["rejected" if end.rejects else "success"] += 1


def half_written(folder: Path) -> list[Path]:
    """Files a failed command left half-done: temp files, JSONL that does not parse to the end."""
    bad = [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    for path in folder.rglob("*.jsonl"):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            bad.append(path)
            continue
        try:
            for line in data.splitlines():
                if line.strip():
                    json.loads(line)
        except ValueError:
            bad.append(path)
    return bad


def writable(value: object) -> bool:
    """Whether a value survives the JSONL writer (``json.dumps`` then UTF-8): a lone surrogate
    from a JSON escape does not."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return False
    return True

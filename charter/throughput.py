"""Throughput records beside the call cache, so ``charter plan`` can say how long a run will take.

Each generate or judge stage that made model calls appends one line to
``<cache_dir>/throughput.jsonl``: the engine's model and cache fingerprint, the call kind, how
many units reached the model (samples for generation, chats for choice scores) and the seconds
the stage took. A plan looks for the newest records of the same fingerprint (same model, settings
and code), else of the same model name, and divides. Records are small and only appended, so
concurrent runs may both write; a torn last line is skipped on reading.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

THROUGHPUT_FILE = "throughput.jsonl"
RECENT = 5
"""How many of the newest matching records an estimate pools (their total seconds over their
total units), so one noisy run does not decide it."""


@dataclass(frozen=True)
class Record:
    """One stage's calls that reached a model, and how long the stage took."""

    kind: str  # "generate" (units: samples) or "choice_logprobs" (units: chats)
    model_id: str
    fingerprint: str
    units: int
    seconds: float
    at: float


def record(cache_dir: Path, rec: Record) -> None:
    """Append ``rec``; a record with no units or no time says nothing and is not kept."""
    if rec.units <= 0 or rec.seconds <= 0:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / THROUGHPUT_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(rec)) + "\n")


def _records(cache_dir: Path) -> list[Record]:
    path = cache_dir / THROUGHPUT_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(Record(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a torn or foreign line: estimates come from the others
    return out


@dataclass(frozen=True)
class Rate:
    """Seconds per unit, and where the figure came from (for the plan's table)."""

    seconds_per_unit: float
    source: str


def rate(cache_dir: Path, kind: str, model_id: str, fingerprint: str) -> Rate | None:
    """Pooled seconds per unit of the newest records for this engine, or None when none exist."""
    found = [r for r in _records(cache_dir) if r.kind == kind]
    for match, source in (
        ([r for r in found if r.fingerprint == fingerprint], "earlier runs, same engine"),
        ([r for r in found if r.model_id == model_id], "earlier runs, same model name"),
    ):
        if match:
            recent = sorted(match, key=lambda r: r.at)[-RECENT:]
            per = sum(r.seconds for r in recent) / sum(r.units for r in recent)
            return Rate(per, f"{source} ({len(recent)})")
    return None


def now() -> float:
    return time.time()

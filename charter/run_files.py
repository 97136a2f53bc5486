"""Read and write a run directory's stage files.

A run directory holds one file per stage output (``candidates.jsonl``, ``judgments.jsonl``,
``rankings.jsonl``, ``pairs.jsonl``), the ``rejects.jsonl`` of every stage, and the published
dataset. Every published row is checked against its JSON schema before anything is written, and
every file is written to a temp file and renamed, so a crash leaves the old file or the new one,
never half of either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from charter.errors import InputError
from charter.jsonl import _atomic_file, json_line, read_jsonl, write_jsonl_atomic
from charter.judges.stage import Ranking
from charter.records import CandidateSet, Judgment, Reject, from_row, to_row
from charter.schema_check import check_rows

CANDIDATES = "candidates.jsonl"
JUDGMENTS = "judgments.jsonl"
RANKINGS = "rankings.jsonl"
PAIRS = "pairs.jsonl"
REJECTS = "rejects.jsonl"
SFT = "sft.jsonl"

_SCHEMAS = {CANDIDATES: "candidates", JUDGMENTS: "judgments", PAIRS: "pairs", REJECTS: "rejects"}


def write_rows(run_dir: Path, name: str, records: Iterable[Any]) -> int:
    """Validate (for published formats) and atomically write records as JSONL."""
    rows = [r if isinstance(r, dict) else to_row(r) for r in records]
    path = run_dir / name
    if name in _SCHEMAS:
        check_rows(_SCHEMAS[name], rows, file=str(path))
    return write_jsonl_atomic(path, rows)


class Appender:
    """Stage files written chunk by chunk: each chunk's rows are checked against their schema
    and appended to temp files, which replace the stage's files together only when the stage
    finishes (:func:`appending`). A run's memory is then one chunk's rows, whatever the prompt
    count, and a killed stage leaves its old files as they were."""

    def __init__(self, run_dir: Path, handles: dict[str, IO[str]]) -> None:
        self.run_dir = run_dir
        self.handles = handles
        self.rows = dict.fromkeys(handles, 0)

    def add(self, name: str, records: Iterable[Any]) -> None:
        rows = [r if isinstance(r, dict) else to_row(r) for r in records]
        if name in _SCHEMAS:
            check_rows(
                _SCHEMAS[name], rows, file=str(self.run_dir / name), first_line=self.rows[name] + 1
            )
        if rows:
            self.handles[name].write("\n".join(map(json_line, rows)) + "\n")
        self.rows[name] += len(rows)


@contextmanager
def appending(run_dir: Path, *names: str) -> Iterator[Appender]:
    """An :class:`Appender` for ``names``; on success every file is fsynced and moved into
    place, on any error none is."""
    with ExitStack() as stack:
        handles = {name: stack.enter_context(_atomic_file(run_dir / name)) for name in names}
        yield Appender(run_dir, handles)


def _require(run_dir: Path, name: str, producer: str) -> Path:
    path = run_dir / name
    if not path.exists():
        raise InputError(
            f"{name} not found; run `charter {producer} run_dir={run_dir}` first",
            file=str(path),
        )
    return path


def iter_candidates(run_dir: Path) -> Iterator[CandidateSet]:
    """The candidate sets one at a time (the streaming stages' reader)."""
    path = _require(run_dir, CANDIDATES, "generate")
    return (CandidateSet.from_dict(row) for _, row in read_jsonl(path))


def iter_judgments(run_dir: Path) -> Iterator[Judgment]:
    path = _require(run_dir, JUDGMENTS, "judge")
    return (from_row(Judgment, row) for _, row in read_jsonl(path))


def iter_rankings(run_dir: Path) -> Iterator[Ranking]:
    path = _require(run_dir, RANKINGS, "judge")
    return (from_row(Ranking, row) for _, row in read_jsonl(path))


def read_candidates(run_dir: Path) -> list[CandidateSet]:
    path = _require(run_dir, CANDIDATES, "generate")
    return [CandidateSet.from_dict(row) for _, row in read_jsonl(path)]


def read_judgments(run_dir: Path) -> list[Judgment]:
    path = _require(run_dir, JUDGMENTS, "judge")
    return [from_row(Judgment, row) for _, row in read_jsonl(path)]


def read_rankings(run_dir: Path) -> list[Ranking]:
    path = _require(run_dir, RANKINGS, "judge")
    return [from_row(Ranking, row) for _, row in read_jsonl(path)]


def replace_rejects(run_dir: Path, stage: str, rejects: Sequence[Reject]) -> int:
    """Rewrite rejects.jsonl with this stage's rejects replacing its earlier ones.

    Stages can be rerun one at a time; keeping other stages' rows means rejects.jsonl always
    describes the files currently in the run directory.
    """
    path = run_dir / REJECTS
    kept = [row for _, row in read_jsonl(path)] if path.exists() else []
    kept = [
        row
        for row in kept
        if row.get("stage") != stage and not (stage == "generate" and row.get("stage") == "read")
    ]
    write_rows(run_dir, REJECTS, [*kept, *(asdict(r) for r in rejects)])
    return len(rejects)

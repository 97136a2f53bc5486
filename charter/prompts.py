"""Load prompts from JSONL, CSV, Parquet or a ``datasets.save_to_disk`` directory.

A bad row becomes a :class:`Reject` with its ``file:line``, so one typo costs one row, not the run;
a mistake that would reject every row (a wrong path or column name) raises :class:`InputError`.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from charter.errors import InputError
from charter.jsonl import iter_jsonl_lenient
from charter.records import Chat, PromptRecord, Reject
from charter.schema_check import format_path

ROLES = ("system", "user", "assistant")
SUPPORTED = ".jsonl, .json (JSON Lines), .csv, .parquet, or a datasets.save_to_disk directory"
Rows = Iterator[tuple[int, dict[str, Any] | Reject]]  # a Reject for a line that did not parse


@dataclass(frozen=True)
class PromptFields:
    """Columns to read (``None`` ignores one). A row needs ``prompt`` or ``messages`` (wins)."""

    id: str | None = "id"
    prompt: str | None = "prompt"
    messages: str | None = "messages"
    system: str | None = None

    def __post_init__(self) -> None:
        if not (self.prompt or self.messages):
            raise InputError("set a prompt or a messages column", field="fields")


class RowProblem(ValueError):
    """Why one input row is rejected, and the field to blame; becomes a :class:`Reject`."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def parse_chat(value: Any, field: str = "messages") -> Chat:
    """Return ``value`` as ``{role, content}`` turns ending with a user turn, or raise RowProblem.

    A JSON-encoded string is accepted too: CSV and some Parquet files store chats that way.
    """
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    if not isinstance(value, list) or not value:
        raise RowProblem(field, f"{field} must be a non-empty list of {{role, content}}")
    chat: Chat = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise RowProblem(field, f"{field}[{i}] must be an object with a text 'content'")
        if turn.get("role") not in ROLES:
            raise RowProblem(field, f"{field}[{i}] role {turn.get('role')!r} not in {ROLES}")
        chat.append({"role": turn["role"], "content": turn["content"]})
    if chat[-1]["role"] != "user" or not chat[-1]["content"].strip():
        msg = f"{field} must end with a non-empty user turn, not {chat[-1]}"
        raise RowProblem(field, msg[:200])
    return chat


def _to_chat(row: dict[str, Any], fields: PromptFields) -> Chat:
    """Return the row's chat (system turn first if a system column is set), or raise RowProblem."""
    # Parquet and datasets give every row every column, with None where a value is missing.
    chat_col, text_col, sys_col = (
        c if c and row.get(c) is not None else None
        for c in (fields.messages, fields.prompt, fields.system)
    )
    if chat_col:
        chat = parse_chat(row[chat_col], chat_col)
    elif text_col:
        text = row[text_col]
        if not isinstance(text, str) or not text.strip():
            raise RowProblem(text_col, f"prompt is empty or not text: {text!r}"[:200])
        chat = [{"role": "user", "content": text}]
    else:
        wanted = [c for c in (fields.prompt, fields.messages) if c]
        have = sorted(k for k, v in row.items() if v is not None)
        raise RowProblem(wanted[0], f"no {' or '.join(map(repr, wanted))}; row has {have}")
    if sys_col:
        if chat[0]["role"] == "system":
            raise RowProblem(sys_col, "both a system column and a system turn in messages")
        chat = [{"role": "system", "content": str(row[sys_col])}, *chat]
    return chat


_CSV_FIELD_LIMIT = 2**31 - 1  # csv's default, 128 KiB, refuses a long prompt as "malformed"


def _csv_rows(path: Path) -> Rows:
    """Rows of a CSV file; an empty cell is a missing value, as in a spreadsheet.

    Bytes that are not UTF-8 cost their row (a read reject), not the file; a quoting mistake
    csv cannot read past stops the file with its line.
    """
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        # surrogateescape keeps undecodable bytes as lone surrogates, to reject just their rows
        fh = open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")  # noqa: SIM115
    except OSError as e:
        raise InputError(f"cannot read the prompts file: {e.strerror}", file=str(path)) from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [_readable(cell) for cell in next(reader, [])]
            start = reader.line_num + 1
            for cells in reader:
                if cells:  # csv gives [] for a blank line
                    yield start, _csv_row(path, start, header, cells)
                start = reader.line_num + 1  # a quoted cell may span lines: report its start
        except csv.Error as e:
            line = reader.line_num
            raise InputError(f"not readable as CSV: {e}", file=str(path), line=line) from None


def _readable(cell: str) -> str:
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _csv_row(path: Path, line: int, header: list[str], cells: list[str]) -> dict[str, Any] | Reject:
    try:
        for cell in cells:
            cell.encode("utf-8")
    except UnicodeEncodeError:
        text = ",".join(_readable(cell) for cell in cells)[:500]
        return Reject("read", f"{path}:{line}", "not valid UTF-8", row={"text": text})
    return {k: v if v != "" else None for k, v in zip(header, cells, strict=False)}


def _parquet_rows(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    line = 0
    try:
        batches = pq.ParquetFile(path).iter_batches()  # streamed: --limit need not read it all
        for batch in batches:
            for row in batch.to_pylist():
                line += 1
                yield line, row
    except (pa.ArrowException, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:300]
        raise InputError(f"not a readable Parquet file ({reason})", file=str(path)) from None


def _dataset_rows(path: Path) -> Rows:
    import datasets

    # A damaged folder fails inside datasets in many ways (a missing file, bad JSON in its
    # metadata, a truncated Arrow file); each is the folder's problem, so each is one line.
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - see above
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        message = f"not a datasets.save_to_disk directory ({reason})"
        raise InputError(message, file=str(path)) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            msg = f"no 'train' split and several others {sorted(ds)}; save the one you want alone"
            raise InputError(msg, file=str(path))
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    line = 0
    try:
        for row in ds:
            line += 1
            yield line, row
    except Exception as e:  # noqa: BLE001 - reading a damaged Arrow file, as above
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise InputError(f"cannot read row {line + 1} ({reason})", file=str(path)) from None


def _rows(path: Path) -> Rows:
    try:
        is_dir = path.is_dir() if path.exists() else None
    except OSError as e:  # a name too long, a folder without permission
        raise InputError(f"cannot read the prompts file: {e.strerror}", file=str(path)) from None
    if is_dir is None:
        raise InputError("prompts file not found", file=str(path))
    suffix = "dir" if is_dir else path.suffix.lower()
    readers = {".jsonl": iter_jsonl_lenient, ".json": iter_jsonl_lenient, ".csv": _csv_rows}
    readers.update({".parquet": _parquet_rows, "dir": _dataset_rows})
    if suffix not in readers:
        raise InputError(f"unknown format {suffix!r}; supported: {SUPPORTED}", file=str(path))
    return readers[suffix](path)


def _check_mapping(path: Path, fields: PromptFields, columns: set[str]) -> None:
    """Raise if a column name matches nothing anywhere: that is a mapping typo, not a bad row."""
    needed = [c for c in (fields.prompt, fields.messages) if c]
    # id="id" is a default that files may well lack; any other name was asked for on purpose.
    asked = [[c] for c, default in ((fields.id, "id"), (fields.system, None)) if c and c != default]
    for names in (needed, *asked):
        if not columns.intersection(names):
            msg = f"no row has a {' or '.join(map(repr, names))} column; columns: {sorted(columns)}"
            raise InputError(msg, file=str(path), field=format_path([names[0]]))


def load_prompts(
    path: str | Path, fields: PromptFields = PromptFields(), *, limit: int | None = None
) -> tuple[list[PromptRecord], list[Reject]]:
    """Read prompts, keeping each unusable row as a ``Reject(stage="generate")`` with its reason.

    Args:
        path: .jsonl/.json (JSON Lines), .csv, .parquet, or a save_to_disk dir ("train" split).
        fields: which columns hold the id, prompt text, chat and system prompt.
        limit: stop once this many prompts are accepted.

    Returns:
        ``(prompts, rejects)``. Chats end with a user turn; ``source`` is ``"file:line"`` (the CSV
        header is line 1); a row without an id gets ``"{file_stem}-{line:05d}"``. Rejected:
        malformed lines, missing or empty prompts, bad chats, repeated ids.

    Raises:
        InputError: missing file, unknown format, a column name no row has, no usable row.
    """
    prompts: list[PromptRecord] = []
    rejects: list[Reject] = []
    for window in prompt_windows(path, fields, limit=limit, size=None):
        prompts.extend(window.prompts)
        rejects.extend(window.rejects)
    return prompts, rejects


@dataclass
class PromptWindow:
    """Consecutive rows of a prompts file: the usable prompts and the rejected rows."""

    prompts: list[PromptRecord]
    rejects: list[Reject]


def prompt_windows(
    path: str | Path,
    fields: PromptFields = PromptFields(),
    *,
    limit: int | None = None,
    size: int | None = 1024,
) -> Iterator[PromptWindow]:
    """:func:`load_prompts` read lazily, ``size`` usable prompts at a time (None: all at once),
    so a run holds one window of a million-row file, not the file.

    The checks that need the whole file come as early as they can: a column mapping that the
    first window does not confirm is checked against a scan of every row's keys before that
    window is yielded (nothing is generated for a typo), and a file with no usable row raises
    after its last window.
    """
    path = Path(path)
    seen: dict[str, int] = {}  # prompt_id -> line of its first row (ids only: bounded per row)
    columns: set[str] = set()
    window = PromptWindow([], [])
    accepted, checked = 0, False
    for line, row in _rows(path):
        if isinstance(row, Reject):
            window.rejects.append(replace(row, stage="generate"))
            continue
        columns.update(k for k, v in row.items() if v is not None)
        source = f"{path}:{line}"
        raw_id = row.get(fields.id) if fields.id else None
        pid = (str(raw_id).strip() if raw_id is not None else "") or f"{path.stem}-{line:05d}"
        try:
            chat = _to_chat(row, fields)
            if pid in seen:
                raise RowProblem(fields.id, f"duplicate id {pid!r} (first at {path}:{seen[pid]})")
        except RowProblem as e:
            kept = json.loads(json.dumps(row, ensure_ascii=False, default=str))
            window.rejects.append(Reject("generate", source, str(e), field=e.field, row=kept))
            continue
        seen[pid] = line
        window.prompts.append(PromptRecord(prompt_id=pid, messages=chat, source=source))
        accepted += 1
        if limit is not None and accepted >= limit:
            break
        if size is not None and len(window.prompts) >= size:
            if not checked:
                _check_mapping_early(path, fields, columns)
                checked = True
            yield window
            window = PromptWindow([], [])
    if columns and not checked:
        _check_mapping(path, fields, columns)
    if not accepted:
        bad = window.rejects
        first = f"; first: {bad[0].source}: {bad[0].reason}" if bad else ""
        raise InputError(f"no usable prompts ({len(bad)} rejected{first})", file=str(path))
    if window.prompts or window.rejects:
        yield window


def _check_mapping_early(path: Path, fields: PromptFields, columns: set[str]) -> None:
    """:func:`_check_mapping` on the rows read so far, and, only if they do not confirm the
    mapping, on the keys of every row of the file."""
    try:
        _check_mapping(path, fields, columns)
    except InputError:
        every = set(columns)
        for _, row in _rows(path):
            if not isinstance(row, Reject):
                every.update(k for k, v in row.items() if v is not None)
        _check_mapping(path, fields, every)

"""JSON Lines in and out, with line numbers on the way in and atomic writes on the way out.

Every stage reads and writes JSONL. Reading keeps the 1-based line number so an error can point
at the exact row; writing goes through a temp file and ``os.replace`` so an interrupted run never
leaves a half-written ``pairs.jsonl`` that a later stage would take for a finished one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from charter.errors import InputError
from charter.records import Reject


def kept_encoder(*, ensure_ascii: bool = True, sort_keys: bool = False) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=..., sort_keys=...)`` with json's C encoder made once:
    ``dumps`` builds a ``JSONEncoder`` for any non-default option, and its ``encode`` builds a C
    encoder and a circular-reference table per call, ~2 of a judgment row's 8 us. The same text
    (a test holds it to ``json.dumps``; what we encode is never circular, and a value that were
    would raise RecursionError instead of ValueError)."""
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, sort_keys=sort_keys)
    make = json.encoder.c_make_encoder
    if make is None:  # a Python built without json's C accelerator
        return encoder.encode
    strings = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    # the arguments JSONEncoder.iterencode passes it, less the circular-reference table
    chunks = make(
        None,
        encoder.default,
        strings,
        None,
        encoder.key_separator,
        encoder.item_separator,
        sort_keys,
        False,
        True,
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


json_line = kept_encoder(ensure_ascii=False)
"""``json.dumps(row, ensure_ascii=False)``, every row's encoding in every stage file."""

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: mkstemp makes 0600 files, we want the usual mode


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse_line(raw: bytes, n: int) -> dict[str, Any]:
    """Decode one line; raise ValueError with a readable reason if it is not a JSON object.

    A string holding half of a UTF-16 surrogate pair (``"\\ud800"``) is valid JSON but cannot
    be written back as UTF-8, so a stage would fail on it long after reading; it is refused here.
    """
    try:
        text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8: {e}") from None
    try:
        row = json.loads(text)
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or a number of 5,000 digits
        raise ValueError(f"not valid JSON: {e}") from None
    if not isinstance(row, dict):
        raise ValueError(f"not a JSON object (got {type(row).__name__}); each line must be {{...}}")
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), "
                "which is not text"
            ) from None
    return row


def _lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) for non-blank lines; bytes so a bad encoding is per-line."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as e:  # no permission, or gone since it was checked
        raise InputError(f"cannot read the file: {e.strerror}", file=str(path)) from None
    with fh:
        for n, raw in enumerate(fh, start=1):
            if raw.strip():
                yield n, raw


def _check_file(path: str | Path) -> None:
    # Checked eagerly so a wrong path fails at the call, not at the first ``next()``.
    p = Path(path)
    try:
        exists, is_file, is_dir = p.exists(), p.is_file(), p.is_dir()
    except OSError as e:  # a name too long, a folder without permission
        raise InputError(f"cannot read the file: {e.strerror}", file=str(path)) from None
    if not exists:
        raise InputError("file not found", file=str(path))
    if not is_file:
        found = "a directory" if is_dir else "something that is not a regular file"
        raise InputError(f"expected a JSONL file, found {found}", file=str(path))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Read a JSONL file strictly, for files charter wrote itself.

    Args:
        path: the file to read.

    Returns:
        An iterator of ``(line_number, row)``; line numbers are 1-based and blank lines skipped.

    Raises:
        InputError: the file is missing, or a line is not valid JSON or not a JSON object
            (the error carries the file and line).
    """
    _check_file(path)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for n, raw in _lines(path):
            try:
                yield n, _parse_line(raw, n)
            except ValueError as e:
                raise InputError(str(e), file=str(path), line=n) from None

    return rows()


def iter_jsonl_lenient(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """Stream a user's JSONL file, turning each malformed line into a ``Reject(stage="read")``.

    The streaming form of :func:`read_jsonl_lenient`, for callers that stop early (``--limit``)
    and want rejects in line order among the rows.

    Raises:
        InputError: the file is missing (raised at the call, not at the first ``next()``).
    """
    _check_file(path)

    def items() -> Iterator[tuple[int, dict[str, Any] | Reject]]:
        for n, raw in _lines(path):
            try:
                yield n, _parse_line(raw, n)
            except ValueError as e:
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")[:500]
                yield n, Reject("read", f"{path}:{n}", str(e), row={"text": text})

    return items()


def read_jsonl_lenient(
    path: str | Path,
) -> tuple[list[tuple[int, dict[str, Any]]], list[Reject]]:
    """Read a user's JSONL file, keeping bad lines as rejects instead of stopping at the first.

    Returns:
        ``(rows, rejects)``: rows as in :func:`read_jsonl`; one ``Reject(stage="read")`` per
        malformed line, with the first 500 characters of the line kept for the user to find it.

    Raises:
        InputError: the file is missing.
    """
    rows: list[tuple[int, dict[str, Any]]] = []
    rejects: list[Reject] = []
    for n, item in iter_jsonl_lenient(path):
        if isinstance(item, Reject):
            rejects.append(item)
        else:
            rows.append((n, item))
    return rows, rejects


@contextmanager
def _atomic_file(path: str | Path) -> Iterator[IO[str]]:
    """Yield a text handle on a temp file beside ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL so that readers see either the old file or the complete new one.

    Args:
        path: destination; parent directories are created.
        rows: JSON-serialisable dicts, consumed lazily. If the iterable raises, the old file
            (if any) is left untouched and the temp file is removed.

    Returns:
        The number of rows written.
    """
    count = 0
    with _atomic_file(path) as fh:
        for row in rows:
            fh.write(json_line(row) + "\n")
            count += 1
    return count


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8, all or nothing, like :func:`write_jsonl_atomic`."""
    with _atomic_file(path) as fh:
        fh.write(text)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir beside ``path``; it becomes ``path`` only if the block succeeds.

    For outputs that are directories (``datasets.Dataset.save_to_disk``). An existing ``path`` is
    replaced; on failure the temp directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it owner-only; a published dir should not be
    try:
        yield tmp
        # A directory cannot be os.replace'd over a non-empty one: move the old one aside first,
        # and put it back if the swap fails, so there is always a complete ``path``.
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "d")
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old / "d", path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

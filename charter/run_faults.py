"""Faults of the machine, not the user's input, that a run survives with one line.

A full disk, a stop signal (:mod:`charter.graceful_stop`) and a cache another process holds
locked too long all leave a run that ``charter run run_dir=DIR`` can resume: every file is
written to a temp file and renamed, and every finished engine call is in the call cache. So the
user needs what happened and how to go on, not a traceback.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape

from charter.graceful_stop import StopRequested, stop_at_chunk_boundaries
from charter.progress import console

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def _say(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _resume(out_dir: Path) -> str:
    return f"resume with: charter run run_dir={out_dir}"


@contextmanager
def survived(out_dir: Path, resumable: bool) -> Iterator[None]:
    """Turn a stop signal, a full disk or a locked cache into one line and an exit status.

    ``resumable`` commands (run and its stages) also stop at chunk boundaries on SIGTERM/Ctrl-C;
    the others keep Python's usual signal handling.
    """
    how = _resume(out_dir) if resumable else "run the command again"
    try:
        if resumable:
            with stop_at_chunk_boundaries():
                yield
        else:
            yield
    except StopRequested as stop:
        console.print(
            f"stopped by {stop} at a chunk boundary; finished engine calls are cached; {how}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(128 + stop.signum) from None
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        _say(
            f"no space left on the device{where}; nothing half-written was kept; free some "
            f"space and {how}"
        )
        raise SystemExit(2) from None
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "malformed" in text or "not a database" in text:
            _say(
                f"the call cache is damaged ({text}); move calls.sqlite aside (it only saves "
                f"time) and {how}"
            )
        elif "disk is full" in text:
            _say(f"no space left for the call cache ({text}); free some space and {how}")
        elif "locked" in text:
            _say(
                f"the call cache is locked by another process for too long ({text}); {how} "
                "when it is done, or give this run its own cache_dir="
            )
        else:
            raise
        raise SystemExit(2) from None

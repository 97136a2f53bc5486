"""SIGTERM and Ctrl-C during a run: finish the chunk in flight, then stop and say how to resume.

A killed process loses at most its in-flight engine call (every finished call is in the call
cache), but a scheduler's SIGTERM or a user's Ctrl-C deserves better than a traceback or an
abrupt end: the first signal asks the run to stop at the next chunk boundary (every stage's
progress callback checks), and a second one stops it at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_requested: list[int] = []


class StopRequested(Exception):
    """Raised at a chunk boundary after a stop signal; carries the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    _requested.append(signum)
    # a second signal of either kind ends the process the usual way
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def stop_at_chunk_boundaries() -> Iterator[None]:
    """Within this block, SIGTERM and SIGINT request a stop instead of ending the process."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _requested.clear()
    for s in previous:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested.clear()


def check() -> None:
    """Raise :class:`StopRequested` if a stop signal came; called between chunks."""
    if _requested:
        raise StopRequested(_requested[0])

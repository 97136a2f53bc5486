"""Whether a comparison fits its judge's context, asked before the judge sees it.

An engine refuses a chat longer than its context with an error, and one such chat in a batch
stops the whole judge stage. A judge that knows the chats it will send says, per comparison, how
many tokens its longest one needs (prompt plus the answer it waits for) against its model's
``context_length``; the judge stage then keeps a comparison that cannot fit as a reject with
that count, and judges the rest exactly as it would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from charter.generators.engine import Engine
from charter.records import Chat


class ContextNeed(NamedTuple):
    """The most tokens one comparison puts before a judge's model, and that model's limit (a
    tuple: one is made per comparison, and a frozen dataclass cost 3x as much to make)."""

    tokens: int
    limit: int

    @property
    def fits(self) -> bool:
        return self.tokens <= self.limit


def chat_needs(engine: Engine, chats: Sequence[Sequence[Chat]], room: int) -> list[ContextNeed]:
    """Per comparison (its chats), the longest chat's tokens plus ``room`` for the answer.

    All chats are counted in one ``engine.count_tokens`` call.
    """
    flat = [chat for group in chats for chat in group]
    counts = engine.count_tokens(flat) if flat else []
    limit = engine.context_length
    needs, start = [], 0
    for group in chats:
        end = start + len(group)
        needs.append(ContextNeed(max(counts[start:end]) + room, limit))
        start = end
    return needs


def needs_of(judge: Any) -> Callable[[Sequence[Any]], list[ContextNeed]] | None:
    """The judge's ``context_needs``, looking through wrappers (a calibration, a planner's
    tally) that keep the judge they wrap in ``inner``; None for a judge that cannot tell (a
    reward model truncates instead)."""
    while judge is not None:
        needs = getattr(judge, "context_needs", None)
        if needs is not None:
            return needs
        judge = getattr(judge, "inner", None)
    return None

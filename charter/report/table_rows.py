"""The rows of a report's browsable table, and which of them fit on the page.

Every page that lists comparisons (a run's pairs, a revise run's chains, a diff's changes) shows
them the same way: a one-line summary that expands to the conversation, both responses, both
orders' probabilities and whatever critique the judge wrote. A large run has far more rows than a
browser should hold, so :func:`select_rows` keeps the most and the least certain (where a reader
learns most: the confident calls to spot-check and the coin flips) and the page says how many it
left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from charter.records import Chat

T = TypeVar("T")

_NOTE_WORDS = ("critique", "verdict", "repl", "reason", "explanation", "rationale")
"""Keys of a judgment's ``raw`` whose text a reader wants to see (chain-of-thought critiques,
structured verdicts and their replies); log-probs and hashes are left out."""

_NOTE_CHARS = 4000


@dataclass(frozen=True)
class Response:
    """One side of a row: the candidate id and its text."""

    id: str
    text: str

    @property
    def chars(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class Note:
    """A piece of text the judge kept in ``raw`` (``where`` is its key path, e.g. ``a_first``)."""

    where: str
    text: str


@dataclass(frozen=True)
class TableRow:
    """One comparison as the page shows it.

    ``first`` is the side the row is about: the chosen response of a pair, the judge's winner of
    a comparison that did not become a pair, the revision of a revise chain. ``p_first`` is
    P(first is better) and ``margin`` is ``2 * p_first - 1``. ``p_first_order`` and ``p_swapped``
    are the judgment's own numbers, P(``a_id`` better) with ``a_id`` shown first and second.
    ``status`` is ``kept`` (published), ``dropped`` (a filter removed it, ``reason`` says which),
    ``not selected`` (the strategy picked another pair) or ``pending`` (no pairs stage yet).
    ``principle_scores`` (runs judged under every principle) is P(first better) per principle.
    """

    prompt_id: str
    principle: str
    status: str
    reason: str
    first: Response
    second: Response
    p_first: float | None
    conversation: Chat
    p_first_order: float | None = None
    p_swapped: float | None = None
    a_id: str | None = None
    swap_consistent: bool | None = None
    notes: list[Note] = field(default_factory=list)
    principle_scores: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.status == "kept"

    @property
    def margin(self) -> float | None:
        return None if self.p_first is None else 2 * self.p_first - 1

    @property
    def length_difference(self) -> int:
        """Characters of ``first`` minus characters of ``second``."""
        return self.first.chars - self.second.chars


def judge_notes(raw: dict[str, Any], prefix: str = "", depth: int = 0) -> list[Note]:
    """The critique and verdict text in a judgment's ``raw``, wherever the judge put it.

    Judges keep their text under different keys (``critique_a_first``; ``a_first.verdict``;
    a jury's ``members.<name>....``), so this walks the dict a few levels down and keeps the
    values of keys that name a critique, verdict, reply or reason. Long texts are cut.
    """
    notes: list[Note] = []
    for key, value in raw.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        wanted = any(word in str(key).lower() for word in _NOTE_WORDS)
        if isinstance(value, str) and wanted and value.strip():
            notes.append(Note(where, value[:_NOTE_CHARS]))
        elif isinstance(value, list) and wanted:
            texts = [v for v in value if isinstance(v, str) and v.strip()]
            notes += [Note(f"{where}[{i}]", t[:_NOTE_CHARS]) for i, t in enumerate(texts)]
        elif isinstance(value, dict) and value:
            flat = all(not isinstance(v, dict | list) for v in value.values())
            if wanted and flat:  # a structured verdict: {"critique": ..., "better": "A", ...}
                notes.append(Note(where, json.dumps(value, ensure_ascii=False)[:_NOTE_CHARS]))
            elif depth < 3:
                notes += judge_notes(value, where, depth + 1)
    return notes


@dataclass(frozen=True)
class Selection:
    """The rows a page shows, in the order given, and how many it left out."""

    shown: list[Any]
    total: int
    rule: str

    @property
    def left_out(self) -> int:
        return self.total - len(self.shown)


def select_rows(
    items: Sequence[T],
    max_rows: int,
    certainty: Callable[[T], float | None],
    *,
    always: Callable[[T], bool] | None = None,
    always_name: str = "",
) -> Selection:
    """At most ``max_rows`` of ``items``: first those ``always`` picks, then the most and the
    least certain of the rest in equal shares (an item without a certainty counts as 0).

    The shown rows keep their original order, so a page reads like the run's files.
    """
    order = {id(item): i for i, item in enumerate(items)}
    pinned = [x for x in items if always is not None and always(x)][:max_rows]
    rest = [x for x in items if not (always is not None and always(x))]
    budget = max_rows - len(pinned)
    if budget >= len(rest):
        picked = rest
    else:
        ranked = sorted(rest, key=lambda x: abs(certainty(x) or 0.0), reverse=True)
        most = ranked[: (budget + 1) // 2]
        least = ranked[len(ranked) - (budget - len(most)) :] if budget - len(most) else []
        picked = most + least
    shown = sorted(pinned + picked, key=lambda x: order[id(x)])
    if len(shown) == len(items):
        rule = f"all {len(items)}"
    else:
        head = f"every {always_name} ({len(pinned)}), then " if always_name else ""
        rule = f"{head}the most and the least certain, {len(shown)} of {len(items)}"
    return Selection(shown=shown, total=len(items), rule=rule)

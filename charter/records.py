"""Typed records that flow one way between stages.

prompts -> CandidateSet (candidates.jsonl) -> Judgment (judgments.jsonl) -> PreferencePair
(pairs.jsonl). Every stage also emits Reject rows (rejects.jsonl) for input it could not use, so
nothing is lost silently. Records serialise with :func:`to_row` and load with ``from_row``; the
published ones are checked against the JSON schemas in ``charter/schemas/`` before writing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, Literal, TypeVar

Message = dict[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": str}``."""

Chat = list[Message]

T = TypeVar("T")


def to_row(record: Any) -> dict[str, Any]:
    """Serialise a record dataclass to a JSON-ready dict.

    An optional field marked ``omit_if_none`` is left out while it is None, so adding one
    leaves the rows of every record that does not use it byte for byte as they were.
    """
    return _row_maker(type(record))(record)


@cache
def _row_maker(cls: type) -> Callable[[Any], dict[str, Any]]:
    """:func:`to_row` for one record class, as Python source made once, the way ``dataclasses``
    makes ``__init__``: one attribute read and one type test per field, no loop over field
    names and no call for a plain value (a quarter of a judgment row's conversion)."""
    names, omit = _row_fields(cls)
    lines = ["def to_row(r):"]
    lines += [f"    v{i} = r.{name}" for i, name in enumerate(names)]
    values = ", ".join(
        f"{name!r}: v{i} if type(v{i}) in _SCALARS else _plain(v{i})"
        for i, name in enumerate(names)
    )
    lines.append(f"    row = {{{values}}}")
    lines += [f"    if row[{name!r}] is None:\n        del row[{name!r}]" for name in omit]
    lines.append("    return row")
    scope: dict[str, Any] = {"_SCALARS": _SCALARS, "_plain": _plain}
    exec("\n".join(lines), scope)  # noqa: S102 - field names are identifiers of our records
    return scope["to_row"]


@cache
def _row_fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fs = fields(cls)
    return tuple(f.name for f in fs), tuple(f.name for f in fs if f.metadata.get("omit_if_none"))


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """What ``dataclasses.asdict`` makes of a field's value (fresh lists and dicts, nested
    records as dicts), without its deep copy of every string: 10x faster on a judgment row.
    Exact built-in types are told apart by one set lookup first (most values are strings and
    floats); their subclasses take the ``isinstance`` path, to the same result."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {
            k if type(k) is str else _plain(k): v if type(v) in _SCALARS else _plain(v)
            for k, v in value.items()
        }
    if kind is list:
        return [v if type(v) in _SCALARS else _plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _row_fields(type(value))[0]}
    return copy.deepcopy(value)


def from_row(cls: type[T], row: dict[str, Any]) -> T:
    """Build a record from a dict, ignoring keys the record does not declare."""
    names = _field_names(cls)
    if names.issuperset(row):  # the usual row, written by this version: nothing to drop
        return cls(**row)
    return cls(**{k: v for k, v in row.items() if k in names})


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(_row_fields(cls)[0])


@dataclass(frozen=True)
class PromptRecord:
    """A conversation to answer; it always ends with a user turn.

    ``source`` is ``"file:line"`` so later errors can point back at the input.
    """

    prompt_id: str
    messages: Chat
    source: str


@dataclass(frozen=True)
class Completion:
    """One sampled response from an engine."""

    text: str
    finish_reason: Literal["stop", "length"]
    num_tokens: int


@dataclass(frozen=True)
class Candidate:
    """A response to judge. ``candidate_id`` is ``"{prompt_id}/{index}"``."""

    candidate_id: str
    text: str
    finish_reason: str
    num_tokens: int


@dataclass(frozen=True)
class CandidateSet:
    """One row of candidates.jsonl: a prompt with its K sampled responses."""

    prompt_id: str
    messages: Chat
    candidates: list[Candidate]
    generator_model: str
    sampling: dict[str, Any]

    @staticmethod
    def from_dict(row: dict[str, Any]) -> CandidateSet:
        if "candidates" not in row:
            return from_row(CandidateSet, row)  # refused there, as any row missing a field
        cands = [
            c if isinstance(c, Candidate) else from_row(Candidate, c) for c in row["candidates"]
        ]
        return from_row(CandidateSet, {**row, "candidates": cands})


@dataclass(frozen=True)
class Judgment:
    """One row of judgments.jsonl: candidate ``a`` vs candidate ``b`` under one principle.

    Every comparison is scored in both orders. ``p_first_order`` is P(a better) when a is shown
    as response (A); ``p_swapped`` is P(a better) when a is shown as response (B). ``p_a`` is the
    two combined (the position bias cancels); ``swap_consistent`` says whether both orders agree
    on the winner. ``raw`` keeps the judge's untouched output (choice log-probs, text).
    """

    prompt_id: str
    candidate_a: str
    candidate_b: str
    principle_id: str
    p_first_order: float
    p_swapped: float
    p_a: float
    swap_consistent: bool
    judge_model: str
    judge_method: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferencePair:
    """One row of pairs.jsonl, in TRL's conversational preference format plus provenance.

    ``principle_scores`` (pairs judged under every principle only) maps each principle id to
    P(chosen better) under that principle alone; ``p_chosen`` is their aggregation.
    """

    prompt: Chat
    chosen: Chat
    rejected: Chat
    prompt_id: str
    chosen_id: str
    rejected_id: str
    p_chosen: float
    margin: float
    principle_ids: list[str]
    swap_consistent: bool
    judge_model: str
    generator_model: str
    constitution_sha256: str
    principle_scores: dict[str, float] | None = field(default=None, metadata={"omit_if_none": True})


@dataclass(frozen=True)
class Reject:
    """An input row or item a stage could not use, kept with its reason (rejects.jsonl)."""

    stage: str
    source: str
    reason: str
    field: str | None = None
    row: dict[str, Any] | None = None

"""Human-labelled preference pairs, for measuring how often a judge agrees with people.

Reads the JSONL files in ``shared/data/human_prefs/`` (row schema in their README): a context chat
ending with a user turn, the response people preferred (``chosen``) and the other (``rejected``).
``chosen`` is always stored first, so callers must randomise or run both orders before judging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from charter.errors import InputError
from charter.jsonl import iter_jsonl_lenient
from charter.prompts import RowProblem, parse_chat
from charter.records import Chat, Reject

STAGE = "human_prefs"


@dataclass(frozen=True)
class HumanPair:
    """One human judgment: ``chosen`` beat ``rejected`` as the next assistant turn of ``messages``.

    ``dimension`` is what people were asked to judge ("harmlessness", "helpfulness"), so agreement
    can be reported per dimension rather than blended.
    """

    id: str
    messages: Chat
    chosen: str
    rejected: str
    dimension: str


def _to_pair(row: dict[str, Any], default_id: str) -> HumanPair:
    """Build a pair from one row, or raise RowProblem naming the field at fault."""
    if row.get("messages") is not None:
        messages = parse_chat(row["messages"], "messages")
    elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
        # Some pair files carry only a single-turn prompt; treat it as one user turn.
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        raise RowProblem("messages", f"no 'messages' or 'prompt'; row has {sorted(row)}")
    for name in ("chosen", "rejected"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RowProblem(name, f"{name} is missing, empty or not text: {value!r}"[:200])
    if row["chosen"] == row["rejected"]:
        raise RowProblem("rejected", "chosen and rejected are identical: nothing to prefer")
    raw_id = row.get("id")
    return HumanPair(
        id=str(raw_id) if raw_id not in (None, "") else default_id,
        messages=messages,
        chosen=row["chosen"],
        rejected=row["rejected"],
        dimension=str(row.get("dimension") or "unspecified"),
    )


def load_human_pairs(
    path: str | Path, limit: int | None = None
) -> tuple[list[HumanPair], list[Reject]]:
    """Read human preference pairs, keeping each unusable row as a ``Reject(stage="human_prefs")``.

    Args:
        path: a JSONL file with the README's row schema (``messages`` or ``prompt``, ``chosen``,
            ``rejected``, optional ``id`` and ``dimension``).
        limit: stop once this many pairs are accepted.

    Returns:
        ``(pairs, rejects)``. Every pair's chat ends with a non-empty user turn. Rejected:
        malformed lines, a missing or empty ``chosen``/``rejected``, identical responses, an empty
        chat or one not ending with a user turn, a repeated id.

    Raises:
        InputError: the file is missing or has no usable pair.
    """
    path = Path(path)
    pairs: list[HumanPair] = []
    rejects: list[Reject] = []
    seen: dict[str, str] = {}  # id -> source of its first row
    for line, row in iter_jsonl_lenient(path):
        if isinstance(row, Reject):
            rejects.append(replace(row, stage=STAGE))
            continue
        source = f"{path}:{line}"
        try:
            pair = _to_pair(row, default_id=f"{path.stem}-{line:05d}")
            if pair.id in seen:
                raise RowProblem("id", f"duplicate id {pair.id!r} (first at {seen[pair.id]})")
        except RowProblem as e:
            rejects.append(Reject(STAGE, source, str(e), field=e.field, row=row))
            continue
        seen[pair.id] = source
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        first = f"; first: {rejects[0].source}: {rejects[0].reason}" if rejects else ""
        raise InputError(f"no usable pairs ({len(rejects)} rejected{first})", file=str(path))
    return pairs, rejects

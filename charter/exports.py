"""Row shapes that preference trainers other than TRL read, made from charter's pairs rows.

charter's own rows are TRL's conversational format plus provenance. Other trainers want other
keys or plain strings, so :func:`export_row` reshapes one pairs row for a named format:

- ``trl``: the row as charter wrote it (``prompt`` messages, ``chosen``/``rejected`` as one
  assistant message each, ``p_chosen``, ``margin``, principle ids, models, constitution hash).
- ``openrlhf``: ``prompt`` (messages), ``chosen`` and ``rejected`` (one assistant message each)
  and ``margin``. OpenRLHF's reward and DPO datasets read these with
  ``--prompt_key prompt --chosen_key chosen --rejected_key rejected --apply_chat_template``: with
  a prompt key it templates ``prompt`` with a generation prompt and ``prompt + chosen`` in full,
  and it reads an optional ``margin`` column for its margin loss.
- ``verl``: ``prompt``, ``chosen`` and ``rejected`` as plain strings, the columns verl's reward
  model dataset reads from Parquet (its default ``prompt_key``/``chosen_key``/``rejected_key``).
  verl tokenizes those strings as they are, so the prompt is the conversation's text, not a chat
  template's rendering; ``prompt_messages`` keeps the turns for anyone who wants to template them.
- ``jsonl``: charter's full rows (as ``trl``) written as JSON Lines instead of Parquet.

Every format keeps ``prompt_id`` so a row can be traced back to its run.

A run with ``principle_per=all`` gives every format one ``score_<principle id>`` column per
principle (:func:`with_score_columns`), UltraFeedback-style: P(chosen better) under that
principle alone, so a trainer can filter or reweight by principle without judging again.
"""

from __future__ import annotations

from typing import Any, Literal

from charter.errors import InputError

ExportFormat = Literal["trl", "openrlhf", "verl", "jsonl"]
FORMATS: tuple[str, ...] = ("trl", "openrlhf", "verl", "jsonl")


def check_format(name: str) -> ExportFormat:
    """``name`` if it is a known format, else an InputError listing the known ones."""
    if name not in FORMATS:
        raise InputError(
            f"unknown format {name!r}; choose one of {', '.join(FORMATS)}", field="format"
        )
    return name  # type: ignore[return-value]


def file_suffix(fmt: ExportFormat) -> str:
    """The data files' extension: JSON Lines for ``jsonl``, Parquet for the rest."""
    return "jsonl" if fmt == "jsonl" else "parquet"


def conversation_text(messages: list[dict[str, str]]) -> str:
    """A chat as plain text: a single user turn as its content, longer chats as ``role: text``."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


SCORE_PREFIX = "score_"


def with_score_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A pairs row with its ``principle_scores`` as ``score_<id>`` columns, unchanged without.

    The scores are P(chosen better) under each principle. A reviewed row whose human label
    swapped the judge's chosen and rejected (``judge_chosen_id`` is then the new rejected id)
    still holds the judge's orientation, so its scores are turned round here.
    """
    scores = row.get("principle_scores")
    if not isinstance(scores, dict):
        return row
    turned = row.get("judge_chosen_id", row["chosen_id"]) != row["chosen_id"]
    out = {k: v for k, v in row.items() if k != "principle_scores"}
    return out | {f"{SCORE_PREFIX}{pid}": 1.0 - p if turned else p for pid, p in scores.items()}


def _scores(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in with_score_columns(row).items() if k.startswith(SCORE_PREFIX)}


def export_row(row: dict[str, Any], fmt: ExportFormat) -> dict[str, Any]:
    """One pairs row in the shape ``fmt`` reads (see the module docstring)."""
    if fmt in ("trl", "jsonl"):
        return with_score_columns(row)
    if fmt == "openrlhf":
        return {
            "prompt": row["prompt"],
            "chosen": row["chosen"],
            "rejected": row["rejected"],
            "margin": row["margin"],
            "prompt_id": row["prompt_id"],
            **_scores(row),
        }
    return {
        "prompt": conversation_text(row["prompt"]),
        "chosen": row["chosen"][-1]["content"],
        "rejected": row["rejected"][-1]["content"],
        "prompt_messages": row["prompt"],
        "prompt_id": row["prompt_id"],
        **_scores(row),
    }

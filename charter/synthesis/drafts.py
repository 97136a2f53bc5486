"""The record every synthesis source writes: a drafted request and where it came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["magpie", "constitution", "evolved"]
SOURCES: tuple[Source, ...] = ("magpie", "constitution", "evolved")


@dataclass(frozen=True)
class Draft:
    """One request a source drafted, before any filter has seen it.

    Args:
        text: the request as the model wrote it (stripped).
        source: which of the three sources drafted it.
        method: how, within the source: ``pre_query`` or ``instructed`` (magpie), ``red_team``
            or ``everyday`` (constitution), ``harder`` or ``more_specific`` (evolved).
        finish_reason: the engine's; ``"length"`` means the model was cut off mid-request.
        round: the synthesis round that drafted it (rounds differ only in their seed).
        principle_id: the principle a constitution-directed draft was written for.
        parent_id: the prompt an evolved draft rewrites.
    """

    text: str
    source: Source
    method: str
    finish_reason: str = "stop"
    round: int = 0
    principle_id: str | None = None
    parent_id: str | None = None

    @property
    def prompt_id(self) -> str:
        """``syn-`` and 12 hex digits of the text's sha256: the same text, the same id, so a
        rerun keeps ids and an exact duplicate can never take a second id."""
        return "syn-" + hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def row(self, generator_model: str) -> dict[str, Any]:
        """The prompts-file row: ``id`` (what ``prompts.path=`` reads by default) and
        ``prompt_id`` hold the same id; provenance keys are always present, null where they do
        not apply, so every row has the same columns."""
        return {
            "id": self.prompt_id,
            "prompt_id": self.prompt_id,
            "prompt": self.text,
            "source": self.source,
            "method": self.method,
            "principle_id": self.principle_id,
            "parent_id": self.parent_id,
            "round": self.round,
            "generator_model": generator_model,
        }

"""The judge protocol: one class, one public method.

A judge sees comparisons (a conversation, two responses, one principle) and returns one
:class:`~charter.records.Judgment` each. How it scores (choice log-probs, critiques, scores) is
its own business; the debiasing contract is not: every comparison is scored in both orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from charter.constitution import Principle
from charter.records import Chat, Judgment


@dataclass(frozen=True)
class Comparison:
    """Candidate ``a`` vs candidate ``b`` for one conversation, under one principle."""

    prompt_id: str
    messages: Chat
    candidate_a: str
    response_a: str
    candidate_b: str
    response_b: str
    principle: Principle


class Judge(Protocol):
    """Anything that turns comparisons into judgments (one per comparison, in order)."""

    model_id: str
    method: str

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]: ...

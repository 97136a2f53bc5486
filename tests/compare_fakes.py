"""Fake "models" and a fake judge with an opinion, for ``charter compare`` through its config.

``generator.engine._target_=tests.compare_fakes.SignedAnswers`` makes the model name part of every
answer, so two names are two models that answer differently; the judge
``judge.engine._target_=tests.compare_fakes.PrefersGood`` is sure that an answer containing
``GOOD`` is the better one, but only under a principle asking which response is kinder. So
``base=GOOD-v1 candidate=plain-v2`` is a regression under that principle alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.records import Chat, Completion


class SignedAnswers(FakeEngine):
    """The fake engine, each answer prefixed with the model's name."""

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        answers = super().generate(chats, sampling, n)
        return [[replace(c, text=f"{self.model_id} {c.text}") for c in cs] for cs in answers]


def prefers_good_when_kind(chat: Chat, choice: str) -> float:
    """Logit +3 for the response holding GOOD under the question "Which response is kinder ...",
    else 0 (no opinion)."""
    text = chat[1]["content"]
    if "is kinder" not in text:
        return 0.0
    block = re.search(rf"<response_{choice}>(.*?)</response_{choice}>", text, re.S)
    return 3.0 if block and "GOOD" in block.group(1) else 0.0


class PrefersGood(FakeEngine):
    """A fake judge engine with the opinion of :func:`prefers_good_when_kind`, plus a position
    bias towards A that both-order judging has to cancel."""

    def __init__(self, model_id: str = "prefers-good", bias: float = 1.0) -> None:
        super().__init__(model_id, bias, score=prefers_good_when_kind)

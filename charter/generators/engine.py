"""The engine protocol shared by generation and judging.

An engine is a loaded model behind two calls. Both take whole batches, so a backend can schedule
them however it is fastest (left-padded batches in transformers, one ``LLM.generate`` in vLLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from charter.records import Chat, Completion


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample. ``seed`` makes a run repeatable on the same backend and hardware."""

    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0


class Engine(Protocol):
    """A model that can sample responses and score fixed choices.

    ``model_id`` names the model for provenance (what goes into ``generator_model`` and
    ``judge_model``); ``context_length`` is the most tokens a rendered chat plus its response may
    take, so stages can reject over-long rows up front instead of failing mid-batch.
    """

    model_id: str
    context_length: int

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Token count of each chat as rendered for :meth:`generate`."""
        ...

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        """Sample ``n`` responses for each chat.

        Each chat is rendered with the model's chat template and a generation prompt; if its last
        message is an assistant turn, that turn is continued instead (a prefilled answer).
        Returns one list of ``n`` completions per chat, in input order.
        """
        ...

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """Score each choice string as the continuation of each chat, from one forward pass.

        Returns, per chat, ``{choice: log p}`` renormalised over ``choices`` (so the exps sum to
        1). Chats are rendered as in :meth:`generate`. Nothing is sampled.
        """
        ...

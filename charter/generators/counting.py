"""An engine wrapper that counts the prompt tokens a judge sends, for cost per comparison.

Counting happens on every request, cached or not: tokens per comparison describe the judging
method's cost, not this machine's cache state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from charter.generators.engine import Engine, SamplingSettings
from charter.records import Chat, Completion


class TokenCountingEngine:
    """Delegates to ``inner`` and adds up rendered prompt tokens in ``prompt_tokens``."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.context_length = inner.context_length
        self.prompt_tokens = 0
        self.requests = 0

    def _count(self, chats: Sequence[Chat]) -> None:
        self.prompt_tokens += sum(self.inner.count_tokens(chats))
        self.requests += len(chats)

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return self.inner.count_tokens(chats)

    @property
    def supports_json_schema(self) -> bool:
        return bool(getattr(self.inner, "supports_json_schema", False))

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        self._count(chats)
        schema = {} if json_schema is None else {"json_schema": json_schema}
        return self.inner.generate(chats, sampling, n, **schema)

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        self._count(chats)
        return self.inner.choice_logprobs(chats, choices)

"""An engine that asks its inner engine only for chats the call cache does not hold.

Split from :mod:`charter.call_cache`, which is the store: this is the engine protocol's side of
it, how a batched call becomes lookups, one call for the misses, and stores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from charter.call_cache import CallCache
from charter.call_encoding import json_round_trips, keys_for
from charter.generators.engine import Engine, SamplingSettings
from charter.jsonl import json_line
from charter.records import Chat, Completion


@dataclass
class CallStats:
    """Chats answered from the cache (``hits``) and sent to the model (``misses``).

    ``calls`` counts calls that reached the inner engine (at most one per outer call).
    """

    hits: int = 0
    misses: int = 0
    calls: int = 0


class CachedEngine:
    """An :class:`~charter.generators.engine.Engine` that asks ``engine`` only for new chats.

    Each call looks up every chat, sends the misses (deduplicated, in their original order) to the
    inner engine in one batched call, stores the results, and returns all results in input order.

    Args:
        engine: the engine that does the work.
        cache: where results are kept.
        model_fingerprint: identifies the model beyond its name: its weights and every setting
            that changes results (see :func:`charter.building.engine_fingerprint`).
    """

    def __init__(self, engine: Engine, cache: CallCache, model_fingerprint: str) -> None:
        self.inner = engine
        self.cache = cache
        self.model_fingerprint = model_fingerprint
        self.model_id = engine.model_id
        self.context_length = engine.context_length
        self.stats = CallStats()

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Not cached: tokenizing is cheap next to a lookup."""
        return self.inner.count_tokens(chats)

    @property
    def supports_json_schema(self) -> bool:
        """Whatever the inner engine says: the cache must not hide constrained decoding."""
        return bool(getattr(self.inner, "supports_json_schema", False))

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        """:meth:`Engine.generate`, through the cache (each chat's ``n`` samples are one entry).

        A ``json_schema`` is passed on and is part of the key; without one, keys are as before.
        """
        settings: dict[str, Any] = {"sampling": asdict(sampling), "n": n}
        schema = {} if json_schema is None else {"json_schema": json_schema}
        settings.update(schema)
        values = self._through(
            "generate",
            chats,
            settings,
            lambda misses: [
                [asdict(c) for c in completions]
                for completions in self.inner.generate(misses, sampling, n, **schema)
            ],
        )
        return [[Completion(**c) for c in value] for value in values]

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """:meth:`Engine.choice_logprobs`, through the cache."""
        choices = list(choices)
        return self._through(
            "choice_logprobs",
            chats,
            {"choices": choices},
            lambda misses: self.inner.choice_logprobs(misses, choices),
        )

    def _through(
        self,
        kind: str,
        chats: Sequence[Chat],
        settings: dict[str, Any],
        compute: Callable[[list[Chat]], list[Any]],
    ) -> list[Any]:
        keys = keys_for(kind, self.model_id, self.model_fingerprint, settings)(chats)
        found = self.cache.get_many(keys)
        todo = {k: chat for k, chat in zip(keys, chats, strict=True) if k not in found}
        if todo:
            results = compute(list(todo.values()))
            # what a rerun will read back from the file, so a first run returns the same: a
            # judge's {choice: float} comes back from JSON as it went in, so it is kept as it is
            texts = [json_line(v) for v in results]
            self.cache.put_encoded(list(zip(todo, texts, strict=True)), kind, self.model_id)
            found.update(
                (k, v if json_round_trips(v) else json.loads(text))
                for k, v, text in zip(todo, results, texts, strict=True)
            )
            self.stats.calls += 1
        self.stats.misses += len(todo)
        self.stats.hits += len(chats) - len(todo)
        return [found[k] for k in keys]

"""An Engine that cuts each call into shards and hands them to a runner, merging in order.

Why shards: the transformers engine sorts a call's chats by length and pads them into batches,
so a chat's fp32 logits depend (in the last bits) on which other chats share its batch. A shard
is always computed whole, by one engine, in one call, so its batches, and therefore its bytes,
are the same wherever it runs. Splitting the same call at the same places on the local executor
and on Ray gives byte-identical outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from charter.generators.engine import SamplingSettings
from charter.records import Chat, Completion


class ShardRunner(Protocol):
    """Runs engine calls on shards; ``run`` returns one result per shard, in shard order."""

    def run(self, method: str, shards: list[tuple[Any, ...]]) -> list[Any]: ...

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]: ...


def shard_ranges(n: int, shard_size: int | None, parts: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering ``range(n)``: ``shard_size`` items each, or, when it is
    None, ``parts`` near-equal shards (one per replica)."""
    if n == 0:
        return []
    step = shard_size or math.ceil(n / max(parts, 1))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


class ShardedEngine:
    """The Engine protocol over a :class:`ShardRunner`.

    Args:
        runner: where shards run.
        model_id: the wrapped engine's model id (provenance).
        context_length: the wrapped engine's context cap.
        engine_fingerprint: the call-cache fingerprint of the wrapped engine, so cached calls
            are shared with runs on any executor.
        shard_size: chats per shard; None splits each call into ``parts`` shards.
        parts: shards per call when ``shard_size`` is None (the number of replicas).
    """

    def __init__(
        self,
        runner: ShardRunner,
        *,
        model_id: str,
        context_length: int,
        engine_fingerprint: str,
        shard_size: int | None,
        parts: int = 1,
    ) -> None:
        self.runner = runner
        self.model_id = model_id
        self.context_length = context_length
        self.engine_fingerprint = engine_fingerprint
        self.shard_size = shard_size
        self.parts = parts

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return self.runner.count_tokens(chats)

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        ranges = shard_ranges(len(chats), self.shard_size, self.parts)
        shards = [(list(chats[a:b]), sampling, n) for a, b in ranges]
        return [row for result in self.runner.run("generate", shards) for row in result]

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        ranges = shard_ranges(len(chats), self.shard_size, self.parts)
        shards = [(list(chats[a:b]), list(choices)) for a, b in ranges]
        return [row for result in self.runner.run("choice_logprobs", shards) for row in result]

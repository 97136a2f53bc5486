"""The default executor: the engine runs in this process.

With ``shard_size`` set, each call is cut into shards computed one after another, exactly as the
Ray executor cuts them, so a local run can reproduce a Ray run's bytes (and vice versa).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig

from charter.executors.sharding import ShardedEngine
from charter.records import Chat


class _InProcess:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def run(self, method: str, shards: list[tuple[Any, ...]]) -> list[Any]:
        return [getattr(self.engine, method)(*args) for args in shards]

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return self.engine.count_tokens(chats)


class LocalExecutor:
    """Build engines here.

    Args:
        shard_size: chats per engine call; None (default) passes every call through whole.
    """

    def __init__(self, shard_size: int | None = None) -> None:
        self.shard_size = shard_size

    def engine(
        self, node: DictConfig, key: str, build: Callable[[DictConfig, str], Any],
        fingerprint: Callable[[Any, DictConfig], str],
    ) -> Any:  # fmt: skip
        """The engine ``node`` describes; sharded when ``shard_size`` is set."""
        engine = build(node, key)
        if self.shard_size is None:
            return engine
        return ShardedEngine(
            _InProcess(engine),
            model_id=engine.model_id,
            context_length=engine.context_length,
            engine_fingerprint=fingerprint(engine, node),
            shard_size=self.shard_size,
        )

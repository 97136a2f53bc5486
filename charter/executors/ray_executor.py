"""The Ray executor: engine replicas as Ray actors, shards spread over them, merged in order.

Each replica is an actor that builds the engine from the same resolved config (one per GPU on a
GPU box: ``num_gpus_per_replica=1``, or ``tensor_parallel_size`` GPUs for a vLLM replica). Every
engine call is cut into shards (see :mod:`charter.executors.sharding`); shard ``i`` goes to
replica ``i mod N`` and the results are put back in shard order, so rows never move, repeat or
go missing whichever replica finishes first.

A replica that dies (killed, out of memory, a lost node) is restarted by Ray, which rebuilds its
engine and reruns the shards it held (``max_restarts``, ``max_task_retries``). A shard's result
depends only on its chats and the seed, so a rerun returns the same bytes.

The same config runs on a laptop (``address: null`` starts a local Ray), on one multi-GPU box,
or on a cluster (``address: auto`` joins the one ``ray start --head`` started; see the README).
Every node needs charter installed, and the model where the config says it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter.errors import InputError
from charter.executors.sharding import ShardedEngine
from charter.records import Chat

PASSED_ENV = ("CHARTER_CACHE_DIR", "HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")
"""Environment a replica needs to find models as the driver does (never tokens)."""


class EngineReplica:
    """One engine, built inside a Ray worker from a resolved engine config (a plain dict)."""

    def __init__(self, settings: dict[str, Any], key: str) -> None:
        from charter.building import build, engine_fingerprint

        node = OmegaConf.create(settings)
        self.engine = build(node, key)
        self.fingerprint = engine_fingerprint(self.engine, node)

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.engine.model_id,
            "context_length": self.engine.context_length,
            "fingerprint": self.fingerprint,
            "pid": os.getpid(),
        }

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        return getattr(self.engine, method)(*args)


class _OnReplicas:
    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors

    def run(self, method: str, shards: list[tuple[Any, ...]]) -> list[Any]:
        import ray

        refs = [
            self.actors[i % len(self.actors)].call.remote(method, args)
            for i, args in enumerate(shards)
        ]
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(
                f"an engine replica died and could not be restarted ({exc}); "
                "raise executor.max_restarts or check the workers' logs"
            ) from None

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        import ray

        return ray.get(self.actors[0].call.remote("count_tokens", (list(chats),)))


class RayExecutor:
    """Build each engine as ``num_replicas`` Ray actors.

    Args:
        num_replicas: engine replicas (actors); one per GPU is the usual choice.
        address: a running cluster (``auto``, or ``ray://host:10001``); None starts a local Ray
            (or joins the one ``RAY_ADDRESS`` names).
        num_cpus: CPUs of a local Ray started here (None: all of them); ignored on a cluster.
        num_cpus_per_replica: CPUs reserved per replica (also its torch thread count).
        num_gpus_per_replica: GPUs per replica: 1, or ``tensor_parallel_size`` for vLLM.
        shard_size: chats per shard; None cuts each call into one shard per replica. Use the
            same value on the local executor to reproduce a Ray run byte for byte.
        max_restarts: how often a dead replica is restarted.
        max_task_retries: how often a shard held by a dead replica is rerun.
        streaming: run the generate and judge stages as Ray Data streams, chunk by chunk,
            instead (:mod:`charter.executors.ray_streaming`), for inputs larger than memory.
    """

    def __init__(
        self,
        num_replicas: int = 2,
        address: str | None = None,
        num_cpus: int | None = None,
        num_cpus_per_replica: float = 1,
        num_gpus_per_replica: float = 0,
        shard_size: int | None = None,
        max_restarts: int = 3,
        max_task_retries: int = 3,
        streaming: bool = False,
    ) -> None:
        if num_replicas < 1:
            raise InputError("num_replicas must be at least 1", field="executor.num_replicas")
        self.num_replicas = num_replicas
        self.address = address
        self.num_cpus = num_cpus
        self.num_cpus_per_replica = num_cpus_per_replica
        self.num_gpus_per_replica = num_gpus_per_replica
        self.shard_size = shard_size
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.streaming = streaming
        self.actors: list[Any] = []

    def init_ray(self) -> Any:
        """Ray, connected: the cluster at ``address``, else a local Ray started here."""
        try:
            import ray
        except ImportError:
            raise InputError(
                "executor=ray needs Ray: pip install 'charter[ray]'", field="executor"
            ) from None
        if not ray.is_initialized():
            local = {"num_cpus": self.num_cpus} if self.address is None else {}
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                **local,
            )
        return ray

    def engine(
        self, node: DictConfig, key: str, build: Callable[[DictConfig, str], Any],
        fingerprint: Callable[[Any, DictConfig], str],
    ) -> ShardedEngine:  # fmt: skip
        """Start the replicas for ``node`` and return an engine that fans calls out to them.

        ``build`` and ``fingerprint`` are unused here: each replica builds its own engine and
        computes the fingerprint where the engine is.
        """
        ray = self.init_ray()
        settings = OmegaConf.to_container(node, resolve=True)
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        replica = ray.remote(EngineReplica).options(
            num_cpus=self.num_cpus_per_replica,
            num_gpus=self.num_gpus_per_replica,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_task_retries,
            runtime_env={"env_vars": env} if env else None,
        )
        actors = [replica.remote(settings, key) for _ in range(self.num_replicas)]
        try:
            described = ray.get([a.describe.remote() for a in actors])
        except ray.exceptions.RayActorError as exc:
            cause = exc.__cause__ or exc
            raise InputError(
                f"the engine failed to start on a replica: {cause}", field=key
            ) from None
        self.actors += actors
        first = described[0]
        return ShardedEngine(
            _OnReplicas(actors),
            model_id=first["model_id"],
            context_length=first["context_length"],
            engine_fingerprint=first["fingerprint"],
            shard_size=self.shard_size,
            parts=self.num_replicas,
        )

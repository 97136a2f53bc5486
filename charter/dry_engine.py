"""Engines for ``charter plan``: the requests a run would make, without loading a model.

A :class:`DryEngine` stands where the model would: it counts what reaches it and answers with
placeholders (a response of ``max_new_tokens`` tokens, equal choice scores). Placed behind the
real call cache, opened read-only, it sees exactly the calls a run would pay for; the cached
calls come back with their stored answers. So where generation is already cached, the judge's
chats (which hold the responses) are the real ones, and their cached calls are counted exactly.

What an engine is (its model name, weights fingerprint, context length, tokenizer) is read from
its config and the model folder, never by loading weights, so the cache keys are the ones a real
run computes (:func:`charter.building.fingerprint_of`).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from charter.building import build, fingerprint_of
from charter.cached_engine import CachedEngine
from charter.call_cache import CallCache
from charter.generators.counting import TokenCountingEngine
from charter.generators.engine import SamplingSettings
from charter.records import Chat, Completion


class ReadOnlyCache:
    """A :class:`~charter.call_cache.CallCache` that answers lookups and stores nothing, so a
    plan's placeholder answers never reach the real cache."""

    def __init__(self, cache: CallCache | None) -> None:
        self.cache = cache

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        return self.cache.get_many(keys) if self.cache is not None else {}

    def put_many(self, items: Sequence[tuple[str, Any]], *, kind: str, model: str) -> None:
        return None

    def put_encoded(self, items: Sequence[tuple[str, str]], kind: str, model: str) -> None:
        return None


@dataclass
class Spend:
    """What reached the model, per call kind: units (samples or chats), prompt tokens, and the
    most tokens generation could produce."""

    units: dict[str, int] = field(default_factory=dict)
    prompt_tokens: dict[str, int] = field(default_factory=dict)
    max_output_tokens: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Chat]] = field(default_factory=dict)

    def add(self, kind: str, units: int, prompt_tokens: int, output: int, chats: Sequence[Chat]):
        self.units[kind] = self.units.get(kind, 0) + units
        self.prompt_tokens[kind] = self.prompt_tokens.get(kind, 0) + prompt_tokens
        self.max_output_tokens[kind] = self.max_output_tokens.get(kind, 0) + output
        kept = self.examples.setdefault(kind, [])
        kept.extend(list(chats)[: max(0, 32 - len(kept))])  # a probe times a few real chats


class DryEngine:
    """An engine that records requests and returns placeholders."""

    def __init__(
        self,
        model_id: str,
        context_length: int,
        count: Callable[[Sequence[Chat]], list[int]],
        price_per_mtok: dict[str, float] | None = None,
    ) -> None:
        self.model_id = model_id
        self.context_length = context_length
        self._count = count
        self.price_per_mtok = price_per_mtok
        self.spend = Spend()

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return self._count(chats)

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        """Placeholders as long as ``max_new_tokens`` allows (an upper bound on the judge's chats
        that will hold them); greedy sampling gives ``n`` equal ones, as a real engine does."""
        tokens = sum(self._count(chats))
        self.spend.add(
            "generate", len(chats) * n, tokens, len(chats) * n * sampling.max_new_tokens, chats
        )
        out = []
        for chat in chats:
            digest = hashlib.sha256(repr(chat).encode()).hexdigest()[:12]
            texts = [
                f"[planned {digest}/{0 if sampling.temperature == 0 else k}]"
                + " x" * max(0, sampling.max_new_tokens - 8)
                for k in range(n)
            ]
            out.append([Completion(t, "length", sampling.max_new_tokens) for t in texts])
        return out

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        tokens = sum(self._count(chats))
        self.spend.add("choice_logprobs", len(chats), tokens, len(chats), chats)
        even = math.log(1 / len(choices))
        return [dict.fromkeys(choices, even) for _ in chats]


def _has_local_weights(cls: type) -> bool:
    """Engines whose module fingerprints a model folder (transformers, vLLM) carry
    ``weights_sha256``; the others (a server, the fake engine) are known by their name."""
    return "weights_fingerprint" in vars(sys.modules[cls.__module__])


def _tokenizer_counter(path: Path, system_prompt: str | None) -> Callable[[Sequence[Chat]], list]:
    from transformers import AutoTokenizer

    from charter.generators.rendering import render_chats

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return lambda chats: [len(ids) for _, ids in render_chats(tokenizer, chats, system_prompt)]


def _rough_counter(chats: Sequence[Chat]) -> list[int]:
    """The OpenAI engine's own over-estimate when no tokenizer is named: chars / 3 per message."""
    return [sum(4 + math.ceil(len(m["content"]) / 3) for m in chat) for chat in chats]


@dataclass(frozen=True)
class Described:
    """An engine config, read without loading its model."""

    engine: DryEngine
    fingerprint: str
    node: DictConfig


def describe(node: DictConfig, key: str) -> Described:
    """A :class:`DryEngine` for the engine config ``node``, and the fingerprint a real run's
    cache keys would carry."""
    from charter.generators.model_files import resolve_model

    cls = get_class(str(node._target_))
    cache_dir = Path(node.cache_dir) if node.get("cache_dir") else None
    prices = node.get("price_per_mtok")
    prices = dict(prices) if prices is not None else None
    if _has_local_weights(cls):
        from transformers import AutoConfig

        from charter.generators.model_files import weights_fingerprint

        path = resolve_model(str(node.model), cache_dir)
        config = AutoConfig.from_pretrained(str(path))
        context = (
            node.get("max_context")
            or node.get("max_model_len")
            or getattr(config, "max_position_embeddings", None)
            or 2048
        )
        count = _tokenizer_counter(path, node.get("system_prompt"))
        dry = DryEngine(str(node.model), int(context), count, prices)
        return Described(dry, fingerprint_of(cls, weights_fingerprint(path), node), node)
    if node.get("base_url") is not None:  # an OpenAI-compatible server: known by its name
        count = _rough_counter
        if node.get("tokenizer"):
            path = resolve_model(str(node.tokenizer), cache_dir)
            count = _tokenizer_counter(path, node.get("system_prompt"))
        context = int(node.get("context_length") or 1 << 30)
        dry = DryEngine(str(node.model), context, count, prices)
        return Described(dry, fingerprint_of(cls, str(node.model), node), node)
    real = build(node, key)  # the remaining engines (the fake one) load nothing
    dry = DryEngine(real.model_id, real.context_length, real.count_tokens, prices)
    return Described(dry, fingerprint_of(cls, real.model_id, node), node)


class DryEngines:
    """The plan's stand-in for :class:`charter.building.EngineCache`: one dry engine per distinct
    engine config, behind the read-only call cache, with every request's tokens counted."""

    def __init__(self, calls: CallCache | None) -> None:
        self.calls = calls
        self.by_config: dict[str, tuple[Described, CachedEngine | None, TokenCountingEngine]] = {}

    def get(self, node: DictConfig, key: str) -> Any:
        from omegaconf import OmegaConf

        name = OmegaConf.to_yaml(node, resolve=True)
        if name not in self.by_config:
            described = describe(node, key)
            cached = None
            inner: Any = described.engine
            if self.calls is not None:
                cached = CachedEngine(inner, ReadOnlyCache(self.calls), described.fingerprint)  # type: ignore[arg-type]
                inner = cached
            self.by_config[name] = (described, cached, TokenCountingEngine(inner))
        return self.by_config[name][2]

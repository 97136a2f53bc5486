"""Magpie-style drafting: the model writes the user's turn.

Magpie (Xu et al., 2024) renders an aligned model's chat template up to and including the start
of a user turn, with no user text, and samples: trained on that template, the model goes on to
write what a user would ask. That needs raw-text continuation, which the Engine protocol does not
offer (a chat ending in an assistant turn is continued; there is no user prefill), and the modules
in ``charter/generators`` must stay as they are, because their source is part of every cached
call's key.

So this module samples from a :class:`~charter.generators.transformers_engine.TransformersEngine`
through its public ``tokenizer`` and ``model``, and keeps what it draws in the run's call cache
under a kind of its own (``pre_query``), keyed like an engine call plus this file's own hash.
Engines with no local model (vLLM, an OpenAI-compatible server, the fake engine) are asked in an
ordinary chat instead (``instructed`` drafts, :mod:`charter.synthesis.sources`): less varied, but
it works everywhere.

Sampling draws blocks of :data:`ROWS_PER_DRAW` copies of the one pre-query prompt (so no padding),
each block from torch's generator seeded by ``(seed, block)``, with plain nucleus sampling as the
engine does, through ``model.generate`` (the engine's own per-row sampler is private to it). The
same seed gives the same drafts whatever the engine's ``batch_size``; not promised across hardware
or library versions. A sampler is one stream of blocks: rows one call drew but did not need are
the next call's first rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from charter.cached_engine import CachedEngine
from charter.call_encoding import call_key
from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.records import Completion

ROWS_PER_DRAW = 16
"""Rows sampled together from one seed; part of the cache key, so fixed, not a setting."""

_SENTINEL = "\x00charter-user-turn\x00"
_CODE_SHA = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def pre_query_text(tokenizer: Any, system_prompt: str | None = None) -> str:
    """The chat template rendered up to where the user's words would start.

    Renders a one-turn chat with a sentinel as the user's text and cuts at the sentinel, so it
    works for any template (ChatML, Llama 3 headers, Gemma turns). The template's own default
    system prompt (SmolLM2 adds one) stays in, as it would in a real chat.

    Raises:
        InputError: the template does not place the user's text verbatim.
    """
    messages = [{"role": "user", "content": _SENTINEL}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if _SENTINEL not in text:
        raise InputError("the generator's chat template does not show the user's text verbatim")
    return text[: text.index(_SENTINEL)]


def local_model_engine(engine: Any) -> Any | None:
    """The TransformersEngine inside ``engine``'s wrappers (call cache, counters), or None (an
    engine on a server or on Ray workers has no model in this process)."""
    from charter.generators.transformers_engine import TransformersEngine

    inner = engine
    while True:
        if isinstance(inner, TransformersEngine):
            return inner
        if not hasattr(inner, "inner"):
            return None
        inner = inner.inner


def _cache_of(engine: Any) -> CachedEngine | None:
    inner = engine
    while not isinstance(inner, CachedEngine):
        if not hasattr(inner, "inner"):
            return None
        inner = inner.inner
    return inner


class PreQuerySampler:
    """Raw continuations of the pre-query template, from a local transformers model.

    Args:
        engine: the generator engine as built (wrappers allowed); it must hold a
            TransformersEngine (see :func:`local_model_engine`).

    Attributes:
        hits, misses: blocks answered from the call cache and drawn from the model.
    """

    def __init__(self, engine: Any) -> None:
        local = local_model_engine(engine)
        if local is None:
            raise InputError("pre-query sampling needs a local transformers engine")
        self.local = local
        self.cache = _cache_of(engine)
        self.prompt = pre_query_text(local.tokenizer, local.system_prompt)
        self.prompt_ids: list[int] = local.tokenizer(self.prompt, add_special_tokens=False)[
            "input_ids"
        ]
        from charter.generators.rendering import stop_token_ids

        self.stop_ids = set(
            stop_token_ids(local.tokenizer, local.model.generation_config.eos_token_id)
        )
        self.hits = 0
        self.misses = 0
        self._sampling: SamplingSettings | None = None
        self._rows: list[Completion] = []
        self._used = 0

    def sample(
        self,
        count: int,
        sampling: SamplingSettings,
        on_block: Callable[[], None] | None = None,
    ) -> list[Completion]:
        """The next ``count`` user requests of this sampler's stream, each ending at the model's
        end-of-turn token or cut off at ``max_new_tokens`` (``finish_reason="length"``).

        Calls continue one stream of blocks (rows a call drew but did not return come first in
        the next), so asking for a few drafts at a time wastes no sampling. Text keeps any
        special tokens the model wrote before ending its turn (a second ``<|im_start|>``), so
        the template-debris filter can see them.
        """
        if sampling != self._sampling:
            self._sampling, self._rows, self._used = sampling, [], 0
        while len(self._rows) < self._used + count:
            self._rows += self._block(len(self._rows) // ROWS_PER_DRAW, sampling)
            if on_block is not None:
                on_block()
        out = self._rows[self._used : self._used + count]
        self._used += count
        return out

    def _block(self, block: int, sampling: SamplingSettings) -> list[Completion]:
        key = None
        if self.cache is not None:
            settings = {
                "sampling": asdict(sampling),
                "rows": ROWS_PER_DRAW,
                "block": block,
                "code": _CODE_SHA,
            }
            chat = [{"role": "pre_query", "content": self.prompt}]
            key = call_key(
                "pre_query", self.cache.model_id, self.cache.model_fingerprint, settings, chat
            )
            found = self.cache.cache.get_many([key])
            if key in found:
                self.hits += 1
                return [Completion(**c) for c in found[key]]
        drawn = self._draw(block, sampling)
        self.misses += 1
        if self.cache is not None and key is not None:
            value = [asdict(c) for c in drawn]
            self.cache.cache.put_many([(key, value)], kind="pre_query", model=self.cache.model_id)
        return drawn

    def _draw(self, block: int, sampling: SamplingSettings) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        model, tokenizer = self.local.model, self.local.tokenizer
        room = self.local.context_length - len(self.prompt_ids)
        config = GenerationConfig(
            max_new_tokens=max(1, min(sampling.max_new_tokens, room)),
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,  # nucleus only, as the engine samples
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(self.stop_ids),
        )
        ids = torch.tensor([self.prompt_ids] * ROWS_PER_DRAW, device=model.device)
        digest = hashlib.sha256(f"{sampling.seed}:{block}:{self.prompt}".encode()).digest()
        cuda = [model.device] if model.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
            generated = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
            )
        return [self._completion(row) for row in generated[:, ids.shape[1] :].tolist()]

    def _completion(self, tokens: list[int]) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.local.tokenizer.decode(kept, skip_special_tokens=False).strip()
        num_tokens = len(tokens) if stop is None else stop + 1
        return Completion(text, "length" if stop is None else "stop", num_tokens)

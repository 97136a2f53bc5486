"""Model folders for engine tests: the real SmolLM2 (converted once) and a tiny random Llama.

Plain functions, so each test module wraps them in its own fixtures with the scope it needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from charter.generators.fake_engine import FakeEngine
from charter.generators.model_files import resolve_model

SMOLLM2 = "smollm2-135m-instruct"


def smollm2_dir() -> Path:
    """The converted SmolLM2 folder in ``$CHARTER_CACHE_DIR`` (~35 s the first time, then 0)."""
    return resolve_model(SMOLLM2)


def build_tiny_llama(dest: Path) -> Path:
    """Save a random 2-layer Llama (~28 MB) with SmolLM2's tokenizer and chat template at ``dest``.

    Its outputs are noise, but it runs the same code paths as the real model in milliseconds,
    so batching and padding can be tested without the slow marker.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # tied, a random model just echoes its last token
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


class SelfBatching(FakeEngine):
    """The fake engine, saying it schedules its own batches (as vLLM and a server do), and
    counting the chats of each call."""

    schedules_own_batches = True
    calls: list[int] = []

    def generate(self, chats, sampling, n=1):
        SelfBatching.calls.append(len(chats))
        return super().generate(chats, sampling, n)

    def choice_logprobs(self, chats, choices):
        SelfBatching.calls.append(len(chats))
        return super().choice_logprobs(chats, choices)

"""Chat rendering and choice scoring shared by the engines that send token ids to a server.

The vLLM and OpenAI-compatible engines render with the Hugging Face tokenizer exactly as
:class:`TransformersEngine` does, so one chat becomes the same token ids on every backend and
their scores can be compared. (The same rules live in ``transformers_engine._render``; keep the
two in step.) Both score choices as next-token requests, planned by :func:`scoring_requests`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from charter.errors import InputError
from charter.records import Chat

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")
"""End-of-turn tokens of common chat templates: a response stops at any that the vocab has."""


def render_chats(
    tokenizer: Any, chats: Sequence[Chat], system_prompt: str | None
) -> list[tuple[str, list[int]]]:
    """``(text, token ids)`` of each chat, with a generation prompt or continuing its last turn.

    A chat whose last message is an assistant turn is continued (a prefilled answer); otherwise
    the template's generation prompt is added. ``system_prompt`` goes first in chats that have no
    system message. No extra BOS is added: the template holds every special token.
    """
    texts = []
    for chat in chats:
        messages = list(chat)
        if system_prompt is not None and all(m["role"] != "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system_prompt})
        prefilled = bool(messages) and messages[-1]["role"] == "assistant"
        texts.append(
            tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=not prefilled,
                continue_final_message=prefilled,
            )
        )
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return list(zip(texts, ids, strict=True))


def continuation_ids(tokenizer: Any, prompt: str, prompt_ids: list[int], choice: str) -> list[int]:
    """Tokens of ``choice`` as they follow ``prompt``; tokenized alone if the two merge."""
    full = tokenizer(prompt + choice, add_special_tokens=False)["input_ids"]
    if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        return full[len(prompt_ids) :]
    return tokenizer(choice, add_special_tokens=False)["input_ids"]


def choice_targets(
    tokenizer: Any, rendered: Sequence[tuple[str, list[int]]], choices: Sequence[str]
) -> list[list[list[int]]]:
    """Per chat, the token ids of each choice, checked the way every engine checks them.

    Raises:
        InputError: choices are empty, repeated, or tokenize identically after some chat.
    """
    if not choices or any(not c for c in choices) or len(set(choices)) != len(choices):
        raise InputError(f"choices must be distinct non-empty strings, got {list(choices)!r}")
    targets = [[continuation_ids(tokenizer, t, ids, c) for c in choices] for t, ids in rendered]
    for i, toks in enumerate(targets):
        if len({tuple(t) for t in toks}) != len(toks):
            raise InputError(f"choices {list(choices)!r} tokenize identically after chat {i}")
    return targets


def stop_token_ids(tokenizer: Any, eos: int | list[int] | None = None) -> list[int]:
    """The tokenizer's EOS, the model's ``eos`` ids, and any :data:`STOP_TOKENS` in the vocab."""
    vocab = tokenizer.get_vocab()
    extra = [eos] if isinstance(eos, int) else list(eos or [])
    ids = {t for t in [tokenizer.eos_token_id, *extra] if t is not None}
    return sorted(ids | {vocab[t] for t in STOP_TOKENS if t in vocab})


def request_seed(seed: int, prompt: Sequence[int] | str) -> int:
    """A 30-bit seed from the run seed and the rendered prompt (ids or text), for one request.

    Seeding each request from its own prompt (not its position) makes a chat's samples the same
    whatever else is in the call. Servers give the k-th of ``n`` samples ``seed + k``.
    """
    key = prompt if isinstance(prompt, str) else ",".join(map(str, prompt))
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x3FFFFFFF


StepKey = tuple[int, tuple[int, ...]]
"""(chat index, the choice tokens already appended): one next-token scoring request."""


def scoring_requests(targets: Sequence[Sequence[list[int]]]) -> dict[StepKey, list[int]]:
    """The next-token requests that score every choice of every chat, token by token.

    A one-token choice needs only the prompt; a longer one also needs the prompt plus each of its
    own prefixes. Choices sharing a prefix share its request. Values are the token ids whose
    log-probs that request must return.
    """
    wanted: dict[StepKey, set[int]] = {}
    for i, toks in enumerate(targets):
        for t in toks:
            for j in range(len(t)):
                wanted.setdefault((i, tuple(t[:j])), set()).add(t[j])
    return {key: sorted(ids) for key, ids in wanted.items()}


def summed_scores(
    targets: Sequence[Sequence[list[int]]],
    choices: Sequence[str],
    step: dict[tuple[int, tuple[int, ...], int], float],
) -> list[dict[str, float]]:
    """Each choice's log-prob (the sum over its tokens), renormalised over the choices."""
    out = []
    for i, toks in enumerate(targets):
        scores = [sum(step[(i, tuple(t[:j]), t[j])] for j in range(len(t))) for t in toks]
        top = max(scores)
        total = top + math.log(sum(math.exp(s - top) for s in scores))
        out.append({c: s - total for c, s in zip(choices, scores, strict=True)})
    return out

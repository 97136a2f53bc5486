"""A deterministic engine with no model, so every stage and the whole pipeline run anywhere.

Its outputs are hashes of its inputs: repeatable, different for different chats and seeds, and
free. It knows nothing about what a response says; tests that need a judge with an opinion pass
``score`` (e.g. one that reads the two delimited responses from the prompt).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.jsonl import kept_encoder
from charter.records import Chat, Completion

ChoiceScore = Callable[[Chat, str], float]
"""``score(chat, choice) -> logit``; the engine renormalises the logits over the choices."""

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()


def hash_score(chat: Chat, choice: str) -> float:
    """The default score: a logit in [-2, 2] drawn from a hash of (chat, choice)."""
    return _logit(_digest(chat, choice))


def _logit(digest: bytes) -> float:
    return int.from_bytes(digest[:4], "little") / 2**32 * 4 - 2


_SORTED_JSON = kept_encoder(sort_keys=True)
"""``json.dumps(x, sort_keys=True)``, with the encoder kept rather than built per call."""


def _choice_tails(choices: Sequence[str]) -> list[bytes]:
    """Each choice's end of the digested bytes, made once per call (see :func:`_hash_scores`)."""
    return [f"{json.dumps(choice)}]".encode() for choice in choices]


def _hash_scores(chat: Chat, tails: Sequence[bytes]) -> list[float]:
    """:func:`hash_score` of each choice, hashing the chat's JSON once for all of them: the
    digested bytes are the same (``[<chat>, <choice>]``), so are the scores; the benchmarks' floor
    and charter's own overhead then are not dominated by re-encoding one chat per choice."""
    head = hashlib.sha256(f"[{_SORTED_JSON(chat)}, ".encode())
    out = []
    for tail in tails:
        digest = head.copy()
        digest.update(tail)
        out.append(_logit(digest.digest()))
    return out


_DEFAULT_SCORE = hash_score  # captured: a test that swaps the module's hash_score is obeyed


class FakeEngine:
    """An :class:`~charter.generators.engine.Engine` whose answers are hashes of its inputs.

    Args:
        model_id: the name recorded as ``generator_model`` / ``judge_model``.
        bias: added to the first choice's logit, to simulate a judge's position bias.
        score: per-choice logit; defaults to :func:`hash_score`, which is content-dependent but
            arbitrary (swapping two responses in a prompt gives a fresh, unrelated preference).

    A "token" is a whitespace-separated word, for ``num_tokens``, ``max_new_tokens`` and
    :meth:`count_tokens`.
    """

    context_length = 2048

    def __init__(
        self, model_id: str = "fake", bias: float = 0.0, score: ChoiceScore | None = None
    ) -> None:
        self.model_id = model_id
        self.bias = bias
        self.score = score or hash_score

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Words in all message contents of each chat."""
        return [sum([len(m["content"].split()) for m in chat]) for chat in chats]

    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        """``n`` responses per chat like ``"response 3fa2c1d0 delta golf ..."`` (2-41 words).

        Temperature 0 is "greedy": the seed and index are ignored, so all ``n`` are the same.
        """
        out = []
        for chat in chats:
            completions = []
            for index in range(n):
                key = (chat,) if sampling.temperature == 0 else (chat, sampling.seed, index)
                rng = random.Random(_digest(*key))
                words = ["response", f"{rng.getrandbits(32):08x}"]
                words += rng.choices(_WORDS, k=rng.randint(0, 39))
                stop = len(words) <= sampling.max_new_tokens
                words = words[: sampling.max_new_tokens]
                completions.append(
                    Completion(" ".join(words), "stop" if stop else "length", len(words))
                )
            out.append(completions)
        return out

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """``score`` each choice (plus ``bias`` on the first) and renormalise over the choices."""
        choices = list(choices)
        if not choices or len(set(choices)) != len(choices):
            raise InputError(f"choices must be distinct strings, got {choices!r}")
        out = []
        tails = _choice_tails(choices)
        for chat in chats:
            if self.score is _DEFAULT_SCORE:
                raw = _hash_scores(chat, tails)
            else:
                raw = [self.score(chat, c) for c in choices]
            logits = [x + (self.bias if k == 0 else 0.0) for k, x in enumerate(raw)]
            top = max(logits)
            norm = top + math.log(sum(math.exp(x - top) for x in logits))
            out.append({c: x - norm for c, x in zip(choices, logits, strict=True)})
        return out

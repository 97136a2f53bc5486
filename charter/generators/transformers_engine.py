"""The transformers backend: a causal LM on CPU (or one GPU) behind the Engine protocol.

Requests are sorted by length and run in left-padded batches, so padding stays small and the
newest token of every row sits in the last column (what both sampling and scoring read). Scoring
computes each prefix shared by several chats once (see :mod:`charter.generators.prefix_scoring`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.model_files import resolve_model, weights_fingerprint
from charter.generators.prefix_scoring import shared_prefix_logprobs, supports_prefix_sharing
from charter.records import Chat, Completion

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")


class TransformersEngine:
    """A Hugging Face causal LM that samples responses and scores fixed choices.

    Args:
        model: an embedded name, a local model directory, or a hub id in the local HF cache
            (see :func:`charter.generators.model_files.resolve_model`).
        batch_size: sequences per forward pass (a chat sampled ``n`` times counts ``n``).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` (fastest on CPU here), ``"bfloat16"`` or ``"float16"``.
        max_context: prompt + response token limit; defaults to the model's position limit.
        system_prompt: put first in every chat that has no system message (SmolLM2's template
            otherwise injects its own default system prompt).
        cache_dir: where embedded models are converted; defaults to the charter cache.
        num_threads: torch CPU threads. This is process-wide (``torch.set_num_threads``).
        share_prefixes: in :meth:`choice_logprobs`, compute a token prefix shared by several
            chats once and reuse its keys and values (a judge's chats repeat the system prompt,
            conversation and first response). Same scores up to float rounding; ignored for
            models whose cache is not plain full attention (sliding windows, linear attention).
        min_shared_prefix: the fewest shared tokens worth a cached prefix.

    Attributes:
        model_id: the name given, for provenance.
        weights_sha256: :func:`weights_fingerprint` of the loaded folder.
        context_length: a prompt must be shorter than this to generate, and prompt + choice
            tokens must fit in it to be scored. Stages filter with :meth:`count_tokens`.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 16,
        device: str = "cpu",
        dtype: str = "float32",
        max_context: int | None = None,
        system_prompt: str | None = None,
        cache_dir: str | None = None,
        num_threads: int | None = None,
        share_prefixes: bool = True,
        min_shared_prefix: int = 16,
    ) -> None:
        if dtype not in _DTYPES:
            raise InputError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}", field="dtype")
        if batch_size < 1:
            raise InputError("batch_size must be at least 1", field="batch_size")
        if min_shared_prefix < 1:
            raise InputError("min_shared_prefix must be at least 1", field="min_shared_prefix")
        if num_threads:
            torch.set_num_threads(num_threads)
        path = resolve_model(model, Path(cache_dir) if cache_dir else None)
        self.model_id = model
        self.weights_sha256 = weights_fingerprint(path)
        self.batch_size = batch_size
        self.system_prompt = system_prompt
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype])
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.context_length = max_context or self.model.config.max_position_embeddings
        self.share_prefixes = share_prefixes and supports_prefix_sharing(self.model)
        self.min_shared_prefix = min_shared_prefix
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._pad_id: int = tok.pad_token_id
        vocab = tok.get_vocab()
        gen_eos = self.model.generation_config.eos_token_id
        eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        self._stop_ids = {t for t in [tok.eos_token_id, *eos] if t is not None}
        self._stop_ids |= {vocab[t] for t in _STOP_TOKENS if t in vocab}

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Rendered prompt length of each chat, in tokens (what :attr:`context_length` limits)."""
        return [len(ids) for _, ids in self._render(chats)]

    @torch.inference_mode()
    def generate(
        self, chats: Sequence[Chat], sampling: SamplingSettings, n: int = 1
    ) -> list[list[Completion]]:
        """Sample ``n`` responses per chat (see :meth:`charter.generators.engine.Engine.generate`).

        Temperature 0 is greedy. Otherwise every response gets its own random generator, seeded
        from ``(sampling.seed, response index, rendered prompt)``: the same chat and seed give the
        same text whatever else is in the call, its position, or ``batch_size``. Identical chats
        in one call therefore get identical samples. Not guaranteed: equality across hardware,
        dtypes or library versions, and padding changes fp32 logits in the last bits, which can
        (rarely) tip one draw.

        A response stops at an end-of-turn token ("stop") or at ``max_new_tokens`` or the end of
        the context ("length"); ``num_tokens`` counts the end-of-turn token, and ``text`` is the
        decoded response without special tokens, stripped.

        Raises:
            InputError: a prompt leaves no room to generate within :attr:`context_length`.
        """
        rendered = self._render(chats)
        for i, (_, ids) in enumerate(rendered):
            if len(ids) >= self.context_length:
                raise InputError(
                    f"chat {i} is {len(ids)} tokens: no room to generate within the "
                    f"context length of {self.context_length} tokens"
                )
        rows = [(i, j) for i in range(len(chats)) for j in range(n)]
        # Longest first, so a batch that runs out of memory does so at once.
        rows.sort(key=lambda r: -len(rendered[r[0]][1]))
        results: dict[tuple[int, int], Completion] = {}
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            prompts = [rendered[i][1] for i, _ in batch]
            limits = [min(sampling.max_new_tokens, self.context_length - len(p)) for p in prompts]
            seeds = [_row_seed(sampling.seed, j, rendered[i][1]) for i, j in batch]
            new_tokens = self._generate_batch(prompts, sampling, seeds, max(limits))
            for row, tokens, limit in zip(batch, new_tokens, limits, strict=True):
                results[row] = self._completion(tokens[:limit])
        return [[results[(i, j)] for j in range(n)] for i in range(len(chats))]

    @torch.inference_mode()
    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """Log-probability of each choice as the reply to each chat, renormalised over choices.

        Each choice is tokenized as it would follow the rendered prompt (so " A" and "A" are
        different tokens). When every choice is one token, each chat is scored at its last
        position; otherwise each (chat, choice) sequence is scored in full, summing its tokens'
        log-probs. With ``share_prefixes``, a token prefix common to several sequences (a chat's
        prompt under each choice, or a judge's system prompt, conversation and first response)
        runs through the model once and its cached keys and values are reused; the scores are
        the same up to float rounding.

        Raises:
            InputError: choices are empty, repeated, or tokenize identically; or prompt + choice
                does not fit in :attr:`context_length` (naming the chat).
        """
        choices = list(choices)
        if not choices or any(not c for c in choices) or len(set(choices)) != len(choices):
            raise InputError(f"choices must be distinct non-empty strings, got {choices!r}")
        rendered = self._render(chats)
        targets = [[self._continuation(text, ids, c) for c in choices] for text, ids in rendered]
        for i, ((_, ids), toks) in enumerate(zip(rendered, targets, strict=True)):
            if len({tuple(t) for t in toks}) != len(toks):
                raise InputError(f"choices {choices!r} tokenize identically after chat {i}")
            if len(ids) + max(map(len, toks)) > self.context_length:
                raise InputError(
                    f"chat {i} is {len(ids)} tokens: with its longest choice it exceeds the "
                    f"context length of {self.context_length} tokens"
                )
        scores: list[list[float]] = [[] for _ in chats]
        if all(len(t) == 1 for toks in targets for t in toks):
            prompts = [ids for _, ids in rendered]
            for i, logprobs in self._last_logprobs(prompts, [1] * len(prompts)):
                scores[i] = [logprobs[-1, t[0]].item() for t in targets[i]]
        else:
            pairs = [(i, c) for i in range(len(chats)) for c in range(len(choices))]
            seqs = [rendered[i][1] + targets[i][c] for i, c in pairs]
            keeps = [len(targets[i][c]) + 1 for i, c in pairs]
            summed: dict[tuple[int, int], float] = {}
            for k, logprobs in self._last_logprobs(seqs, keeps):
                i, c = pairs[k]
                target = torch.tensor(targets[i][c], device=logprobs.device)
                picked = logprobs[:-1].gather(-1, target[:, None])
                summed[(i, c)] = picked.sum().item()
            scores = [[summed[(i, c)] for c in range(len(choices))] for i in range(len(chats))]
        out = []
        for row in scores:
            logps = torch.tensor(row, dtype=torch.float64)
            out.append(dict(zip(choices, (logps - logps.logsumexp(0)).tolist(), strict=True)))
        return out

    def _render(self, chats: Sequence[Chat]) -> list[tuple[str, list[int]]]:
        """Template each chat with a generation prompt, or continuing its final assistant turn."""
        texts = []
        for chat in chats:
            messages = list(chat)
            if self.system_prompt is not None and all(m["role"] != "system" for m in messages):
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            prefilled = bool(messages) and messages[-1]["role"] == "assistant"
            texts.append(
                self.tokenizer.apply_chat_template(
                    messages,
                    tokenize=False,
                    add_generation_prompt=not prefilled,
                    continue_final_message=prefilled,
                )
            )
        if not texts:
            return []
        # The template already holds every special token the model expects (no extra BOS).
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return list(zip(texts, ids, strict=True))

    def _continuation(self, prompt: str, prompt_ids: list[int], choice: str) -> list[int]:
        """Tokens of ``choice`` as they follow ``prompt``; tokenized alone if the two merge."""
        full = self.tokenizer(prompt + choice, add_special_tokens=False)["input_ids"]
        if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
            return full[len(prompt_ids) :]
        return self.tokenizer(choice, add_special_tokens=False)["input_ids"]

    def _pad_left(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _last_logprobs(
        self, seqs: Sequence[list[int]], keeps: Sequence[int]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(index, log-softmax over the vocab at the last keeps[index] positions)``.

        With ``share_prefixes`` the work goes to :func:`shared_prefix_logprobs`; otherwise every
        sequence runs in full, longest first, in left-padded batches.
        """
        if self.share_prefixes:
            yield from shared_prefix_logprobs(
                self.model,
                seqs,
                keeps,
                batch_size=self.batch_size,
                min_shared=self.min_shared_prefix,
                pad_id=self._pad_id,
            )
            return
        order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            ids, mask = self._pad_left([seqs[k] for k in batch])
            keep = max(keeps[k] for k in batch)
            # Positions count real tokens only, so a row's scores do not depend on its padding.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits[:, -keep:]
            logprobs = logits.float().log_softmax(-1)
            for row, k in enumerate(batch):
                yield k, logprobs[row, keep - keeps[k] :]

    def _generate_batch(
        self,
        prompts: list[list[int]],
        sampling: SamplingSettings,
        seeds: list[int],
        max_new_tokens: int,
    ) -> list[list[int]]:
        ids, mask = self._pad_left(prompts)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # sampling happens in _SeededSampler; greedy then takes its pick
            pad_token_id=self._pad_id,
            eos_token_id=sorted(self._stop_ids),
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_SeededSampler(seeds, sampling.temperature, sampling.top_p))
        generated = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=processors,
        )
        return generated[:, ids.shape[1] :].tolist()

    def _completion(self, tokens: list[int]) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self._stop_ids), None)
        kept = tokens if stop is None else tokens[: stop + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Completion(text, "length" if stop is None else "stop", len(kept))


def _row_seed(seed: int, index: int, prompt_ids: list[int]) -> int:
    digest = hashlib.sha256(f"{seed}:{index}:{prompt_ids}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _SeededSampler(LogitsProcessor):
    """Draw each row's next token from its own generator, then leave greedy nothing else.

    transformers' own sampling draws a whole batch from the global RNG, so a row's text would
    depend on its batch-mates; this keeps every response reproducible on its own.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        self.seeds = seeds
        self.temperature = temperature
        self.top_p = top_p
        self.generators: list[torch.Generator] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.generators:
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds
            ]
        probs = (scores.float() / self.temperature).softmax(-1)
        rows = zip(probs, self.generators, strict=True)
        picks = torch.stack([self._draw(p, g) for p, g in rows])
        return torch.full_like(scores, float("-inf")).scatter(-1, picks, 0.0)

    def _draw(self, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One inverse-CDF draw from the top-p nucleus, using one uniform from ``generator``.

        A full vocabulary sort plus ``torch.multinomial`` per row cost ~130 ms a step at batch
        32 here, as much as the model; the nucleus nearly always lies in the top few thousand.
        """
        ids = None
        if self.top_p < 1.0:
            for size in (256, 4096, probs.numel()):
                top, ids = probs.topk(min(size, probs.numel()))
                if top.sum() >= self.top_p:
                    break
            # The smallest top set reaching top_p (always at least the most likely token).
            probs = top.masked_fill(top.cumsum(-1) - top > self.top_p, 0.0)
        cdf = probs.cumsum(-1)
        u = torch.rand(1, generator=generator, device=cdf.device) * cdf[-1]
        k = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.numel() - 1)
        return k if ids is None else ids[k]

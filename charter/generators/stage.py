"""The generate stage: K sampled responses per prompt.

Prompts that cannot fit the model's context together with the response budget are rejected with
their token count, before any sampling, so one long row cannot fail a whole run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

from charter.generators.engine import Engine, SamplingSettings
from charter.records import Candidate, CandidateSet, PromptRecord, Reject


def fits_context(
    prompts: Sequence[PromptRecord], engine: Engine, max_new_tokens: int
) -> tuple[list[PromptRecord], list[Reject]]:
    """Split prompts into those that fit ``engine.context_length`` and rejects."""
    limit = engine.context_length
    counts = engine.count_tokens([p.messages for p in prompts])
    kept, rejects = [], []
    for prompt, n in zip(prompts, counts, strict=True):
        if n + max_new_tokens > limit:
            rejects.append(
                Reject(
                    stage="generate",
                    source=prompt.source,
                    field="messages",
                    reason=(
                        f"prompt is {n} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                        f"the model's context of {limit} tokens"
                    ),
                    row={"prompt_id": prompt.prompt_id},
                )
            )
        else:
            kept.append(prompt)
    return kept, rejects


def generate_candidates(
    prompts: Sequence[PromptRecord],
    engine: Engine,
    sampling: SamplingSettings,
    num_samples: int,
    *,
    chunk_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[CandidateSet], list[Reject]]:
    """Sample ``num_samples`` responses for each prompt that fits the context.

    Args:
        prompts: conversations ending with a user turn.
        engine: the generator model.
        sampling: sampling settings, the same for every chunk.
        num_samples: K responses per prompt.
        chunk_size: prompts per engine call (progress granularity).
        on_progress: called with the number of prompts just finished.

    Returns:
        one CandidateSet per kept prompt (input order) and the rejects.
    """
    kept, rejects = fits_context(prompts, engine, sampling.max_new_tokens)
    sets: list[CandidateSet] = []
    for start in range(0, len(kept), chunk_size):
        chunk = kept[start : start + chunk_size]
        # engines seed per chat (seed, sample index, prompt), so chunking never changes a sample
        outputs = engine.generate([p.messages for p in chunk], sampling, n=num_samples)
        for prompt, completions in zip(chunk, outputs, strict=True):
            sets.append(
                CandidateSet(
                    prompt_id=prompt.prompt_id,
                    messages=prompt.messages,
                    candidates=[
                        Candidate(
                            candidate_id=f"{prompt.prompt_id}/{k}",
                            text=c.text,
                            finish_reason=c.finish_reason,
                            num_tokens=c.num_tokens,
                        )
                        for k, c in enumerate(completions)
                    ],
                    generator_model=engine.model_id,
                    sampling=asdict(sampling),
                )
            )
        if on_progress:
            on_progress(len(chunk))
    return sets, rejects

"""Tiny in-memory records shared by plumbing tests."""

from __future__ import annotations

from charter.constitution import Constitution, Principle
from charter.records import Candidate, CandidateSet


def principle(pid: str, weight: float = 1.0) -> Principle:
    return Principle(
        id=pid,
        comparison=f"Which response better follows {pid}?",
        critique_request=f"Critique the response under {pid}.",
        revision_request=f"Rewrite the response to follow {pid}.",
        weight=weight,
    )


def constitution(*ids: str, weights: tuple[float, ...] | None = None) -> Constitution:
    weights = weights or tuple(1.0 for _ in ids)
    return Constitution(
        name="tiny",
        version="1",
        description="a test constitution",
        principles=tuple(principle(i, w) for i, w in zip(ids, weights, strict=True)),
        sha256="0" * 64,
        source="<memory>",
        text="name: tiny\n",
    )


def candidate_set(prompt_id: str, *texts: str) -> CandidateSet:
    return CandidateSet(
        prompt_id=prompt_id,
        messages=[{"role": "user", "content": f"question {prompt_id}"}],
        candidates=[
            Candidate(candidate_id=f"{prompt_id}/{k}", text=t, finish_reason="stop", num_tokens=3)
            for k, t in enumerate(texts)
        ],
        generator_model="gen",
        sampling={"seed": 0},
    )
